"""Model strings to dspy.LM, and what PLD asks of an LM: its engine, grammar support, its token counter.

`local/<name or path.gguf>` is the embedded llama.cpp engine; everything else (`ollama_chat/gemma3:4b`,
`gemini/...`, `openai/...`) is an ordinary `dspy.LM` with a token cap, since a local server otherwise
generates to the end of its context.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import NamedTuple

import dspy

from pld_optim.lm.engine import LlamaCppEngine
from pld_optim.lm.gguf import check_local_model
from pld_optim.lm.ollama import is_ollama, ollama_host

DEFAULT_STUDENT = "ollama_chat/gemma3:4b"

_ENGINES: dict[tuple, LlamaCppEngine] = {}
_ENGINES_LOCK = threading.Lock()


def make_lm(model: str | dspy.BaseLM, *, max_tokens: int = 512, temperature: float | None = 0.0,
            api_base: str | None = None, cache: bool = True, **engine_kwargs) -> dspy.BaseLM:
    """One entry point for every model string the package accepts.

    - `local/<name or path.gguf>`: embedded llama.cpp; one engine per model file is shared, so a
      teacher and a student on the same GGUF load it once.
    - `ollama_chat/<model>`: DSPy's native route to Ollama's OpenAI-compatible `/v1` endpoint. A bare
      `http://localhost:11434` base would 404 there, so `/v1` is appended.
    - anything else: `dspy.LM`, keys from the environment as litellm reads them.
    """
    if isinstance(model, dspy.BaseLM):
        return model
    if not isinstance(model, str) or "/" not in model or model.endswith("/") or model.startswith("/"):
        raise ValueError(f"invalid model string {model!r}: use provider/model, e.g. ollama_chat/gemma3:4b, "
                         "openai/gpt-4o-mini, gemini/gemini-2.5-flash, or local/gemma3-270m")
    if model.startswith("local/"):
        name = model.removeprefix("local/")
        check_local_model(name)  # a missing file or package fails here, not on the first call
        key = (name, tuple(sorted(engine_kwargs.items())))
        with _ENGINES_LOCK:
            engine = _ENGINES.setdefault(key, LlamaCppEngine(name, max_tokens=max_tokens, **engine_kwargs))
        return dspy.LM(model, engine=engine, max_tokens=max_tokens, temperature=temperature, cache=cache)
    kwargs = {}
    if is_ollama(model):
        kwargs["api_base"] = ollama_host(api_base) + "/v1"
    elif api_base:
        kwargs["api_base"] = api_base
    return dspy.LM(model, max_tokens=max_tokens, temperature=temperature, cache=cache, **kwargs)


def as_lm(model: str | dspy.BaseLM | None, *, max_tokens: int = 1024) -> dspy.BaseLM | None:
    """What `PLD(teacher=...)` accepts: a model string (through make_lm, like YAML's) or an LM."""
    if model is None or isinstance(model, dspy.BaseLM):
        return model
    if isinstance(model, str):
        return make_lm(model, max_tokens=max_tokens)
    raise TypeError(f"expected a model string or dspy.LM, got {type(model).__name__}")


def engine_of(lm) -> LlamaCppEngine | None:
    """The embedded engine behind an LM made by make_lm, if it is one."""
    engine = getattr(lm, "_engine_spec", None)  # DSPy 3.4 keeps a custom engine here; read in this one place
    return engine if isinstance(engine, LlamaCppEngine) else None


def supports_grammar(lm) -> bool:
    """Whether the LM can be held to a JSON schema (response_format): the embedded engine and Ollama can,
    and so can any custom engine that declares `supports_response_format`."""
    engine = getattr(lm, "_engine_spec", None)
    if getattr(engine, "supports_response_format", False):
        return True
    return is_ollama(str(getattr(lm, "model", "")))


class TokenCounter(NamedTuple):
    """A prompt-token count and the name of what counted it (a budget means nothing without it)."""

    count: Callable[[str], int]
    name: str


def token_counter(lm) -> TokenCounter:
    """How prompt budgets are counted: the embedded model's own tokenizer, else litellm's counter for the
    model (its tokenizer when litellm knows it, else tiktoken's cl100k)."""
    engine = engine_of(lm)
    if engine is not None:
        return TokenCounter(engine.count_tokens, f"{engine.model} tokenizer")
    model = str(getattr(lm, "model", ""))
    import litellm

    return TokenCounter(lambda text: litellm.token_counter(model=model, text=text), f"litellm token_counter ({model})")
