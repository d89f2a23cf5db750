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

from pld_optim.artifact import MinedRule
from pld_optim.task import Task, example_id, format_inputs

logger = logging.getLogger(__name__)


class ExplainLabel(dspy.Signature):
    """You distil a labelling policy for a small model. You see one example and its gold label, which is
    correct. First explain briefly why the gold label is right. Then abstract ONE general rule a small
    model can apply to other examples: name the observable cue and the label it implies. Do not mention
    names of specific people, groups, organisations, places or products from this example."""

    task: str = dspy.InputField(desc="what is being classified")
    labels: str = dspy.InputField(desc="all allowed labels")
    example: str = dspy.InputField()
    gold_label: str = dspy.InputField()
    rationale: str = dspy.OutputField(desc="two or three sentences")
    rule: str = dspy.OutputField(desc="one sentence, e.g. 'If <general cue>, answer <label>.'")


def mine_rules(
    examples: list[dspy.Example],
    task: Task,
    teacher: dspy.LM,
    *,
    num_threads: int = 4,
    checkpoint: Path | None = None,
    progress: bool = False,
) -> list[MinedRule]:
    done = _read_checkpoint(checkpoint)
    todo = [ex for ex in examples if example_id(ex, task.input_fields) not in done]
    if done:
        logger.info("mine: resuming, %d of %d examples already mined", len(examples) - len(todo), len(examples))
    predictor = dspy.Predict(ExplainLabel)
    description = task.signature.instructions
    labels = ", ".join(task.labels)
    lock = threading.Lock()

    def mine_one(example: dspy.Example) -> MinedRule:
        eid = example_id(example, task.input_fields)
        gold = str(example[task.label_field])
        try:
            with dspy.context(lm=teacher):
                out = predictor(task=description, labels=labels, example=format_inputs(example, task.input_fields),
                                gold_label=gold)
            rule = " ".join(str(out.rule or "").split())
            error = None if rule else "teacher returned no rule"
            if rule and len(rule.split()) < 3:
                error = f"the rule {rule!r} is too short to be a rule"
            if rule and degenerate(rule):
                error = "the rule repeats itself (a looping teacher)"
            if rule and restates(rule, format_inputs(example, task.input_fields)):
                error = "the rule restates the example instead of generalising it"
            mined = MinedRule(example_id=eid, gold=gold, rationale=str(out.rationale or "").strip(), rule=rule,
                              error=error)
        except Exception as exc:  # noqa: BLE001 - a failed teacher call is counted, never fatal
            mined = MinedRule(example_id=eid, gold=gold, error=f"{type(exc).__name__}: {exc}"[:500])
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


_CONTENT = re.compile(r"[a-z0-9']{4,}")


def restates(rule: str, example_text: str, threshold: float = 0.8) -> bool:
    """A 'rule' whose content words almost all come from the example is a copy, not an abstraction."""
    words = set(_CONTENT.findall(rule.lower()))
    if len(words) < 3:
        return False
    return len(words & set(_CONTENT.findall(example_text.lower()))) / len(words) >= threshold


def degenerate(text: str, min_words: int = 16, min_distinct: float = 0.45) -> bool:
    """Small teachers loop ("It is about gender. It is about gender. ..."); such text is no rule."""
    words = text.lower().split()
    return len(words) >= min_words and len(set(words)) / len(words) < min_distinct


def _read_checkpoint(path: Path | None) -> dict[str, MinedRule]:
    """Successful rules only: a failed example is tried again on resume."""
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
