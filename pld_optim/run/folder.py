"""One output folder holds one run, and this class is its one writer.

Resuming is a feature (the mined rules, the LM cache and the Optuna study pick up where an interrupted
compile stopped), so the folder must prove it is the *same* run:

- `fingerprint.json` records what produced it (data ids and gold labels, teacher, student, the parameters
  that change results, the seed). A compile with another fingerprint is refused with what differs, never
  mixed in.
- `.pld.lock` (a `filelock.FileLock`) is held by everything that writes the folder: compile (CLI and
  `PLD(out_dir=...)`), pick, ablate, report, compare, and `RunFolder.save` and `RunFolder.clear` from Python.
  The operating system releases it when its process ends, so a crash leaves no stale lock.
- A folder that holds files a compile writes (report.md, program.json, ...) but no fingerprint.json was
  not written by a compile: they may be the user's own, so nothing is written there and nothing removed.
- Every artifact is written once, to a temporary file moved into place, so an interruption leaves the
  previous file whole and `rules.json` and `program.json` never disagree.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import filelock

from pld_optim.files import JsonlLog, atomic_write_text, read_text
from pld_optim.records import MinedRule

logger = logging.getLogger("pld_optim")

FINGERPRINT = "fingerprint.json"
LOCK = ".pld.lock"
MINED = "mined.jsonl"
CACHE = "cache"
# What a compile writes: `--fresh` removes exactly these, and only from a folder a compile wrote.
RUN_FILES = (FINGERPRINT, MINED, "study.db", CACHE, "program.json", "rules.json", "system_prompt.txt", "report.md",
             "review.html", "search_optimization_history.html", "search_param_importances.html",
             "search_pareto_front.html")
# What `pld-optim compare` writes to its --out (each optimizer's compiled PLD run goes in pld-seed<N>/).
COMPARE_FILES = (FINGERPRINT, CACHE, "compare.md", "compare.html", "*-seed*.json", "*-seed*.outcomes.jsonl",
                 "pld-seed*")
# DSPy's disk cache (a diskcache.FanoutCache): shards 000..015, each a SQLite file (and its journal) and, for
# large values, files under two levels of two-hex-digit folders.
_CACHE_FILE = re.compile(r"(?:\d{3}/)?(?:cache\.db(?:-wal|-shm|-journal)?|[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]+\.val)")


class RunFolder:
    """The output folder of one compile; `context` heads report.md and review.html (config, models, seed)."""

    def __init__(self, path: str | Path, *, context: dict | None = None, title: str = "PLD compile",
                 written: tuple[str, ...] = RUN_FILES):
        if not str(path).strip():
            raise ValueError("the output folder is empty; give a folder, e.g. --out out/run")
        self.path = Path(path)
        self.context = dict(context or {})
        self.title = title
        self.written = written  # names (glob patterns) of what the command that owns the folder writes

    @property
    def cache_dir(self) -> Path:
        return self.path / CACHE

    def mined_log(self) -> JsonlLog:
        return JsonlLog(self.path / MINED, MinedRule)

    def read_mined(self) -> dict[str, MinedRule]:
        """mined.jsonl's kept rules by example id (a refused or failed example is redone on resume)."""
        return {m.example_id: m for m in self.mined_log().read() if m.error is None}

    def check(self, what: str = "--out") -> None:
        """Before any LM call, creating nothing: a folder under a file, a read-only place, or a folder that
        holds someone else's files under the names this command writes fails now."""
        for place in (self.path, *self.path.parents):
            if place.exists():
                if not place.is_dir():
                    raise ValueError(f"{what} {self.path}: {place} is a file, not a folder")
                if not os.access(place, os.W_OK | os.X_OK):
                    raise ValueError(f"{what} {self.path}: {place} is not writable")
                break
        if (self.path / FINGERPRINT).exists():
            return
        theirs = self._present(foreign_only=True)
        if theirs:
            raise ValueError(f"{what} {self.path}: {self._not_ours(theirs)}")

    def _not_ours(self, names: list[str]) -> str:
        return (f"it has no {FINGERPRINT}, so no pld-optim run wrote it, yet it holds {', '.join(names)}, "
                "which may be yours and would be overwritten or removed. Nothing was written or removed: choose "
                "another folder, or move them away")

    def _present(self, foreign_only: bool = False) -> list[str]:
        """Names in the folder that this command writes; `foreign_only`: leaving out a cache that holds only
        what DSPy's disk cache writes (a run interrupted before its fingerprint was written leaves one)."""
        if not self.path.is_dir():
            return []
        names = sorted(p.name for p in self.path.iterdir()
                       if any(fnmatch.fnmatchcase(p.name, pattern) for pattern in self.written))
        if foreign_only:
            names = [n for n in names if n != CACHE or not (self.path / CACHE).is_dir() or _foreign_in_cache(
                self.path / CACHE)]
        return names

    @contextmanager
    def writing(self, create: bool = True):
        """Held while a command writes the folder; re-entrant within one process (the CLI holds it around
        PLD.compile, which takes it too). `create=False`: the folder must exist (pick, ablate, report)."""
        if not create and not self.path.is_dir():
            raise FileNotFoundError(f"{self.path} does not exist or is not a folder")
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

    def check_fingerprint(self, fingerprint: dict) -> bool:
        """Read-only (a dry run may call it): True when the folder holds this run, False when it holds none
        yet; a different run is an error naming what differs."""
        if not (self.path / FINGERPRINT).exists():
            return False
        diffs = _differences(self._fingerprint(), fingerprint)
        if diffs:
            raise ValueError(f"{self.path} holds another run ({'; '.join(diffs)}): resuming would mix the "
                             f"two. {self._fresh_hint()}")
        return True

    def claim(self, fingerprint: dict) -> None:
        """Record the fingerprint of a new run, accept the same run, refuse a different one."""
        path = self.path / FINGERPRINT
        if self.check_fingerprint(fingerprint):
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
        if self.written != RUN_FILES:  # compare has no --fresh
            return "Choose a new --out, or remove that folder to start over."
        return (f"Start over in that folder with `--fresh` (Python: RunFolder({str(self.path)!r}).clear()), "
                "or choose a new folder.")

    def clear(self) -> list[str]:
        """Remove what a compile wrote (RUN_FILES) and nothing else, holding the folder's lock; only from a
        folder whose fingerprint shows a compile wrote it. In `cache/`, only DSPy's cache files go: anything
        else there is kept (and named in a warning). Returns the names removed."""
        if not self.path.exists():
            return []
        present = self._present()
        if present and not (self.path / FINGERPRINT).exists():
            raise ValueError(f"--fresh: {self.path}: {self._not_ours(present)}")
        with self.writing():
            if present:
                self._fingerprint()  # a file that is not ours under that name: refuse rather than delete
            for name in present:
                target = self.path / name
                if name == CACHE and target.is_dir():
                    kept = _clear_cache(target)
                    if kept:
                        logger.warning("--fresh kept %s in %s: DSPy's cache does not write them", ", ".join(kept),
                                       target)
                else:
                    shutil.rmtree(target) if target.is_dir() else target.unlink()
        return present

    def save(self, program, rules, *, context: dict | None = None) -> list[Path]:
        """Write program.json, rules.json, system_prompt.txt, report.md and review.html, each once, holding
        the folder's lock (a second writer is refused, never interleaved)."""
        with self.writing():
            return self._save(program, rules, context)

    def _save(self, program, rules, context: dict | None) -> list[Path]:
        from pld_optim.run.report import render_report
        from pld_optim.run.review import render_review

        header = {**rules.context, **self.context, **(context or {})}
        rules.context = header
        # A compile's rule set records what its figures were measured on, so that report and pick can tell
        # an edited rules.json later (pick and ablate set scored_prompt themselves).
        if rules.scored_prompt is None and rules.dev_macro_f1 is not None:
            rules.scored_prompt = rules.prompt_digest()
        if not rules.rule_digests and rules.search is not None:
            rules.rule_digests = {r.id: rules.rule_digest(r) for r in rules.rules}
        tmp = self.path / f".program.{os.getpid()}.tmp.json"  # dspy picks the format from the suffix
        program.save(str(tmp))
        os.replace(tmp, self.path / "program.json")
        rules.save(self.path / "rules.json")
        atomic_write_text(self.path / "system_prompt.txt", rules.system_prompt + "\n")
        atomic_write_text(self.path / "report.md", render_report(rules, title=self.title, context=header))
        render_review(rules, self.path / "review.html", mined=list(self.read_mined().values()), context=header,
                      title=self.title.replace("compile", "rule review"))
        return [self.path / n for n in ("program.json", "rules.json", "system_prompt.txt", "report.md", "review.html")]


