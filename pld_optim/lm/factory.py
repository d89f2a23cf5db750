"""Model strings to dspy.LM, and what PLD asks of an LM: its engine, grammar support, its token counter.

`local/<name or path.gguf>` is the embedded llama.cpp engine; everything else (`ollama_chat/gemma3:4b`,
`gemini/...`, `openai/...`) is a `dspy.LM` with a token cap, since a local server otherwise generates to the
end of its context, and with a bound on every wait: a server that accepts a call and never answers would
otherwise hold a command for litellm's and lm15's 600 s a try, times DSPy's retries, times every example.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

import dspy
from dspy.clients.base_lm import LM_CLASS_STATE_KEY
from dspy.utils.exceptions import LMLockTimeoutError, LMTimeoutError

from pld_optim.lm.engine import LlamaCppEngine
from pld_optim.lm.gguf import check_local_model
from pld_optim.lm.ollama import is_ollama, ollama_host

DEFAULT_STUDENT = "ollama_chat/gemma3:4b"
# A server model's call fails when the server sends nothing for DEFAULT_TIMEOUT seconds (non-streaming, that
# is the whole answer: a 4B model on CPU writes a 2,000-token rule list well within it); DSPy then tries it
# DEFAULT_RETRIES more times (1 s, 2 s apart) before the run stops with LMStalled.
DEFAULT_TIMEOUT = 120.0
DEFAULT_RETRIES = 2

_ENGINES: dict[tuple, LlamaCppEngine] = {}
_ENGINES_LOCK = threading.Lock()


def make_lm(model: str | dspy.BaseLM, *, max_tokens: int = 512, temperature: float | None = 0.0,
            api_base: str | None = None, cache: bool = True, timeout: float | None = None,
            retries: int | None = None, **engine_kwargs) -> dspy.BaseLM:
    """One entry point for every model string the package accepts.

    - `local/<name or path.gguf>`: embedded llama.cpp; one engine per model file is shared, so a
      teacher and a student on the same GGUF load it once. It runs in-process: no server to wait for, so
      `timeout` and `retries` are refused (a call ends after max_tokens).
    - `ollama_chat/<model>`: DSPy's native route to Ollama's OpenAI-compatible `/v1` endpoint. A bare
      `http://localhost:11434` base would 404 there, so `/v1` is appended.
    - anything else: `dspy.LM`, keys from the environment as litellm reads them.

    A server model waits at most `timeout` seconds (default DEFAULT_TIMEOUT) for the server to send anything
    and is tried `retries` more times (default DEFAULT_RETRIES); then it raises `LMStalled`. An LM passed in
    is returned as it is, with its own settings.
    """
    if isinstance(model, dspy.BaseLM):
        return model
    if not isinstance(model, str) or "/" not in model or model.endswith("/") or model.startswith("/"):
        raise ValueError(f"invalid model string {model!r}: use provider/model, e.g. ollama_chat/gemma3:4b, "
                         "openai/gpt-4o-mini, gemini/gemini-2.5-flash, or local/gemma3-270m")
    if model.startswith("local/"):
        if timeout is not None or retries is not None:
            raise ValueError(f"{model}: timeout and retries are for server models; a local/ model runs "
                             "in-process, with no server to wait for (its calls end after max_tokens)")
        name = model.removeprefix("local/")
        check_local_model(name)  # a missing file or package fails here, not on the first call
        key = (name, tuple(sorted(engine_kwargs.items())))
        with _ENGINES_LOCK:
            engine = _ENGINES.setdefault(key, LlamaCppEngine(name, max_tokens=max_tokens, **engine_kwargs))
        return dspy.LM(model, engine=engine, max_tokens=max_tokens, temperature=temperature, cache=cache)
    address = ollama_host(api_base) + "/v1" if is_ollama(model) else api_base
    return ServerLM(model, address=address, max_tokens=max_tokens, temperature=temperature, cache=cache,
                    timeout=_seconds(timeout), num_retries=_tries_after_first(retries),
                    **({"api_base": address} if address else {}))


def _seconds(timeout) -> float:
    if timeout is None:
        return DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) \
            or timeout <= 0:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _tries_after_first(retries) -> int:
    if retries is None:
        return DEFAULT_RETRIES
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise ValueError(f"retries must be a whole number from 0 to 10, got {retries!r}")
    return retries


class LMStalled(BaseException):  # noqa: N818 - named like KeyboardInterrupt, which it acts like
    """A server model sent no answer within its timeout, on every try.

    A BaseException, like KeyboardInterrupt and for the same reason: PLD's stages and DSPy's evaluators and
    optimizers record an ordinary exception per example and go on, which would turn a stalled server into
    one timeout per example and then a result built from the few examples that came back. This passes
    through them and stops the run where it is; the finished calls are in DSPy's cache and a compile's
    checkpoints, so running the same command again resumes. Catch it by name."""


class _Stall:
    """Shared by an LM and its copies (dspy's copy() is shallow): until when calls fail at once, and why."""

    until: float = 0.0
    message: str = ""


class ServerLM(dspy.LM):
    """dspy.LM for a server model, whose calls end: a timeout becomes LMStalled, naming the model, its address,
    the timeout and what to do. For `timeout` seconds after that, calls on it fail at once: the examples a
    stopped run had queued in DSPy's thread pool do not each wait out the timeout before the process exits."""

    def __init__(self, model: str, *, address: str | None = None, **kwargs):
        super().__init__(model, **kwargs)
        self.address = address
        self._stall = _Stall()

    def __call__(self, *args, **kwargs):
        self._refuse_while_stalled()
        try:
            return super().__call__(*args, **kwargs)
        except Exception as exc:
            if not timed_out(exc):
                raise
            raise self._stalled(exc) from exc

    async def acall(self, *args, **kwargs):
        self._refuse_while_stalled()
        try:
            return await super().acall(*args, **kwargs)
        except Exception as exc:
            if not timed_out(exc):
                raise
            raise self._stalled(exc) from exc

    def dump_state(self) -> dict:
        """Saved as a plain dspy.LM: a program saved with this LM loads without allowing custom classes."""
        return {**super().dump_state(), LM_CLASS_STATE_KEY: "dspy.clients.lm.LM"}

    def _refuse_while_stalled(self) -> None:
        if time.monotonic() < self._stall.until:
            raise LMStalled(self._stall.message)

    def _stalled(self, exc: Exception) -> LMStalled:
        timeout, tries = self.kwargs.get("timeout"), self.num_retries + 1
        where = self.address or "its provider's default address"
        ollama = " (`ollama ps`; restart it with `ollama serve`)" if is_ollama(self.model) else ""
        self._stall.message = (
            f"{self.model} at {where} sent no answer within {timeout:g} s, {tries} tr{'y' if tries == 1 else 'ies'} "
            f"({_reason(exc)}): the server is stalled, overloaded or slower than the timeout. Check that it runs "
            f"and is not overloaded{ollama}, or raise `timeout:` in this model's student: or teacher: section (in "
            "Python, make_lm(..., timeout=...)); then run the same command again: finished calls are replayed "
            "from the cache and a compile resumes from its checkpoints")
        self._stall.until = time.monotonic() + timeout
        return LMStalled(self._stall.message)


_TIMEOUT_NAMES = ("ReadTimeout", "WriteTimeout", "ConnectTimeout", "PoolTimeout", "Timeout")


def timed_out(exc: BaseException) -> bool:
    """Whether a failed call ran out of time waiting for the server, by the exception or what caused it:
    DSPy's LMTimeoutError (LiteLLM's Timeout), lm15's TimeoutError and Python's (socket.timeout), and the
    transport's ReadTimeout and the like, which DSPy's native engine reports as an LMTransportError. A wait
    for a local credential lock is no server's silence."""
    for _ in range(8):  # a cause chain is short; a cycle must not loop
        if exc is None or isinstance(exc, LMLockTimeoutError) or type(exc).__name__ == "LockTimeoutError":
            return False
        if isinstance(exc, (LMTimeoutError, TimeoutError)) or type(exc).__name__ in _TIMEOUT_NAMES:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _reason(exc: BaseException) -> str:
    """The error's own words, its first clause: DSPy prefixes the model, lm15 appends advice on its own
    Timeouts class, which a config cannot reach."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(exc)).split(";")[0].strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def _timeout_is_no_part_of_the_answer() -> None:
    """DSPy keys its response cache on every LM setting but api_key, api_base and base_url, so `timeout` would
    be part of the key and a run rerun with a longer timeout after a stall would pay for every call again.
    How long a call may wait never changes its answer: it joins them (the list is read on every lookup)."""
    from dspy.clients import execution

    ignored = getattr(execution, "IGNORED_CACHE_KEYS", None)
    if isinstance(ignored, list) and "timeout" not in ignored:
        ignored.append("timeout")


_timeout_is_no_part_of_the_answer()


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


def lm_identity(lm) -> dict:
    """What of an LM changes its answers: keys a run folder's fingerprint and a search's study."""
    kwargs = getattr(lm, "kwargs", {}) or {}
    return {"model": getattr(lm, "model", str(lm)), "temperature": kwargs.get("temperature"),
            "max_tokens": kwargs.get("max_tokens") or kwargs.get("max_completion_tokens")}


def resolve_teacher(teacher, seed: int) -> dspy.BaseLM:
    """PLD's teacher: a model string, an LM, or (as DSPy's `teacher=`) a program, whose predictors' LM it is;
    else the configured LM. A sampling teacher is seeded per rollout, so its samples still hit the cache."""
    if isinstance(teacher, dspy.Module):
        teacher = next((p.lm for p in teacher.predictors() if p.lm is not None), None) or dspy.settings.lm
    lm = as_lm(teacher) or dspy.settings.lm
    if lm is None:
        raise ValueError("PLD: no teacher; pass teacher='provider/model' or a dspy.LM, or dspy.configure(lm=...)")
    if (lm.kwargs.get("temperature") or 0) > 0:
        lm = lm.copy(rollout_id=seed)
    return lm
