"""DSPy's disk cache inside an output folder: which files are DSPy's (so `--fresh` removes only those), whether
it can be read (a corrupted shard would turn every cached answer into a new paid call), and what an error
after paid work may promise about it."""

from __future__ import annotations

import os
import re
from contextlib import closing
from pathlib import Path
from urllib.parse import quote

# DSPy's disk cache (a diskcache.FanoutCache): shards 000..015, each a SQLite file (and its journal) and, for
# large values, files under two levels of two-hex-digit folders.
_CACHE_FILE = re.compile(r"(?:\d{3}/)?(?:cache\.db(?:-wal|-shm|-journal)?|[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]+\.val)")
# `pragma quick_check` lists at most this many problems: the first ones name a shard's damage well enough.
QUICK_CHECK_ROWS = 3


def resume_hint() -> str:
    """What a rerun of the command costs, from where DSPy's cache is now: an error after paid work says it."""
    import dspy

    cache = getattr(dspy, "cache", None)
    directory = getattr(getattr(cache, "disk_cache", None), "directory", None)
    if not getattr(cache, "enable_disk_cache", False) or directory is None:
        return "DSPy's disk cache is off, so a rerun makes the LM calls again."
    if not Path(directory).is_dir():
        return f"The LM cache {directory} is gone, so a rerun makes the LM calls again."
    return (f"The LM calls made so far are in the LM cache {directory}: rerun the same command once the cause is "
            "fixed and it replays them without paying again.")


def cache_files(folder: Path) -> tuple[list[Path], list[str]]:
    """DSPy's cache files under `folder`, and the names (relative) of everything else there."""
    ours, theirs = [], []
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        name = path.relative_to(folder).as_posix()
        (ours if _CACHE_FILE.fullmatch(name) else theirs).append(path if _CACHE_FILE.fullmatch(name) else name)
    return ours, theirs


def foreign_in_cache(folder: Path) -> list[str]:
    return cache_files(folder)[1]


def clear_cache(folder: Path) -> list[str]:
    """Remove DSPy's cache files and the folders they leave empty; returns what was kept."""
    ours, theirs = cache_files(folder)
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
    call. Read every shard once (DSPy's layout: a 16-shard diskcache.FanoutCache), without creating any, and
    run SQLite's quick_check on it (it reports damaged pages as rows, not as an error); a corrupted shard is
    named by its path in the cache (003/cache.db). A shard that cannot be opened (permissions, a read-only
    place) is named as such, not as corrupted."""
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
        name = shard.relative_to(folder).as_posix()  # 003/cache.db: every shard's file is called cache.db
        if not os.access(shard, os.R_OK | os.W_OK):
            raise ValueError(f"the LM cache shard {shard} is not readable and writable by this user; fix its "
                             "permissions or use another --out")
        if not shard.is_file():
            raise ValueError(f"the LM cache shard {shard} is not a file; move it away or use another --out")
        try:
            with closing(sqlite3.connect(f"file:{quote(str(shard))}?mode=ro", uri=True)) as connection:
                connection.execute("select count(*) from sqlite_master").fetchone()
                # Page corruption is reported as rows, not raised: the first is 'ok' only for a sound file.
                found = [row[0] for row in connection.execute(f"pragma quick_check({QUICK_CHECK_ROWS})")]
        except sqlite3.OperationalError as exc:
            if "not a database" in str(exc) or "malformed" in str(exc):
                raise ValueError(_corrupted(folder, name, str(exc))) from None
            raise ValueError(f"the LM cache shard {shard} cannot be opened ({exc}); check that this user may "
                             "read and write it and its folder (a read-only disk?), or use another --out") from None
        except sqlite3.DatabaseError as exc:
            raise ValueError(_corrupted(folder, name, str(exc))) from None
        if found[:1] != ["ok"]:
            raise ValueError(_corrupted(folder, name, "; ".join(" ".join(str(f).split()) for f in found)
                                        or "quick_check returned nothing"))


def _corrupted(folder: Path, shard: str, reason: str) -> str:
    return (f"the LM cache {folder} is corrupted ({shard}: {reason}); remove it (rm -r {folder}) and rerun: the "
            "calls it held are made again")
