"""What PLD needs to know about the user's program and data, checked before any LM call.

Every check here fails with a message that names the row, field or setting to fix: a compile that
spends teacher money and then dies on row 812 is the failure this module exists to prevent.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass

import dspy

from pld_optim.files import blank
from pld_optim.lm.labels import literal_values

logger = logging.getLogger("pld_optim")


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
    label_field = label_field or _label_field(outputs)
    if label_field not in outputs:
        raise ValueError(f"PLD: label_field={label_field!r} is not an output field of {list(outputs)}.")
    declared = literal_values(outputs[label_field].annotation)
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


def _label_field(outputs: dict) -> str:
    literal = [k for k, v in outputs.items() if literal_values(v.annotation)]
    if len(literal) == 1:
        return literal[0]
    if len(outputs) == 1:
        return next(iter(outputs))
    raise ValueError(f"PLD: cannot tell which output field holds the label among {list(outputs)}; pass label_field=.")


def example_id(example: dspy.Example, input_fields: list[str]) -> str:
    """Stable across runs and machines: an explicit `id` field, else a hash of the inputs."""
    explicit = example.get("id") if hasattr(example, "get") else None
    if explicit is not None:
        return str(explicit)
    payload = json.dumps({k: str(example.get(k)) for k in input_fields}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def content_key(example: dspy.Example, input_fields: list[str]) -> str:
    """A hash of what the student sees (the inputs, whitespace folded): the same item under two ids is the
    same item."""
    payload = json.dumps({k: " ".join(str(example.get(k)).split()) for k in input_fields}, sort_keys=True)
    return hashlib.sha1(payload.encode()).hexdigest()[:16]


def format_inputs(example: dspy.Example, input_fields: list[str]) -> str:
    return "\n".join(f"{k}: {example.get(k)}" for k in input_fields)


def validate_examples(examples, task: Task, split: str, *, allow_empty: bool = False) -> list[dspy.Example]:
    """Check rows up front; unknown labels, missing or blank fields are errors, never dropped rows."""
    examples = list(examples or [])
    if not examples and not allow_empty:
        raise ValueError(f"PLD: the {split} split is empty.")
    seen: dict[str, int] = {}
    for i, ex in enumerate(examples):
        if not isinstance(ex, dspy.Example):
            raise TypeError(f"PLD: {split} row {i} is a {type(ex).__name__}, expected dspy.Example.")
        missing = [f for f in (*task.input_fields, task.label_field) if blank(ex.get(f))]
        if missing:
            raise ValueError(f"PLD: {split} row {i} has no value (or only whitespace) for field(s) {missing}.")
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
    same = duplicates(examples, task.input_fields)
    if same:
        (first, second), *_ = same
        conflicting = sum(str(examples[a][task.label_field]) != str(examples[b][task.label_field]) for a, b in same)
        logger.warning("PLD: %d %s rows repeat the inputs of an earlier row under another id (compared by content; "
                       "first: rows %d and %d)%s; each copy counts again", len(same), split, first, second,
                       f", {conflicting} of them with another label" if conflicting else "")
    return [ex if ex._input_keys else ex.with_inputs(*task.input_fields) for ex in examples]


def duplicates(examples: list[dspy.Example], input_fields: list[str]) -> list[tuple[int, int]]:
    """(earlier row, later row) for each row whose inputs (not id) repeat an earlier row's."""
    first: dict[str, int] = {}
    pairs = []
    for i, ex in enumerate(examples):
        key = content_key(ex, input_fields)
        if key in first:
            pairs.append((first[key], i))
        else:
            first[key] = i
    return pairs


def overlap(splits: dict[str, list[dspy.Example]], input_fields: list[str]) -> dict[str, int]:
    """Examples whose inputs (not ids) occur in two splits, per pair: 'train/dev' -> count. A dev set that
    holds train items scores what the rules were mined from."""
    keys = {name: {content_key(ex, input_fields) for ex in rows} for name, rows in splits.items()}
    names = list(splits)
    counts = {}
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = len(keys[a] & keys[b])
            if shared:
                counts[f"{a}/{b}"] = shared
    return counts


def refuse_overlap(splits: dict[str, list[dspy.Example]], input_fields: list[str], scored: str, *, allow: bool,
                   where: str) -> dict[str, int]:
    """The one refusal of a scored split that holds items of another (compared by content, not id): its
    score would count what the rules were mined or chosen on. Returns the overlapping pairs that involve
    `scored`; with `allow` (pld.allow_overlap) they are a warning instead of an error."""
    shared = {pair: n for pair, n in overlap(splits, input_fields).items() if scored in pair.split("/")}
    if not shared:
        return shared
    others = " and ".join(name for pair in shared for name in pair.split("/") if name != scored)
    counted = f"{max(shared.values())} {scored} examples"
    if not allow:
        raise ValueError(f"{where}: {counted} have the same inputs as {others} examples ({shared}, compared by "
                         f"content, not id): the {scored} score would count examples the rules were mined or chosen "
                         "on. Remove them from one split, or pass allow_overlap=True (YAML: pld.allow_overlap: true) "
                         "to go on anyway.")
    logger.warning("%s: %s share their inputs with %s examples (%s; allow_overlap)", where, counted, others, shared)
    return shared
