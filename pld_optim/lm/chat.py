"""Prompt text for the embedded engine: the model's own chat template, and grammars for DSPy's format.

The chat template comes from the GGUF (`tokenizer.chat_template`, rendered by llama-cpp-python's
Jinja2ChatFormatter). A GGUF without one gets the Gemma or ChatML layout written here; Gemma's keeps the
system text at the start of the first user turn, as Gemma's own template and Ollama's do, because
llama-cpp-python's `chat_format="gemma"` drops the system message, and with it PLD's rules.
"""

from __future__ import annotations

import json
from collections.abc import Callable

Turns = list[tuple[str, str]]  # (role, text), role "user" or "assistant"


def gemma_prompt(system: str, turns: Turns) -> str:
    out = ["<bos>"]
    for i, (role, text) in enumerate(turns):
        if i == 0 and role == "user" and system:
            text = f"{system}\n\n{text}"
        out.append(f"<start_of_turn>{'model' if role == 'assistant' else 'user'}\n{text}<end_of_turn>\n")
    out.append("<start_of_turn>model\n")
    return "".join(out)


def chatml_prompt(system: str, turns: Turns) -> str:
    out = [f"<|im_start|>system\n{system}<|im_end|>\n"] if system else []
    out += [f"<|im_start|>{role}\n{text}<|im_end|>\n" for role, text in turns]
    out.append("<|im_start|>assistant\n")
    return "".join(out)


FALLBACK_TEMPLATES = {"gemma": (gemma_prompt, ["<end_of_turn>", "<eos>"]),
                      "chatml": (chatml_prompt, ["<|im_end|>"])}


def chat_template(llama, name: str = "auto") -> tuple[Callable[[str, Turns], str], list[str]]:
    """(render, stop strings) for a loaded model: its GGUF template unless `name` names a fallback."""
    if name != "auto":
        return FALLBACK_TEMPLATES[name]
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        arch = str(llama.metadata.get("general.architecture", ""))
        return FALLBACK_TEMPLATES["gemma" if arch.startswith("gemma") else "chatml"]
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def token_text(token: int) -> str:
        return llama.detokenize([token], special=True).decode("utf-8", "replace") if token >= 0 else ""

    formatter = Jinja2ChatFormatter(template, eos_token=token_text(llama.token_eos()),
                                    bos_token=token_text(llama.token_bos()))

    def render(system: str, turns: Turns) -> str:
        messages = [{"role": "system", "content": system}] if system else []
        messages += [{"role": role, "content": text} for role, text in turns]
        return formatter(messages=messages).prompt

    stops = formatter(messages=[{"role": "user", "content": ""}]).stop
    return render, [stops] if isinstance(stops, str) else list(stops or [])


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
COMPLETED = "\n\n[[ ## completed ## ]]"
# A string property with this key is one rule that ends in the key's label: "If <condition>, answer <label>."
# The condition is one clause of prose (no sentence end, no brackets), so generation stops where the rule
# does, and a rule with no condition, another label or a second sentence cannot be written at all.
RULE_ANSWER = "x-rule-answer"
_RULE_CONDITION = 'cond ::= [A-Za-z] [^\\n\\[\\]`{}.;:!?]{8,240}'


def chat_grammar(schema: dict) -> tuple[str, str, str]:
    """GBNF for ChatAdapter's own answer format: every field header, a value of the field's type (one
    allowed label for enums), then the completion marker.

    Returns (prefix, grammar, suffix). The first header and the closing marker are fixed text, so the
    engine writes them itself instead of decoding them token by token.
    """
    rules, body, used = [], [], set()
    fields = list(schema["properties"].items())
    for i, (name, prop) in enumerate(fields):
        if "enum" in prop:
            rules.append(f"f{i} ::= " + " | ".join(json.dumps(str(v)) for v in prop["enum"]))
            ref = f"f{i}"
        elif RULE_ANSWER in prop:
            rules.append(f'f{i} ::= "If " cond ' + json.dumps(f", answer {prop[RULE_ANSWER]}."))
            used.add("rule")
            ref = f"f{i}"
        else:
            kind = prop.get("type")
            if kind not in _GBNF_REF:
                raise ValueError(f"no chat grammar for field {name!r} of type {kind!r}")
            used.add(kind)
            ref = _GBNF_REF[kind]
        header = "" if i == 0 else json.dumps(f"\n\n[[ ## {name} ## ]]\n") + " "
        body.append(header + ref)
    rules += [_RULE_CONDITION if k == "rule" else _GBNF_VALUES[k] for k in sorted(used)]
    prefix = f"[[ ## {fields[0][0]} ## ]]\n"
    return prefix, "root ::= " + " ".join(body) + "\n" + "\n".join(rules), COMPLETED
