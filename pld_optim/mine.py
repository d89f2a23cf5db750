"""Stage 1: the teacher sees each train example with its gold label and writes a rationale and one rule.

One call per example does both (the paper's cost argument). Calls run in DSPy's ParallelExecutor so
thread-local settings (the teacher LM, the cache) reach every worker, and each failure is recorded on
its MinedRule instead of stopping the run. With a checkpoint file, each rule is appended as it
arrives, so an interrupted compile resumes without paying for the same example twice.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from pathlib import Path

import dspy
from dspy.utils.parallelizer import ParallelExecutor

from pld_optim.artifact import MinedRule, Refusal
from pld_optim.gates import Gate, mentions
from pld_optim.task import Task, example_id, format_inputs

logger = logging.getLogger(__name__)
REFUSED = "refused: "


class ExplainLabel(dspy.Signature):
    """You write labelling rules for a small model. You see one example and its correct label. First explain
    why the correct label fits this example better than the other labels: name what kind of thing each
    important person, group, place or word of the example is. Then write ONE general rule that gives the
    correct label to every example with the same kind of thing. The rule names that general kind and the
    label; it never names a specific person, group, nationality, religion, organisation or place."""

    task: str = dspy.InputField(desc="what is being classified")
    labels: str = dspy.InputField(desc="all allowed labels")
    example: str = dspy.InputField()
    gold_label: str = dspy.InputField()
    rationale: str = dspy.OutputField(desc="two sentences")
    rule: str = dspy.OutputField(desc="one sentence that starts with 'If' and ends with the label")


# Worked examples from unrelated tasks: they show the abstraction (a named team becomes "a sports team", a
# named waiter "a member of the staff") and the rule's shape without a template a small teacher would copy
# ("If <cue>, answer <label>" came back verbatim from a 1.5B teacher). Nothing in them is from user data.
DEMOS = [
    dspy.Example(task="Classify the topic of the news headline.", labels="sports, politics, business",
                 example="headline: Lakers beat Celtics 102-99 in overtime", gold_label="sports",
                 rationale="The Lakers and the Celtics are basketball teams, and 102-99 is a match score. Teams and "
                           "match scores belong to sports, not to politics or business.",
                 rule="If the headline names a sports team or gives a match score, answer sports."),
    dspy.Example(task="Decide whether the restaurant review is about the food or the service.",
                 labels="food, service", example="review: Our waiter Marco forgot our order twice.",
                 gold_label="service",
                 rationale="Marco is a waiter, a member of the staff, and forgetting an order is something the staff "
                           "did. What the staff do is service, not food.",
                 rule="If the review describes what a waiter or another member of the staff did, answer service."),
]


def first_sentence(text: str) -> str:
    """Small teachers keep writing after the rule ("In this case, ..."); the rule is its first sentence."""
    return re.split(r"(?<=[.!?])\s+(?=[A-Z])", text.strip(), maxsplit=1)[0]


def mine_rules(
    examples: list[dspy.Example],
    task: Task,
    teacher: dspy.LM,
    *,
    gate: Gate,
    num_threads: int = 4,
    checkpoint: Path | None = None,
    progress: bool = False,
) -> list[MinedRule]:
    """One rule per example; a rule a gate refuses is kept with `error` set to "refused: <reason>"."""
    done = read_mined(checkpoint)
    todo = [ex for ex in examples if example_id(ex, task.input_fields) not in done]
    if done:
        logger.info("mine: resuming, %d of %d examples already mined", len(examples) - len(todo), len(examples))
    predictor = dspy.Predict(ExplainLabel)
    predictor.demos = DEMOS
    description = task.signature.instructions
    labels = ", ".join(task.labels)
    lock = threading.Lock()

    def mine_one(example: dspy.Example) -> MinedRule:
        eid = example_id(example, task.input_fields)
        gold = str(example[task.label_field])
        shown = format_inputs(example, task.input_fields)
        try:
            with dspy.context(lm=teacher):
                out = predictor(task=description, labels=labels, example=shown, gold_label=gold)
            rule = first_sentence(" ".join(str(out.rule or "").split()))
            reason = gate.check(rule, [shown]) if rule else None
            if rule and not reason and not mentions(rule, gold):
                reason = f"does not name its example's label {gold!r}"
            error = f"{REFUSED}{reason}" if reason else (None if rule else "teacher returned no rule")
            mined = MinedRule(example_id=eid, gold=gold, rationale=str(out.rationale or "").strip(), rule=rule,
                              error=error, inputs=shown)
        except Exception as exc:  # noqa: BLE001 - a failed teacher call is counted, never fatal
            mined = MinedRule(example_id=eid, gold=gold, error=f"{type(exc).__name__}: {exc}"[:500], inputs=shown)
        if checkpoint is not None:
            with lock, checkpoint.open("a", encoding="utf-8") as fh:
                fh.write(mined.model_dump_json() + "\n")
        return mined

    executor = ParallelExecutor(num_threads=num_threads, max_errors=len(todo) + 1, disable_progress_bar=not progress)
    fresh = {m.example_id: m for m in executor.execute(mine_one, todo) if m is not None}
    results = [done.get(eid) or fresh.get(eid) for eid in (example_id(ex, task.input_fields) for ex in examples)]
    missing = [ex for ex, m in zip(examples, results) if m is None]
    if missing:
        raise RuntimeError(f"mine: {len(missing)} examples were not processed (interrupted?)")
    failures = sum(m.error is not None for m in results)
    if failures:
        logger.warning("mine: %d of %d teacher calls gave no rule; they are kept in the log", failures, len(results))
    return results


def read_mined(path: Path | None) -> dict[str, MinedRule]:
    """mined.jsonl's successful rules by example id: a failed example is tried again on resume, and only
    a rule that was kept can support a rule on the review page."""
    if path is None or not path.exists():
        return {}
    done = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            mined = MinedRule.model_validate(json.loads(line))
        except (json.JSONDecodeError, ValueError):
            logger.warning("mine: %s line %d is damaged (an interrupted write?); it will be mined again", path, n)
            continue
        if mined.error is None:
            done[mined.example_id] = mined
    return done


def refusals(mined: list[MinedRule]) -> list[Refusal]:
    return [Refusal(stage="mine", source=m.example_id, text=m.rule, reason=m.error.removeprefix(REFUSED))
            for m in mined if m.error and m.error.startswith(REFUSED)]
