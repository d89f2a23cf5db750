"""What PLD needs to know about the user's program and data, checked before any LM call.

Every check here fails with a message that names the row, field or setting to fix: a compile that
spends teacher money and then dies on row 812 is the failure this module exists to prevent.
"""

from __future__ import annotations

import hashlib
import json
import re
import typing
import unicodedata
from dataclasses import dataclass

import dspy


@dataclass
class Task:
    predictor_name: str
    predictor: dspy.Predict
    label_field: str
    labels: list[str]
    input_fields: list[str]

    @property
    def signature(self) -> type[dspy.Signature]:
        return self.predictor.signature


def _literal_values(annotation) -> list[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(v) for v in typing.get_args(annotation)]
    return None


def resolve_task(program: dspy.Module, labels: list[str] | None = None, label_field: str | None = None) -> Task:
    """Find the one classification predictor and its label set (a Literal output field or `labels=`)."""
    named = list(program.named_predictors())
    if not named:
        raise ValueError("PLD: the program has no dspy.Predict inside it; pass e.g. dspy.Predict('text -> label').")
    if len(named) > 1:
        names = ", ".join(n for n, _ in named)
        raise ValueError(
            f"PLD supports programs with one predictor (a classifier such as dspy.Predict or "
            f"dspy.ChainOfThought); this program has {len(named)}: {names}. Compile each classifier separately."
        )
    name, predictor = named[0]
    sig = predictor.signature
    outputs = {k: v for k, v in sig.output_fields.items() if k != "reasoning"}
    if label_field is None:
        literal = [k for k, v in outputs.items() if _literal_values(v.annotation)]
        if len(literal) == 1:
            label_field = literal[0]
        elif len(outputs) == 1:
            label_field = next(iter(outputs))
        else:
            raise ValueError(
                f"PLD: cannot tell which output field holds the label among {list(outputs)}; pass label_field=."
            )
    if label_field not in outputs:
        raise ValueError(f"PLD: label_field={label_field!r} is not an output field of {list(outputs)}.")
    declared = _literal_values(outputs[label_field].annotation)
    if labels is None:
        if declared is None:
            raise ValueError(
                f"PLD: output field {label_field!r} is not a Literal[...] type, so the label set is unknown; "
                "pass labels=[...] or annotate the field with typing.Literal."
            )
        labels = declared
    labels = [str(x) for x in labels]
    if len(set(labels)) < 2:
        raise ValueError(f"PLD: a classification task needs at least two distinct labels, got {labels}.")
    if declared is not None and set(labels) != set(declared):
        raise ValueError(f"PLD: labels={labels} differ from the Literal of field {label_field!r}: {declared}.")
    return Task(name, predictor, label_field, labels, list(sig.input_fields))


def example_id(example: dspy.Example, input_fields: list[str]) -> str:
    """Stable across runs and machines: an explicit `id` field, else a hash of the inputs."""
    explicit = example.get("id") if hasattr(example, "get") else None
    if explicit is not None:
        return str(explicit)
    payload = json.dumps({k: str(example.get(k)) for k in input_fields}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def format_inputs(example: dspy.Example, input_fields: list[str]) -> str:
    return "\n".join(f"{k}: {example.get(k)}" for k in input_fields)


def validate_examples(examples, task: Task, split: str, *, allow_empty: bool = False) -> list[dspy.Example]:
    """Check rows up front; unknown labels and missing fields are errors, never dropped rows."""
    examples = list(examples or [])
    if not examples and not allow_empty:
        raise ValueError(f"PLD: the {split} split is empty.")
    seen: dict[str, int] = {}
    for i, ex in enumerate(examples):
        if not isinstance(ex, dspy.Example):
            raise TypeError(f"PLD: {split} row {i} is a {type(ex).__name__}, expected dspy.Example.")
        missing = [f for f in (*task.input_fields, task.label_field) if ex.get(f) in (None, "")]
        if missing:
            raise ValueError(f"PLD: {split} row {i} has no value for field(s) {missing}.")
        gold = str(ex.get(task.label_field))
        if gold not in task.labels:
            raise ValueError(
                f"PLD: {split} row {i} has label {gold!r} in field {task.label_field!r}, "
                f"which is not one of {task.labels}."
            )
        eid = example_id(ex, task.input_fields)
        if eid in seen:
            raise ValueError(f"PLD: {split} rows {seen[eid]} and {i} share the id {eid!r}; ids must be unique.")
        seen[eid] = i
    return [ex if ex._input_keys else ex.with_inputs(*task.input_fields) for ex in examples]


def _edges(text: str) -> str:
    """NFKC, then strip whitespace, quotes, brackets and closing punctuation from both ends only:
    characters inside a label (`c#`, `c++`, `中性`) are never dropped."""
    text = unicodedata.normalize("NFKC", text).strip()
    while text and (unicodedata.category(text[0])[0] in "PZ" or text[0] in "`*"):
        text = text[1:]
    while text and (unicodedata.category(text[-1])[0] in "PZ" or text[-1] in "`*"):
        text = text[:-1]
    return text


def _spaced(label: str) -> str:
    """`NotMentioned`, `not-mentioned`, `not_mentioned` -> `not mentioned`."""
    return " ".join(re.sub(r"(?<=[a-z])(?=[A-Z])|[-_\s]+", " ", label).split())


def normalize_label(raw, labels: list[str]) -> str | None:
    """An answer maps to a label only when it names exactly one label unambiguously; anything else is
    None (counted invalid). Tolerated: surrounding whitespace, quotes and punctuation, case (unless two
    labels differ only by case), `NotMentioned` written `not mentioned`, and one label named inside a
    sentence as a whole word."""
    if raw is None:
        return None
    text = str(raw).strip()
    if text in labels:
        return text
    fold = {}
    for label in labels:
        fold.setdefault(label.casefold(), []).append(label)
    caseless = all(len(v) == 1 for v in fold.values())  # labels that differ only by case: exact only
    core = _edges(text)
    for candidate in (text, core):  # `C#` is the label c#, not c with its '#' stripped
        if candidate in labels:
            return candidate
        if caseless and candidate.casefold() in fold:
            return fold[candidate.casefold()][0]
    spaced = {}
    for label in labels:
        spaced.setdefault(_spaced(label).casefold() if caseless else _spaced(label), []).append(label)
    key = _spaced(core).casefold() if caseless else _spaced(core)
    if len(spaced.get(key, [])) == 1:
        return spaced[key][0]
    # Exactly one label named as a whole word (no letter or digit on either side); longer labels first,
    # so "anti-stereotype" is not also read as "stereotype".
    remaining = unicodedata.normalize("NFKC", text)
    remaining = remaining.casefold() if caseless else remaining
    hits = []
    for label in sorted(labels, key=len, reverse=True):
        needle = label.casefold() if caseless else label
        pattern = re.compile(rf"(?<!\w){re.escape(needle)}(?!\w)")
        if pattern.search(remaining):
            hits.append(label)
            remaining = pattern.sub(" ", remaining)
    return hits[0] if len(hits) == 1 else None
