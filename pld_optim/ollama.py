"""Ollama preflight: check the server and the model before any teacher money is spent."""

from __future__ import annotations

import logging

import httpx
import ollama

from pld_optim.models import ollama_host

logger = logging.getLogger(__name__)


class OllamaError(RuntimeError):
    pass


def preflight(model: str, api_base: str | None = None, *, pull: bool = False, timeout: float = 10.0) -> None:
    """No-op for non-Ollama models. Raises OllamaError with the exact commands to fix the setup."""
    if not model.startswith(("ollama_chat/", "ollama/")):
        return
    name = model.split("/", 1)[1]
    host = ollama_host(api_base)
    client = ollama.Client(host=host, timeout=timeout)
    try:
        listed = client.list()
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


def preflight_all(models: list[str], api_bases: dict[str, str | None], *, pull: bool = False) -> None:
    for model in dict.fromkeys(models):
        preflight(model, api_bases.get(model), pull=pull)
