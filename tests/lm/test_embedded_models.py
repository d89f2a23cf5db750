"""Chunked GGUFs from PyPI: assembled once, and never loaded unless the whole file's sha256 matches."""

import hashlib
import sys
import types

import pytest

from pld_optim.lm import gguf
from pld_optim.lm.gguf import EMBEDDED, EmbeddedModel, assemble, resolve_gguf, verify


@pytest.fixture
def chunked(tmp_path, monkeypatch):
    parts = [b"GGUF" + bytes(range(50)), b"second slice", b"the end"]
    names = []
    for i, data in enumerate(parts):
        path = tmp_path / f"part{i}.bin"
        path.write_bytes(data)
        name = f"fake_chunk_pkg_{i}"
        module = types.ModuleType(name)
        module.get_part_path = lambda p=path: str(p)
        monkeypatch.setitem(sys.modules, name, module)
        names.append(name)
    monkeypatch.setattr(gguf, "CACHE_DIR", tmp_path / "cache")
    whole = b"".join(parts)
    return EmbeddedModel("fake.gguf", chunks=tuple(names), size=len(whole),
                         sha256=hashlib.sha256(whole).hexdigest()), whole


def test_chunks_are_assembled_in_order_and_verified(chunked):
    spec, whole = chunked
    path = assemble("fake", spec)
    assert path.read_bytes() == whole and path.with_name("fake.gguf.verified").exists()
    assert not list(path.parent.glob("*.part"))  # no half-written file left behind


def test_a_changed_file_is_refused_before_loading(chunked):
    spec, _ = chunked
    path = assemble("fake", spec)
    path.write_bytes(path.read_bytes()[:-3] + b"xyz")  # same size, other bytes: the stamp no longer matches
    with pytest.raises(ValueError, match="sha256 .* does not match the expected"):
        verify(path, spec)


def test_a_missing_chunk_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setattr(gguf, "CACHE_DIR", tmp_path)
    spec = EmbeddedModel("absent.gguf", chunks=("no_such_chunk_package_part1",), sha256="0" * 64)
    with pytest.raises(ImportError, match=r"no-such-chunk-package-part1.*pld-optim\[local\]"):
        assemble("absent", spec)


def test_the_quickstart_model_is_pinned():
    spec = EMBEDDED["qwen2.5-coder-1.5b"]
    assert len(spec.chunks) == 22 and spec.size == 1_117_320_768 and len(spec.sha256) == 64


def test_a_named_model_resolves_to_its_verified_cache_file(chunked, monkeypatch):
    spec, whole = chunked
    monkeypatch.setitem(EMBEDDED, "fake", spec)
    path = resolve_gguf("fake")
    assert path == gguf.CACHE_DIR / "fake.gguf" and path.read_bytes() == whole
    with pytest.raises(FileNotFoundError, match="GGUF model file not found"):
        resolve_gguf(str(gguf.CACHE_DIR / "absent.gguf"))
