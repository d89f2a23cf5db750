"""A ChatAdapter that never loses a classification to answer format.

Small students often answer "Race" for `race`, wrap the label in a sentence, or skip the
`[[ ## label ## ]]` header (dspy#7265, #8577). The stock ChatAdapter then raises, and its JSON
fallback spends a second call that usually fails the same way. LabelAdapter keeps ChatAdapter's
prompt byte for byte (so the rendered system prompt is what the student sees) and adds two defences:

1. constrain: when the backend can honour it, send a JSON schema whose label fields are enums. The
   embedded llama.cpp engine turns the schema named `CHAT_FORMAT_SCHEMA` into a grammar that emits the
   ChatAdapter format itself; Ollama and OpenAI-compatible servers emit JSON, parsed below.
2. parse forgivingly: case, whitespace, quotes, JSON, or exactly one label named in a sentence.
"""

from __future__ import annotations

import contextvars
import json
import re
import typing
from typing import Any

import dspy
from dspy.adapters.chat_adapter import field_header_pattern
from dspy.utils.exceptions import AdapterParseError

from pld_optim.lm.chat import RULE_ANSWER
from pld_optim.lm.engine import CHAT_FORMAT_SCHEMA
from pld_optim.lm.factory import engine_of, supports_grammar
from pld_optim.lm.labels import literal_values, normalize_label


def _field_schema(annotation) -> dict | None:
    values = literal_values(annotation)
    if values is not None:
        return {"type": "string", "enum": values}
    if annotation is str:
        return {"type": "string"}
    if annotation is int:
        return {"type": "integer"}
    if typing.get_origin(annotation) is list and typing.get_args(annotation) == (str,):
        return {"type": "array", "items": {"type": "string"}}
    return None


def output_schema(signature: type[dspy.Signature]) -> dict | None:
    """A response_format covering every output field (labels as enums), or None for richer types."""
    props = {}
    for name, field in signature.output_fields.items():
        schema = _field_schema(field.annotation)
        if schema is None:
            return None
        props[name] = schema
    return {
        "type": "json_schema",
        "json_schema": {
            "name": CHAT_FORMAT_SCHEMA,
            "schema": {"type": "object", "properties": props, "required": list(props), "additionalProperties": False},
        },
    }


def rule_format(lm, signature: type[dspy.Signature], field: str, label: str) -> dict:
    """The `config=` that holds `field` to one rule answering `label` ("If <condition>, answer <label>."), for
    the embedded engine: its teacher otherwise writes on after the rule or names another label, paying for
    tokens the gates then refuse. Other LMs get {} (their schema support has no such form)."""
    schema = output_schema(signature) if engine_of(lm) is not None else None
    if schema is None:
        return {}
    schema["json_schema"]["schema"]["properties"][field][RULE_ANSWER] = label
    return {"response_format": schema}


_CONSTRAINED: contextvars.ContextVar[bool] = contextvars.ContextVar("pld_label_adapter_constrained", default=False)


class LabelAdapter(dspy.ChatAdapter):
    def __init__(self, constrain: bool | None = None, reminder: bool | None = None, **kwargs):
        """constrain=None asks the LM: custom engines that declare `supports_response_format`, or
        providers litellm knows to support response schemas. The JSON fallback is off by default
        because forgiving parsing recovers what it would, without a second call.

        reminder=None drops ChatAdapter's closing "Respond with the corresponding output fields..." line
        from the user turn when the output is constrained: the grammar or schema already holds the model to
        the format and the labels, and on the embedded 1.5B student the line's 55 tokens were half of what
        each answer had to prefill (0.77 -> 0.39 s per answer; benchmarks/latency.py). The system message
        is ChatAdapter's, byte for byte, either way."""
        kwargs.setdefault("use_json_adapter_fallback", False)
        super().__init__(**kwargs)
        self.constrain = constrain
        self.reminder = reminder

    def _should_constrain(self, lm) -> bool:
        if self.constrain is not None:
            return self.constrain
        return supports_grammar(lm)

    def __call__(self, lm, lm_kwargs: dict[str, Any], signature, demos, inputs):
        schema = output_schema(signature)
        constrained = bool(schema) and ("response_format" in lm_kwargs or self._should_constrain(lm))
        if constrained and "response_format" not in lm_kwargs:
            lm_kwargs = {**lm_kwargs, "response_format": schema}
        token = _CONSTRAINED.set(constrained)
        try:
            return super().__call__(lm, lm_kwargs, signature, demos, inputs)
        finally:
            _CONSTRAINED.reset(token)

    def user_message_output_requirements(self, signature) -> str:
        keep = self.reminder if self.reminder is not None else not _CONSTRAINED.get()
        return super().user_message_output_requirements(signature) if keep else None

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        try:
            values = super().parse(signature, completion)
        except AdapterParseError as error:
            values = recover_fields(signature, completion)
            if values is None:
                raise error
        strict_lists(signature, completion)
        return values


