"""In-process llama.cpp as a DSPy 3.4 custom engine (`complete(Request) -> Response`): no server, no key.

Consecutive calls that share a prefix (the system prompt with the rules, then the demos) reuse its KV
cache, so a student answer costs the prefill of what is new in it: the example's inputs. A one-label
answer is read from the logits of that one forward pass (no sampling loop), and the answer format's fixed
text is written by the engine itself rather than decoded.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

from pld_optim.lm.chat import chat_grammar, chat_template
from pld_optim.lm.gguf import resolve_gguf

# A response_format with this name asks the embedded engine for DSPy's chat format ([[ ## field ## ]]
# headers) under a grammar, instead of JSON; LabelAdapter sends it.
CHAT_FORMAT_SCHEMA = "dspy_chat_format"


def _cpu_has_amx() -> bool:
    try:
        return "amx_tile" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


@contextmanager
def _without_amx_buffers():
    """On CPUs with AMX, a native llama-cpp-python build (0.3.36 seen) puts the weights in its AMX buffer
    type, whose matmul segfaults on the first decode (seen on a 2-core Sapphire Rapids VM). Loading the model
    with `use_extra_bufts=False` keeps the weights in the ordinary CPU buffers; llama-cpp-python has no
    argument for it, so its default model parameters are patched for the one load."""
    if not _cpu_has_amx():
        yield
        return
    import llama_cpp.llama as high_level

    low_level = high_level.llama_cpp
    original = low_level.llama_model_default_params

    def without_extra_buffers():
        params = original()
        params.use_extra_bufts = False
        return params

    low_level.llama_model_default_params = without_extra_buffers
    try:
        yield
    finally:
        low_level.llama_model_default_params = original


class LlamaCppEngine:
    """One GGUF model in this process; one lock around it (llama.cpp contexts are not thread-safe)."""

    supports_response_format = True

    def __init__(self, model: str = "gemma3-270m", *, n_ctx: int = 4096, n_threads: int | None = None,
                 template: str = "auto", max_tokens: int = 256, seed: int = 0, repeat_penalty: float = 1.15):
        self.model = model
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.template = template
        self.max_tokens = max_tokens
        self.seed = seed
        # Tiny models loop in free text ("It is about gender. It is about gender. ..."); llama.cpp's
        # repetition penalty curbs it.
        self.repeat_penalty = repeat_penalty
        self._llama = None
        self._chat = None
        self._lock = threading.Lock()
        self.last_prompt: str | None = None

    def dump_state(self) -> dict:
        keys = ("model", "n_ctx", "n_threads", "template", "max_tokens", "seed", "repeat_penalty")
        return {k: getattr(self, k) for k in keys}

    @classmethod
    def load_state(cls, state: dict) -> LlamaCppEngine:
        return cls(**state)

    def __getstate__(self) -> dict:
        # Pickled (e.g. by MLflow's DSPy flavour) as its settings; the model loads again on first use.
        return self.dump_state()

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    @property
    def llama(self):
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise ImportError(
                    "the embedded backend needs llama-cpp-python: pip install 'pld-optim[local]'") from exc
            path = resolve_gguf(self.model)
            # llama-cpp-python generates on half the cores by default; a teacher's long answers are
            # generation-bound, so use them all (the engine runs one call at a time under its lock).
            with _without_amx_buffers():
                self._llama = Llama(model_path=str(path), n_ctx=self.n_ctx,
                                    n_threads=self.n_threads or os.cpu_count(), seed=self.seed, verbose=False)
            # Free the model before interpreter teardown: llama-cpp-python's __del__ at exit raises
            # "'NoneType' object is not callable" once its modules are gone.
            atexit.register(self.close)
            self._chat = chat_template(self._llama, self.template)
        return self._llama

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` in this model's own tokenizer (loads the model on first use)."""
        llama = self.llama
        with self._lock:
            return len(llama.tokenize(text.encode(), add_bos=False, special=False))

    def close(self) -> None:
        with self._lock:
            if self._llama is not None:
                self._llama.close()
                self._llama = None

    def render(self, request) -> str:
        system = request.system if isinstance(request.system, str) else "".join(
            getattr(p, "text", "") for p in (request.system or ()))
        turns = []
        for message in request.messages:
            if message.role == "system":
                system = f"{system}\n\n{message.text}".strip()
            else:
                turns.append(("assistant" if message.role == "assistant" else "user", message.text))
        self.llama  # noqa: B018 - loading the model reads its chat template
        return self._chat[0](system or "", turns)

    def complete(self, request) -> Response:
        cfg = request.config
        with self._lock:
            prompt = self.render(request)
            self.last_prompt = prompt
            tokens = self.llama.tokenize(prompt.encode(), add_bos=False, special=True)
            fmt = cfg.response_format or {}
            schema = fmt.get("schema") or fmt.get("json_schema", {}).get("schema")
            name = fmt.get("name") or fmt.get("json_schema", {}).get("name")
            if fmt.get("type") == "json_schema" and name == CHAT_FORMAT_SCHEMA:
                prefix, grammar, suffix = chat_grammar(schema)
                tokens = tokens + self.llama.tokenize(prefix.encode(), add_bos=False, special=False)
                labels = _single_label_field(schema)
                if labels and not cfg.temperature:
                    chosen = self._choose_label(tokens, labels)
                    if chosen is not None:
                        return _response(request, prefix + chosen[0] + suffix, len(tokens), chosen[1])
                bare = all("enum" in p for p in schema["properties"].values())
                text, usage, finish = self._generate(tokens, cfg, grammar, bare_label=bare)
                return _response(request, prefix + text + suffix, *usage, finish=finish)
            grammar = json.dumps(schema) if fmt.get("type") == "json_schema" else None
            text, usage, finish = self._generate(tokens, cfg, grammar, json_schema=True)
            return _response(request, text, *usage, finish=finish)

    def _generate(self, tokens: list[int], cfg, grammar: str | None, *, json_schema: bool = False,
                  bare_label: bool = False) -> tuple[str, tuple[int, int], str]:
        from llama_cpp import LlamaGrammar

        budget = cfg.max_tokens or self.max_tokens
        if len(tokens) + budget > self.n_ctx:
            # As hosted APIs do: a prompt that leaves less room than max_tokens is refused, not answered with
            # a cut text (InferRules put 140 examples in one prompt, got a few tokens back and stopped on a
            # parse error). The name leads the message as in litellm's errors: DSPy 3.4.1's InferRules
            # recognises an overflow (and retries with fewer examples) only by that text in str(error).
            raise dspy.lm15.ContextLengthError(
                f"ContextWindowExceededError: prompt of {len(tokens)} tokens plus max_tokens={budget} does not "
                f"fit n_ctx={self.n_ctx} of local model {self.model}")
        if grammar is not None:
            grammar = (LlamaGrammar.from_json_schema(grammar, verbose=False) if json_schema
                       else LlamaGrammar.from_string(grammar, verbose=False))
        out = self.llama.create_completion(
            tokens, max_tokens=budget,
            temperature=cfg.temperature or 0.0, top_p=cfg.top_p if cfg.top_p is not None else 0.95,
            stop=[*self._chat[1], *cfg.stop], seed=cfg.seed if cfg.seed is not None else self.seed,
            grammar=grammar,
            # A bare label: labels named in the prompt must not be penalised.
            repeat_penalty=1.0 if bare_label else self.repeat_penalty)
        choice, usage = out["choices"][0], out.get("usage", {})
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return choice["text"], (usage.get("prompt_tokens", len(tokens)), usage.get("completion_tokens", 0)), finish

    def _choose_label(self, tokens: list[int], labels: list[str]) -> tuple[str, int] | None:
        """Greedy decoding restricted to the labels, without the sampler: one forward pass over what the
        previous call did not share, then the label whose first token scores highest; labels that share
        first tokens are told apart one pass per shared token. None (use the grammar) when one label's
        tokens begin another's, or the prompt does not fit."""
        import numpy as np
        from llama_cpp import llama_cpp as low

        llama = self.llama
        options = {label: llama.tokenize(label.encode(), add_bos=False, special=False) for label in labels}
        sequences = list(options.values())
        if not all(sequences) or any(a != b and a == b[:len(a)] for a in sequences for b in sequences):
            return None
        if len(tokens) >= self.n_ctx - max(map(len, sequences)):
            return None
        shared, limit = 0, min(llama.n_tokens, len(tokens) - 1)
        while shared < limit and llama.input_ids[shared] == tokens[shared]:
            shared += 1
        llama.n_tokens = shared  # the KV cache past this point is overwritten by eval
        llama.eval(tokens[shared:])
        remaining, depth = list(options), 0
        while len(remaining) > 1:
            logits = np.ctypeslib.as_array(low.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),))
            token = options[max(remaining, key=lambda label: logits[options[label][depth]])][depth]
            remaining = [label for label in remaining if options[label][depth] == token]
            depth += 1
            if len(remaining) > 1:
                llama.eval([token])
        return remaining[0], len(options[remaining[0]])


def _single_label_field(schema: dict) -> list[str] | None:
    fields = list(schema["properties"].values())
    return [str(v) for v in fields[0]["enum"]] if len(fields) == 1 and "enum" in fields[0] else None


def _response(request, text: str, input_tokens: int, output_tokens: int, finish: str = "stop") -> Response:
    return Response(id=None, model=request.model, message=Message.assistant([TextPart(text)]), finish_reason=finish,
                    usage=Usage(input_tokens=input_tokens, output_tokens=output_tokens,
                                total_tokens=input_tokens + output_tokens))
