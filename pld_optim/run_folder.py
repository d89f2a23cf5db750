"""One output folder holds one run. Resuming is a feature (the mined rules, the LM cache and the Optuna
study pick up where an interrupted compile stopped), so the folder must prove it is the *same* run:

- `fingerprint.json` records what produced it (data ids and gold labels, teacher, student, the parameters
  that change results, the seed). A compile with another fingerprint is refused with what differs, never
  mixed in: rules mined for other gold labels or by another teacher would otherwise be reused silently.
- `.pld.lock` keeps a second compile out while one is writing.
- Every artifact is written to a temporary file and moved into place, so an interruption leaves the
  previous file whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

FINGERPRINT = "fingerprint.json"
LOCK = ".pld.lock"
# What a compile writes: `--fresh` removes exactly these, never anything else in the folder.
RUN_FILES = ("fingerprint.json", "mined.jsonl", "study.db", "cache", "program.json", "rules.json",
             "system_prompt.txt", "report.md", "review.html", "search_optimization_history.html",
             "search_param_importances.html", "search_pareto_front.html")


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def check_writable(out: Path, what: str = "--out") -> None:
    """Before any LM call: a folder under a file, or a read-only place, fails now with its name."""
    out = Path(out)
    for place in (out, *out.parents):
        if place.exists():
            if not place.is_dir():
                raise ValueError(f"{what} {out}: {place} is a file, not a folder")
            if not os.access(place, os.W_OK | os.X_OK):
                raise ValueError(f"{what} {out}: {place} is not writable")
            return


def check_cache(folder: Path) -> None:
    """DSPy reads its disk cache quietly: a corrupted shard would turn every cached answer into a new paid
    call. Read every shard once (the layout DSPy uses: a 16-shard diskcache.FanoutCache)."""
    import sqlite3

    from diskcache import FanoutCache

    if not Path(folder).exists():
        return
    try:
        with FanoutCache(directory=str(folder), shards=16, timeout=10) as cache:
            len(cache)
    except sqlite3.DatabaseError as exc:
        raise ValueError(f"the LM cache {folder} is corrupted ({exc}); remove it (rm -r {folder}) and rerun: "
                         "the calls it held are made again") from exc


def data_digest(examples, ids, label_field: str) -> str:
    """sha1 over (id, gold label) pairs: relabelled or re-split data gets another digest."""
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


def claim(out: Path, fingerprint: dict) -> None:
    """Record the fingerprint of a new run, accept the same run, refuse a different one."""
    path = Path(out) / FINGERPRINT
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path} is not valid JSON ({exc.msg}); {_fresh_hint(out)}") from exc
        diffs = _differences(old, fingerprint)
        if diffs:
            raise ValueError(f"{out} holds another run ({'; '.join(diffs)}): resuming would mix the two. "
                             + _fresh_hint(out))
        return
    leftovers = [name for name in ("mined.jsonl", "study.db", "rules.json") if (Path(out) / name).exists()]
    if leftovers:
        raise ValueError(f"{out} holds {', '.join(leftovers)} from a run with no fingerprint, which cannot be "
                         "matched to this one. " + _fresh_hint(out))
    atomic_write_text(path, json.dumps(fingerprint, indent=2, sort_keys=True) + "\n")


def _fresh_hint(out: Path) -> str:
    return (f"Start over in that folder with `--fresh` (Python: pld_optim.run_folder.clear_run({str(out)!r})), "
            "or choose a new folder.")


def clear_run(out: Path) -> list[str]:
    """Remove what a compile wrote (RUN_FILES) and nothing else; returns the names removed."""
    removed = []
    for name in RUN_FILES:
        path = Path(out) / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(name)
    return removed


class FolderLock:
    """Held while a compile writes to `out`. Re-entrant within one process (the CLI holds it around
    PLD.compile, which takes it too); a lock left by a process that no longer runs is taken over."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK
        self.owned = False

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                holder = self._holder()
                if holder.get("pid") == me["pid"] and holder.get("host") == me["host"]:
                    return self  # this process already holds it
                if holder.get("host") == me["host"] and not _alive(holder.get("pid")):
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
                    continue
                raise ValueError(
                    f"{self.path.parent} is in use by another compile (pid {holder.get('pid')} on "
                    f"{holder.get('host')}, since {holder.get('since')}); wait for it or use another folder. "
                    f"If no compile is running there, delete {self.path}.") from None
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.owned = True
            return self
        raise ValueError(f"could not take the lock {self.path}")

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def __exit__(self, *exc) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)
            self.owned = False


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
