"""Ollama: where the server is, and a preflight that checks it and the model before any teacher call."""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

logger = logging.getLogger(__name__)

OLLAMA_DEFAULT_BASE = "http://localhost:11434"


class OllamaError(RuntimeError):
    pass


def is_ollama(model: str) -> bool:
    return str(model).startswith(("ollama_chat/", "ollama/"))


def ollama_host(api_base: str | None = None) -> str:
    """The one place an Ollama address is worked out: the argument, else $OLLAMA_HOST, else localhost;
    always with a scheme and without `/v1` (the native API; DSPy's route appends `/v1`). A malformed
    address is an error naming where it came from."""
    source = "api_base" if api_base else ("OLLAMA_HOST" if os.environ.get("OLLAMA_HOST") else None)
    raw = (api_base or os.environ.get("OLLAMA_HOST") or OLLAMA_DEFAULT_BASE).strip()
    base = raw.rstrip("/").removesuffix("/v1")
    base = base if base.startswith(("http://", "https://")) else f"http://{base}"
    try:
        parts = urlsplit(base)
        port = parts.port  # raises on a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{source or 'the Ollama address'}={raw!r} is not a host[:port] or URL ({exc}); "
                         "e.g. http://localhost:11434") from None
    if not parts.hostname or " " in raw or (port is not None and not 0 < port < 65536):
        raise ValueError(f"{source or 'the Ollama address'}={raw!r} is not a host[:port] or URL; "
                         "e.g. http://localhost:11434")
    return base


def preflight(model: str, api_base: str | None = None, *, pull: bool = False, timeout: float = 10.0) -> None:
    """No-op for non-Ollama models. Raises OllamaError with the exact commands to fix the setup."""
    if not is_ollama(model):
        return
    import httpx

    name = model.split("/", 1)[1]
    host = ollama_host(api_base)  # a malformed address is named (api_base or OLLAMA_HOST) before the import
    client = _ollama().Client(host=host, timeout=timeout)
    try:
        listed = client.list()
    except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:  # connected, then nothing: not "start it"
        raise OllamaError(
            f"Ollama at {host} sent no answer within {timeout:g} s ({type(exc).__name__}): it is stalled or "
            f"overloaded. Check it with `ollama ps`, restart it with `ollama serve`, then run the same command again."
        ) from None
    except (httpx.HTTPError, ConnectionError, OSError) as exc:
        raise OllamaError(
            f"Ollama is not reachable at {host} ({type(exc).__name__}). "
            f"Start it with `ollama serve`, then `ollama pull {name}`."
        ) from None
    available = {m.model for m in listed.models}
    if name in available or f"{name}:latest" in available:
        return
    if not pull:
        raise OllamaError(
            f"Ollama at {host} does not have {name!r} (it has: {sorted(available) or 'no models'}). "
            f"Run `ollama pull {name}`, or pass --pull to let pld-optim pull it."
        )
    logger.info("ollama: pulling %s from %s", name, host)
    last = None
    for progress in client.pull(name, stream=True):
        if progress.status != last:
            logger.info("ollama pull %s: %s", name, progress.status)
            last = progress.status


def _ollama():
    """The ollama package. Importing it builds a default client from $OLLAMA_HOST, so a malformed value
    would fail there with a bare "Port could not be cast to integer"; it is set aside for the import (the
    client used is always built from the address `ollama_host` worked out, which names a bad OLLAMA_HOST)."""
    import sys

    if "ollama" not in sys.modules and os.environ.get("OLLAMA_HOST"):
        saved = os.environ.pop("OLLAMA_HOST")
        try:
            import ollama
        finally:
            os.environ["OLLAMA_HOST"] = saved
        return ollama
    import ollama

    return ollama


def preflight_all(models: list[str], api_bases: dict[str, str | None], *, pull: bool = False) -> None:
    for model in dict.fromkeys(models):
        preflight(model, api_bases.get(model), pull=pull)
