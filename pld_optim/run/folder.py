"""One output folder holds one run, and this class is its one writer.

Resuming is a feature (the mined rules, the LM cache and the Optuna study pick up where an interrupted
compile stopped), so the folder must prove it is the *same* run:

- `fingerprint.json` records what produced it (data ids and gold labels, teacher, student, the parameters
  that change results, the seed). A compile with another fingerprint is refused with what differs, never
  mixed in.
- `.pld.lock` (a `filelock.FileLock`) is held by every command that writes the folder: compile, pick,
  ablate, report. The operating system releases it when its process ends, so a crash leaves no stale lock.
- Every artifact is written once, to a temporary file moved into place, so an interruption leaves the
  previous file whole and `rules.json` and `program.json` never disagree.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import filelock

from pld_optim.files import JsonlLog, atomic_write_text, read_text
from pld_optim.records import MinedRule

FINGERPRINT = "fingerprint.json"
LOCK = ".pld.lock"
MINED = "mined.jsonl"
CACHE = "cache"
# What a compile writes: `--fresh` removes exactly these, and only from a folder a compile wrote.
RUN_FILES = (FINGERPRINT, MINED, "study.db", CACHE, "program.json", "rules.json", "system_prompt.txt", "report.md",
             "review.html", "search_optimization_history.html", "search_param_importances.html",
             "search_pareto_front.html")


class RunFolder:
    """The output folder of one compile; `context` heads report.md and review.html (config, models, seed)."""

    def __init__(self, path: str | Path, *, context: dict | None = None, title: str = "PLD compile"):
        if not str(path).strip():
            raise ValueError("the output folder is empty; give a folder, e.g. --out out/run")
        self.path = Path(path)
        self.context = dict(context or {})
        self.title = title

    @property
    def cache_dir(self) -> Path:
        return self.path / CACHE

    def mined_log(self) -> JsonlLog:
        return JsonlLog(self.path / MINED, MinedRule)

    def read_mined(self) -> dict[str, MinedRule]:
        """mined.jsonl's kept rules by example id (a refused or failed example is redone on resume)."""
        return {m.example_id: m for m in self.mined_log().read() if m.error is None}

    def check(self, what: str = "--out") -> None:
        """Before any LM call, creating nothing: a folder under a file, or a read-only place, fails now."""
        for place in (self.path, *self.path.parents):
            if place.exists():
                if not place.is_dir():
                    raise ValueError(f"{what} {self.path}: {place} is a file, not a folder")
                if not os.access(place, os.W_OK | os.X_OK):
                    raise ValueError(f"{what} {self.path}: {place} is not writable")
                return

    @contextmanager
    def writing(self):
        """Held while a command writes the folder; re-entrant within one process (the CLI holds it around
        PLD.compile, which takes it too)."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(self.path / LOCK, timeout=0, is_singleton=True)
        try:
            lock.acquire()
        except filelock.Timeout:
            raise ValueError(f"{self.path} is in use by another pld-optim command (it holds {self.path / LOCK}); "
                             "wait for it to finish or use another folder") from None
        try:
            yield self
        finally:
            lock.release()

    def claim(self, fingerprint: dict) -> None:
        """Record the fingerprint of a new run, accept the same run, refuse a different one."""
        path = self.path / FINGERPRINT
        if path.exists():
            old = self._fingerprint()
            diffs = _differences(old, fingerprint)
            if diffs:
                raise ValueError(f"{self.path} holds another run ({'; '.join(diffs)}): resuming would mix the "
                                 f"two. {self._fresh_hint()}")
            return
        leftovers = [name for name in (MINED, "study.db", "rules.json") if (self.path / name).exists()]
        if leftovers:
            raise ValueError(f"{self.path} holds {', '.join(leftovers)} from a run with no fingerprint, which "
                             f"cannot be matched to this one. {self._fresh_hint()}")
        atomic_write_text(path, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")

    def _fingerprint(self) -> dict:
        path = self.path / FINGERPRINT
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc.msg}); {self._fresh_hint()}") from None
        if not isinstance(data, dict) or not {"data", "params"} <= set(data):
            raise ValueError(f"{path} is not a pld-optim fingerprint; {self._fresh_hint()}")
        return data

    def _fresh_hint(self) -> str:
        return (f"Start over in that folder with `--fresh` (Python: RunFolder({str(self.path)!r}).clear()), "
                "or choose a new folder.")

    def clear(self) -> list[str]:
        """Remove what a compile wrote (RUN_FILES) and nothing else; only from a folder whose fingerprint
        shows a compile wrote it. Returns the names removed."""
        if not self.path.exists():
            return []
        present = [name for name in RUN_FILES if (self.path / name).exists()]
        if present and not (self.path / FINGERPRINT).exists():
            raise ValueError(f"--fresh: {self.path} has no {FINGERPRINT}, so no compile wrote it; it holds "
                             f"{', '.join(present)}, which may be yours. Nothing was removed: choose another "
                             "folder, or remove them yourself")
        if present:
            self._fingerprint()  # a file that is not ours under that name: refuse rather than delete
        for name in present:
            target = self.path / name
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        return present

    def save(self, program, rules, *, context: dict | None = None) -> list[Path]:
        """Write program.json, rules.json, system_prompt.txt, report.md and review.html, each once."""
        from pld_optim.run.report import render_report
        from pld_optim.run.review import render_review

        self.path.mkdir(parents=True, exist_ok=True)
        header = {**rules.context, **self.context, **(context or {})}
        rules.context = header
        tmp = self.path / f".program.{os.getpid()}.tmp.json"  # dspy picks the format from the suffix
        program.save(str(tmp))
        os.replace(tmp, self.path / "program.json")
        rules.save(self.path / "rules.json")
        atomic_write_text(self.path / "system_prompt.txt", rules.system_prompt + "\n")
        atomic_write_text(self.path / "report.md", render_report(rules, title=self.title, context=header))
        render_review(rules, self.path / "review.html", mined=list(self.read_mined().values()), context=header,
                      title=self.title.replace("compile", "rule review"))
        return [self.path / n for n in ("program.json", "rules.json", "system_prompt.txt", "report.md", "review.html")]


def check_cache(folder: Path) -> None:
    """DSPy reads its disk cache quietly: a corrupted shard would turn every cached answer into a new paid
    call. Read every shard once (DSPy's layout: a 16-shard diskcache.FanoutCache), without creating any."""
    import sqlite3

    folder = Path(folder)
    if not folder.exists():
        return
    if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        raise ValueError(f"the LM cache {folder} is not readable and writable by this user; fix its permissions "
                         "or use another --out")
    shards = sorted(folder.glob("*/cache.db")) + sorted(folder.glob("cache.db"))
    for shard in shards:
        if not os.access(shard, os.R_OK | os.W_OK):
            raise ValueError(f"the LM cache shard {shard} is not readable and writable by this user; fix its "
                             "permissions or use another --out")
        try:
            with sqlite3.connect(f"file:{quote(str(shard))}?mode=ro", uri=True) as connection:
                connection.execute("select count(*) from sqlite_master").fetchone()
                connection.execute("pragma quick_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise ValueError(f"the LM cache {folder} is corrupted ({shard.name}: {exc}); remove it "
                             f"(rm -r {folder}) and rerun: the calls it held are made again") from None


def data_digest(examples, ids, label_field: str) -> str:
    """sha1 over (id, gold label) pairs: relabelled or re-split data gets another digest."""
    import hashlib

    pairs = sorted(f"{i}\t{ex[label_field]}" for i, ex in zip(ids, examples))
    return hashlib.sha1("\n".join(pairs).encode()).hexdigest()[:16]


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {json.dumps(a)} -> {json.dumps(b)}")
    return out
