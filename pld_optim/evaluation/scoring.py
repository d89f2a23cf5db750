"""Corpus-level scoring of a student: macro F1 over a whole split, never a mean of per-example scores.

`dspy.Evaluate.score` is a per-example average, which cannot express macro F1 (dspy#556, #1891), so we
run `dspy.Evaluate` for its threading, progress and error capture and score its predictions here. An
answer outside the label set counts as wrong for its gold class; an exception is recorded per example.

Macro F1 averages over the labels the split's gold answers contain (`Score.labels_scored`): a declared label
no example has has no F1 (no recall can be measured), and counting it as 0 would cap a perfect student at
(k - 1) / k. The score says what it stands on: `n`, `support` per declared label, `labels_absent`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

import dspy
from pydantic import BaseModel, Field, computed_field
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from pld_optim.evaluation.coverage import stands_on as _stands_on
from pld_optim.evaluation.task import Task, example_id
from pld_optim.lm.labels import normalize_label

logger = logging.getLogger(__name__)

# The one spelling of "no valid answer" (a failed call, or no label in the answer): in confusion matrices,
# confusion counts and what the teacher is shown.
INVALID = "<invalid>"


class Outcome(BaseModel):
    example_id: str
    gold: str
    pred: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def correct(self) -> bool:
        return self.pred == self.gold


class Score(BaseModel):
    macro_f1: float = Field(description="mean F1 over `labels_scored`, the labels present in gold")
    accuracy: float
    per_class_f1: dict[str, float] = Field(description="the labels present in gold only; see `labels_absent`")
    n: int
    failures: int
    invalid: int
    confusion: list[list[int]] = Field(
        default_factory=list, description="rows: gold in label order; columns: the labels, then answers outside them")
    support: dict[str, int] = Field(default_factory=dict, description="gold examples per declared label")

    @computed_field
    @property
    def labels_scored(self) -> list[str]:
        return [label for label, n in self.support.items() if n] if self.support else list(self.per_class_f1)

    @computed_field
    @property
    def labels_absent(self) -> list[str]:
        """Declared labels with no gold example here: left out of macro F1, which cannot tell how they fare."""
        return [label for label, n in self.support.items() if not n]

    def stands_on(self) -> str:
        """What the figure is measured on, for every line that prints one: 'n examples, k of K labels'."""
        return _stands_on(self.support) if self.support else f"{self.n} examples"


def score_outcomes(outcomes: list[Outcome], labels: list[str]) -> Score:
    if not outcomes:
        raise ValueError("cannot score an empty split")
    golds = [o.gold for o in outcomes]
    preds = [o.pred if o.pred in labels else INVALID for o in outcomes]
    support = Counter(golds)
    present = [label for label in labels if support[label]]
    per_class = f1_score(golds, preds, labels=present, average=None, zero_division=0)
    return Score(
        macro_f1=float(per_class.mean()) if present else 0.0,
        accuracy=float(accuracy_score(golds, preds)),
        per_class_f1={label: float(v) for label, v in zip(present, per_class)},
        support={label: support[label] for label in labels},
        n=len(outcomes),
        failures=sum(o.error is not None for o in outcomes),
        invalid=sum(o.error is None and o.pred not in labels for o in outcomes),
        confusion=confusion_matrix(golds, preds, labels=[*labels, INVALID])[: len(labels)].tolist(),
    )


def confusions(outcomes: list[Outcome]) -> Counter[tuple[str, str]]:
    """(gold, answered) -> count over the wrong answers; an answer outside the labels keeps its text, a call
    with no answer is INVALID."""
    return Counter((o.gold, o.pred or INVALID) for o in outcomes if not o.correct)


def check_valid(outcomes: list[Outcome], labels: list[str], where: str, max_invalid_share: float = 0.5) -> Score:
    """The score of `outcomes`, or an error when more than `max_invalid_share` of them are failed calls or
    answers outside the labels: such a figure measures a broken setup (a wrong model name or key, too few
    max_tokens, a program that drops its inputs), not the prompt, and must not end in exit code 0. The error
    names the first failed call's own message, since that (a missing key, an unknown model) is the fix.
    Every command and `PLD.compile` check the student here, so they all say the same."""
    score = score_outcomes(outcomes, labels)
    bad = score.failures + score.invalid
    if score.n and bad / score.n > max_invalid_share:
        first = next((o.error.strip().splitlines()[0][:300] for o in outcomes if o.error and o.error.strip()),
                     None)  # one line: an adapter's parse error runs to a page
        answered = sorted({str(o.pred) for o in outcomes if o.error is None and o.pred not in labels})[:3]
        raise RuntimeError(
            f"{where}: no valid label for {bad} of {score.n} examples ({score.failures} calls failed"
            + (f", the first with {first}" if first else "") + f"; {score.invalid} answers outside the labels "
            f"{labels}" + (f", e.g. {answered}" if answered else "") + f"), more than max_invalid_share="
            f"{max_invalid_share} (YAML: pld.max_invalid_share). Check the student: its model name, key or server "
            "(student.model, student.api_base), its max_tokens, and the program's input fields.")
    return score


def run_student(
    program: dspy.Module,
    examples: list[dspy.Example],
    task: Task,
    *,
    num_threads: int = 1,
    progress: bool = False,
) -> list[Outcome]:
    """One prediction per example; a failure is an Outcome with `error`, never an aborted run."""
    if not examples:
        return []
    def guarded(**inputs):
        # Evaluate cancels the whole run after max_errors; catching here keeps one bad answer local.
        start = time.perf_counter()
        try:
            prediction = program(**inputs)
        except Exception as exc:  # noqa: BLE001 - any student failure is data, not a crash
            prediction = dspy.Prediction(_pld_error=f"{type(exc).__name__}: {exc}"[:500])
        prediction._pld_seconds = time.perf_counter() - start
        return prediction

    def metric(example, prediction):
        return float(_label_of(prediction, task) == str(example[task.label_field]))

    evaluator = dspy.Evaluate(
        devset=examples,
        metric=metric,
        num_threads=num_threads,
        display_progress=progress,
        max_errors=len(examples) + 1,
        provide_traceback=False,
    )
    result = evaluator(guarded)
    outcomes = []
    for example, prediction, _ in result.results:
        error = prediction.get("_pld_error") if isinstance(prediction, dspy.Prediction) else None
        if prediction is None or (isinstance(prediction, dspy.Prediction) and not prediction.keys()):
            error = "no prediction (the call raised inside dspy.Evaluate)"
        outcomes.append(
            Outcome(
                example_id=example_id(example, task.input_fields),
                gold=str(example[task.label_field]),
                pred=None if error else _label_of(prediction, task),
                error=error,
                seconds=getattr(prediction, "_pld_seconds", 0.0),
            )
        )
    return outcomes


def _label_of(prediction, task: Task) -> str | None:
    if prediction is None:
        return None
    raw = prediction.get(task.label_field) if hasattr(prediction, "get") else None
    if raw is None:
        return None
    return normalize_label(raw, task.labels) or str(raw)