def student_adapter(adapter: dspy.Adapter | None = None) -> dspy.Adapter:
    """The adapter a student runs under: the one given, else the one configured (`dspy.configure(adapter=...)`,
    which the user's program runs under after the compile too), else LabelAdapter. One rule for the
    teleprompter and the Scorer, so rules.json's system prompt is rendered with the adapter actually used."""
    chosen = adapter if adapter is not None else dspy.settings.adapter
    if chosen is None:
        return LabelAdapter()
    if not isinstance(chosen, dspy.Adapter):
        raise ValueError(f"PLD: adapter {chosen!r} is a {type(chosen).__name__}, not a dspy.Adapter")
    return chosen


_LIST_SECTION = "[[ ## {} ## ]]"


def strict_lists(signature: type[dspy.Signature], completion: str) -> None:
    """A list field must be a JSON list of strings as written. DSPy's parser repairs JSON (json_repair), which
    turns a list cut at an escaped quote or by max_tokens into fragments that look like rules."""
    for name, field in signature.output_fields.items():
        if typing.get_origin(field.annotation) is not list:
            continue
        start = completion.find(_LIST_SECTION.format(name))
        if start < 0:
            continue  # recovered from JSON or loose text: recover_fields already required a real list
        raw = completion[start + len(_LIST_SECTION.format(name)):]
        raw = re.split(r"\n\s*\[\[ ## \w+ ## \]\]", raw, maxsplit=1)[0].strip()
        try:
            loaded = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise AdapterParseError("LabelAdapter", signature, completion,
                                    f"field {name!r} is not a JSON list ({exc.msg} at column {exc.colno})") from None
        if not isinstance(loaded, list) or not all(isinstance(x, str) for x in loaded):
            raise AdapterParseError("LabelAdapter", signature, completion,
                                    f"field {name!r} is a JSON {type(loaded).__name__}, not a list of strings")


def recover_fields(signature: type[dspy.Signature], completion: str) -> dict[str, Any] | None:
    """Rebuild the outputs from a JSON object, loose sections, or the bare text; None if a label is missing."""
    values: dict[str, Any] = {}
    text = completion.strip()
    try:
        loaded = json.loads(text)
        if isinstance(loaded, dict):
            values = {k: v for k, v in loaded.items() if k in signature.output_fields}
    except json.JSONDecodeError:
        pass
    if not values:
        current = None
        for line in text.splitlines():
            match = field_header_pattern.match(line.strip())
            if match:
                current = match.group(1)
                values.setdefault(current, line[match.end():].strip())
            elif current in signature.output_fields:
                values[current] = (values[current] + "\n" + line).strip()
    out: dict[str, Any] = {}
    for name, field in signature.output_fields.items():
        labels = literal_values(field.annotation)
        raw = values.get(name)
        if labels is not None:
            label = normalize_label(raw if raw is not None else text, labels)
            if label is None:
                return None
            out[name] = type(typing.get_args(field.annotation)[labels.index(label)])(label)
        elif field.annotation is str:
            if raw is None:
                return None
            out[name] = str(raw)
        elif typing.get_origin(field.annotation) is list and isinstance(raw, list):
            out[name] = [str(x) for x in raw]
        elif typing.get_origin(field.annotation) is list and isinstance(raw, str):
            try:
                loaded = json.loads(raw)
            except json.JSONDecodeError:
                return None
            if not isinstance(loaded, list):  # a JSON string is one value, never a list of its characters
                return None
            out[name] = [str(x) for x in loaded]
        else:
            return None
    return out
