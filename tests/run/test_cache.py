"""check_cache reads every shard of DSPy's disk cache before any LM call: a shard whose pages are damaged is
called corrupted even though SQLite opens it and reports the damage only as rows of `pragma quick_check`,
and the error names the shard by its path in the cache (every shard's file is called cache.db)."""

import re
import shutil
import sqlite3
from contextlib import closing

import diskcache
import pytest

from pld_optim.run.cache import check_cache


@pytest.fixture
def cache(tmp_path):
    """A real 16-shard cache as DSPy's disk cache lays it out, with entries in every shard."""
    folder = tmp_path / "cache"
    with diskcache.FanoutCache(str(folder), shards=16) as fanout:
        for i in range(200):
            fanout.set(f"key{i}", "answer " * 50)
    assert (folder / "003" / "cache.db").is_file() and not (folder / "003" / "cache.db-wal").exists()
    return folder


def damage_the_key_index(shard) -> int:
    """Overwrite the b-tree header of the index every cache lookup goes through (Cache_key_raw), leaving the
    file's first page (which opening it reads) whole: SQLite opens the file and answers `select`s on it."""
    with closing(sqlite3.connect(shard)) as connection:
        (page,) = connection.execute("select rootpage from sqlite_master where name = 'Cache_key_raw'").fetchone()
    data = bytearray(shard.read_bytes())
    size = int.from_bytes(data[16:18], "big")
    data[(page - 1) * size:(page - 1) * size + 8] = b"\xff" * 8
    shard.write_bytes(bytes(data))
    return page


def test_a_sound_cache_passes(cache):
    check_cache(cache)  # no error, and nothing created: the check opens shards read-only
    assert sorted(p.name for p in cache.iterdir()) == [f"{i:03d}" for i in range(16)]


def test_a_shard_with_a_damaged_page_is_called_corrupted_and_named(cache):
    """Old main ran quick_check and dropped its answer: the shard passed, and DSPy later read it quietly."""
    page = damage_the_key_index(cache / "003" / "cache.db")
    with pytest.raises(ValueError) as err:
        check_cache(cache)
    message = str(err.value)
    assert message.startswith(f"the LM cache {cache} is corrupted (003/cache.db: "), message
    assert re.search(rf"Page {page}\b", message), message  # what quick_check found, on one line
    assert "\n" not in message and f"rm -r {cache}" in message


def test_a_shard_that_is_no_database_is_named_by_its_path_in_the_cache(cache):
    (cache / "007" / "cache.db").write_bytes(b"garbage" * 1000)
    with pytest.raises(ValueError, match=re.escape(f"{cache} is corrupted (007/cache.db: file is not a database)")):
        check_cache(cache)


def test_a_cache_without_shards_or_folder_passes(tmp_path, cache):
    check_cache(tmp_path / "nothing-here")
    shutil.rmtree(cache / "003")
    check_cache(cache)