def _cache_files(folder: Path) -> tuple[list[Path], list[str]]:
    """DSPy's cache files under `folder`, and the names (relative) of everything else there."""
    ours, theirs = [], []
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        name = path.relative_to(folder).as_posix()
        (ours if _CACHE_FILE.fullmatch(name) else theirs).append(path if _CACHE_FILE.fullmatch(name) else name)
    return ours, theirs


def _foreign_in_cache(folder: Path) -> list[str]:
    return _cache_files(folder)[1]


def _clear_cache(folder: Path) -> list[str]:
    """Remove DSPy's cache files and the folders they leave empty; returns what was kept."""
    ours, theirs = _cache_files(folder)
    for path in ours:
        path.unlink()
    for path in sorted((p for p in folder.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(path.iterdir()):
            path.rmdir()
    if not theirs:
        folder.rmdir()
    return theirs


def check_cache(folder: Path) -> None:
    """DSPy reads its disk cache quietly: a corrupted shard would turn every cached answer into a new paid
    call. Read every shard once (DSPy's layout: a 16-shard diskcache.FanoutCache), without creating any.
    A shard that cannot be opened (permissions, a read-only place) is named as such, not as corrupted."""
    import sqlite3

    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise ValueError(f"the LM cache {folder} is a file, not a folder; move it away or use another --out")
    if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        raise ValueError(f"the LM cache {folder} is not readable and writable by this user; fix its permissions "
                         "or use another --out")
    shards = sorted(folder.glob("*/cache.db")) + sorted(folder.glob("cache.db"))
    for shard in shards:
        if not os.access(shard, os.R_OK | os.W_OK):
            raise ValueError(f"the LM cache shard {shard} is not readable and writable by this user; fix its "
                             "permissions or use another --out")
        if not shard.is_file():
            raise ValueError(f"the LM cache shard {shard} is not a file; move it away or use another --out")
        try:
            with sqlite3.connect(f"file:{quote(str(shard))}?mode=ro", uri=True) as connection:
                connection.execute("select count(*) from sqlite_master").fetchone()
                connection.execute("pragma quick_check").fetchone()
        except sqlite3.OperationalError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise ValueError(f"the LM cache {folder} is corrupted ({shard.name}: {exc}); remove it "
                                 f"(rm -r {folder}) and rerun: the calls it held are made again") from None
            raise ValueError(f"the LM cache shard {shard} cannot be opened ({exc}); check that this user may "
                             "read and write it and its folder (a read-only disk?), or use another --out") from None
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
