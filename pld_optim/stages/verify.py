"""The data checks every rule before it can ship: does its condition hold for the items of the label it answers?

A rule says "if this holds, answer L". The student follows it as it reads the condition, so the check asks the
student: one constrained yes/no answer per train item, "does this condition hold for this item?", on a
label-balanced sample (the same for every rule, so figures compare and a resumed compile hits DSPy's cache).
A condition that never holds teaches nothing; one that holds mostly for items of other labels is contradicted
by the data, and the student following it would answer L for them. Both are refused with their figures, and
every rule keeps its precision (of the items it holds for, the share that are L) and coverage (of the L items,
the share it holds for) for rules.json and the review.

Only a rule's canonical text is checked, not its other wordings: they restate one condition, each would cost
another n_labels x per_label student calls, and the search already chooses among them on dev F1.

The condition comes first in the user turn and the item after it, so for one rule every call shares the
system message and the condition: the embedded engine re-reads only what differs from its previous prompt
(the longest common token prefix), i.e. the item. Calls run rule by rule, so consecutive prompts share it.
"""

from __future__ import annotations

import logging
import random
import re
from typing import Literal

import dspy
from pydantic import Field

from pld_optim.datasets.sampling import stratified
from pld_optim.evaluation.scoring import Outcome, run_student
from pld_optim.evaluation.task import Task
from pld_optim.records import Record, Refusal, StageResult
from pld_optim.rules import Rule
from pld_optim.stages.context import StageContext
from pld_optim.stages.rule_form import answered_label

logger = logging.getLogger(__name__)

STAGE = "verify"
DATA_GATE = "data"  # the gate name refusals of this stage carry
YES, NO = "yes", "no"
PROBE_RULES = 2  # rules whose answers show whether the student can read conditions at all
MIN_YES_SHARE = 0.05  # a student that says yes (or no) to all but this share cannot tell rules apart


class ConditionHolds(dspy.Signature):
    """Read the condition first, then the item. Answer yes if the condition holds for the item, and no if it
    does not. Judge only what the condition says; do not classify the item."""

    condition: str = dspy.InputField(desc="a statement about the item")
    holds: Literal["yes", "no"] = dspy.OutputField(desc="yes if the condition holds for the item, else no")


class RuleEvidence(Record):
    """How often a rule's condition held on the sample, as the student read it."""

    label: str = Field(description="the label the rule answers")
    condition: str = Field("", description="what the student was asked to check")
    n: int = Field(description="sampled train items the student answered yes or no for")
    holds_for_label: int
    n_label: int = Field(description="answered items whose gold label is `label`")
    holds_for_others: int
    n_others: int = Field(description="answered items of the other labels")
    failed: int = Field(0, description="calls that failed or answered neither yes nor no (counted nowhere else)")
    precision: float | None = Field(None, description="holds_for_label / items it held for; None: it never held")
    coverage: float | None = Field(None, description="holds_for_label / n_label; None: no item of the label")

    @property
    def holds(self) -> int:
        return self.holds_for_label + self.holds_for_others

    def describe(self) -> str:
        """What a reviewer reads beside the rule: 'held for 7 of 8 race items and 2 of 24 others'."""
        return (f"held for {self.holds_for_label} of {self.n_label} {self.label} items and {self.holds_for_others} "
                f"of {self.n_others} others in the train sample")


class VerifyResult(StageResult):
    """`rules`: the rules the data did not refuse, in order; `failures`: student calls that failed."""

    rules: list[Rule]
    figures: dict[str, RuleEvidence] = Field(default_factory=dict, description="rule id -> its evidence")
    sample: list[str] = Field(default_factory=list, description="the train example ids every rule was checked on")
    informative: bool = Field(True, description="False: the student's answers were one-sided, nothing was judged")

    def passed(self, rules: list[Rule]) -> list[Rule]:
        """Of `rules`, those the data did not refuse, in their order, each with its precision and coverage."""
        kept = {r.id for r in self.rules}
        return [with_evidence(r, self.figures.get(r.id)) for r in rules if r.id in kept]


def with_evidence(rule: Rule, evidence: RuleEvidence | None) -> Rule:
    if evidence is None:
        return rule
    return rule.model_copy(update={"precision": evidence.precision, "coverage": evidence.coverage,
                                   "evidence": evidence.describe()})


_IF = r"(?:if|when|whenever|where|wherever|once|in\s+case|provided(?:\s+that)?|as\s+long\s+as)"
_LEADING_IF = re.compile(rf"^\s*{_IF}\b[\s,]*", re.IGNORECASE)
_ARTICLE = r"(?:\s+(?:it|this|that|the|a|an|as|with|to|label|category|class|sentence|item|text|example)\b)*"
# What stands between a condition and the label it answers: "..., answer", "..., then label it as", "... is".
_ANSWER_PHRASE = re.compile(
    r"(?:^|[,;:]\s*|\s+)(?:then\s+)?(?P<phrase>"
    rf"(?:(?:you\s+)?(?:should|must)\s+)?(?:answer|choose|pick|select|output|return|assign|predict|label|classify"
    rf"|mark|tag)\b{_ARTICLE}"
    r"|(?:the\s+)?(?:answer|label|category|class)\s+(?:is|should\s+be|must\s+be|will\s+be)"
    r"|(?:it|this|that)\s*(?:is|'s|’s)|(?P<copula>is|are))\s*[\"'“‘`]*\s*$", re.IGNORECASE)
_QUALIFIER = re.compile(rf"^(?:even|unless|regardless|except|only|but|whether|{_IF})\b", re.IGNORECASE)
_WORDS = re.compile(r"[^\W\d_]+")


def _label_spans(text: str, label: str) -> list[tuple[int, int]]:
    words = re.findall(r"[a-z0-9]+", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", label).lower())
    if not words:
        return []
    pattern = re.compile(r"(?<![\w-])" + r"[\s_-]?".join(map(re.escape, words)) + r"(?![\w-])", re.IGNORECASE)
    return [m.span() for m in pattern.finditer(text)]


def condition_of(rule_text: str, label: str) -> str | None:
    """The condition of "If C, answer L." (also "When C, label it L", "Answer L if C", "Ss with C are L"),
    with a qualifier that follows the label ("..., answer L, even if D"); None when the text states no
    condition on the input that answers `label`."""
    text = " ".join(rule_text.split()).rstrip(" .!;")
    for start, end in reversed(_label_spans(text, label)):
        head, tail = text[:start], text[end:].strip(" \"'”’`),.;:")
        inverted = re.match(rf"^\s*,?\s*{_IF}\b\s*(.+)$", tail, re.IGNORECASE)
        if inverted and _ANSWER_PHRASE.fullmatch(" " + head):
            return _readable(inverted.group(1))
        match = _ANSWER_PHRASE.search(head)
        if match is None:
            continue
        subject = head[:match.start()].strip(" ,;:")
        stripped = _LEADING_IF.sub("", subject)
        if stripped != subject:
            condition = stripped
        elif match.group("copula"):
            condition = f"the item matches this description: {subject[:1].lower()}{subject[1:]}"
        else:
            continue
        if tail and _QUALIFIER.match(tail):
            condition = f"{condition}, {tail}"
        return _readable(condition)
    return None


def _readable(condition: str) -> str | None:
    condition = condition.strip(" ,;:")
    return condition if len(_WORDS.findall(condition)) >= 2 else None


def condition_signature(task: Task) -> type[dspy.Signature]:
    """ConditionHolds with the task's input fields after the condition (names and descriptions as the student
    sees them when it classifies), and the task's own text, so "the target" or "the clause" reads as there."""
    clash = sorted({"condition", "holds"} & set(task.input_fields))
    if clash:
        raise ValueError(f"PLD verify: the task's input field {clash[0]!r} has the name of a field of the "
                         "condition check (condition, holds); rename that input field")
    signature = ConditionHolds
    for index, (name, field) in enumerate(task.signature.input_fields.items(), start=1):
        signature = signature.insert(index, name, field, field.annotation)
    task_text = " ".join(task.signature.instructions.split())
    return signature.with_instructions(f"{ConditionHolds.instructions}\n\nThe items come from this task: {task_text}")


def balanced_sample(train: list[dspy.Example], label_field: str, per_label: int,
                    rng: random.Random) -> list[dspy.Example]:
    """`per_label` items of each label (all of a label with fewer), drawn by the one stratified sampler."""
    labels = {str(ex[label_field]) for ex in train}
    drawn = stratified(train, label_field, per_label * len(labels), rng)
    taken: dict[str, int] = {}
    sample = []
    for ex in drawn:
        label = str(ex[label_field])
        if taken.get(label, 0) < per_label:
            taken[label] = taken.get(label, 0) + 1
            sample.append(ex)
    short = sorted(label for label in labels if taken.get(label, 0) < per_label)
    if short:
        logger.warning("verify: fewer than %d train items of %s; rules are checked on what there is",
                       per_label, ", ".join(short))
    return sample


def verify_rules(ctx: StageContext, rules: list[Rule], train: list[dspy.Example], *, per_label: int = 8,
                 rng: random.Random | None = None, min_precision: float = 0.5) -> VerifyResult:
    """Every rule's evidence on one label-balanced train sample; a rule whose condition cannot be read, never
    holds, or holds with precision below `min_precision` (0.5: mostly for other labels) is refused.

    A student that answers yes (or no) to nearly every condition cannot tell one rule from another: the
    embedded 1.5B answered no to 316 of 320 checks, true label definitions included (benchmarks/data_check.py).
    So the first PROBE_RULES rules' answers are looked at first; when they are that one-sided the check stops,
    says so, and refuses nothing it would have judged (`informative=False`)."""
    if per_label < 1:
        raise ValueError(f"PLD verify: per_label={per_label!r} must be at least 1")
    if not 0 <= min_precision <= 1:
        raise ValueError(f"PLD verify: min_precision={min_precision!r} must be between 0 and 1")
    task = ctx.task
    signature = condition_signature(task)
    sample = balanced_sample(train, task.label_field, per_label, rng or random.Random(ctx.params.seed))
    ids = [ctx.example_id(ex) for ex in sample]
    logger.info("verify: %d rules x %d train items (%d per label, %d labels) = %d student calls", len(rules),
                len(sample), per_label, len({str(ex[task.label_field]) for ex in sample}), len(rules) * len(sample))
    readable, refusals = [], []
    for rule in rules:
        label = rule.label or answered_label(rule.text, task.labels)
        condition = condition_of(rule.text, label) if label else None
        if condition is None:
            refusals.append(_refusal(rule, "states no condition the data can check (a rule reads 'If <condition>, "
                                           "answer <label>.')" if label else "answers no label"))
        else:
            readable.append((rule, label, condition))
    figures: dict[str, RuleEvidence] = {}
    for n, (rule, label, condition) in enumerate(readable, 1):
        figures[rule.id] = _evidence(_ask(ctx, signature, condition, sample, label), label, condition)
        if n == min(PROBE_RULES, len(readable)) and not _informative(list(figures.values())):
            answered = sum(e.n for e in figures.values())
            logger.warning("verify: the student answered yes to %d of %d condition checks: it cannot tell one rule "
                           "from another, so the rules are kept unchecked (verify_per_label=0 skips the check)",
                           sum(e.holds for e in figures.values()), answered)
            return VerifyResult(rules=[r for r, _, _ in readable], refusals=refusals, sample=ids, informative=False,
                                failures=sum(e.failed for e in figures.values()))
    kept = []
    for rule, _, _ in readable:
        reason = _contradiction(figures[rule.id], min_precision)
        if reason:
            refusals.append(_refusal(rule, reason))
            logger.info("verify: refused rule %s: %s", rule.id, reason)
        else:
            kept.append(rule)
    return VerifyResult(rules=kept, figures=figures, refusals=refusals, sample=ids,
                        failures=sum(e.failed for e in figures.values()))


def _informative(evidence: list[RuleEvidence]) -> bool:
    answered, yes = sum(e.n for e in evidence), sum(e.holds for e in evidence)
    return not answered or MIN_YES_SHARE <= yes / answered <= 1 - MIN_YES_SHARE


def _ask(ctx: StageContext, signature: type[dspy.Signature], condition: str, sample: list[dspy.Example],
         label: str) -> list[Outcome]:
    """One constrained yes/no per item, threaded and with failures kept per item (run_student); the gold
    of an item is "yes" exactly when it is of `label`."""
    fields = ctx.task.input_fields
    checker = Task(predictor_name="holds", predictor=dspy.Predict(signature), label_field="holds", labels=[YES, NO],
                   input_fields=["condition", *fields])
    items = [dspy.Example(id=ctx.example_id(ex), condition=condition, **{f: ex[f] for f in fields},
                          holds=YES if str(ex[ctx.task.label_field]) == label else NO).with_inputs("condition", *fields)
             for ex in sample]
    student = ctx.scorer.student_lm
    if student is None:
        raise ValueError("PLD verify: the student program has no LM; dspy.configure(lm=...) or predictor.set_lm(...)")
    with dspy.context(adapter=ctx.scorer.adapter, lm=student):
        return run_student(checker.predictor, items, checker, num_threads=ctx.scorer.num_threads,
                           progress=ctx.progress)


def _evidence(outcomes: list[Outcome], label: str, condition: str) -> RuleEvidence:
    """An error or an answer that is neither yes nor no is no evidence either way: it counts in `failed` only."""
    answered = [o for o in outcomes if o.error is None and o.pred in (YES, NO)]
    of_label = [o for o in answered if o.gold == YES]
    others = [o for o in answered if o.gold == NO]
    hl, ho = sum(o.pred == YES for o in of_label), sum(o.pred == YES for o in others)
    return RuleEvidence(label=label, condition=condition, n=len(answered), holds_for_label=hl, n_label=len(of_label),
                        holds_for_others=ho, n_others=len(others), failed=len(outcomes) - len(answered),
                        precision=round(hl / (hl + ho), 4) if hl + ho else None,
                        coverage=round(hl / len(of_label), 4) if of_label else None)


def _contradiction(e: RuleEvidence, min_precision: float) -> str | None:
    if e.n == 0:
        logger.warning("verify: no answer for the condition %r (%d calls failed); the rule is kept unchecked",
                       e.condition, e.failed)
        return None
    if e.holds == 0:
        return (f"its condition never held: for none of {e.n_label} {e.label} items and none of {e.n_others} "
                "others in the train sample")
    if e.precision is not None and e.precision < min_precision:
        return (f"the data contradicts it: its condition held for {e.holds_for_label} of {e.n_label} {e.label} "
                f"items and {e.holds_for_others} of {e.n_others} others (precision {e.precision:.2f}, below "
                f"min_precision {min_precision:g})")
    return None


def _refusal(rule: Rule, reason: str) -> Refusal:
    return Refusal(stage=STAGE, source=rule.id, text=rule.text, reason=reason, gate=DATA_GATE)
