"""Stage 1, mining: the teacher sees a train example with its gold label and writes a rationale and one rule.

Two ways to choose what the teacher explains:

- `label` (the paper's): examples sampled so that every label is reached; the teacher explains why the
  gold label fits.
- `contrastive` (the default): the student first answers the train sample zero-shot, and the teacher is
  shown the examples it gets wrong, each with its gold label *and the student's answer*; it explains why
  the gold label and not that answer is right and writes a rule naming the cue that separates them. The
  student's errors are few and systematic, so the teacher's budget goes where a rule can change an
  answer; labels the student never misses still get label-conditioned examples, so every label is covered.

One call per example does the rationale and the rule (the paper's cost argument). Calls run in DSPy's
ParallelExecutor so thread-local settings reach every worker; a failure is recorded on its MinedRule
instead of stopping the run, and each rule is appended to the checkpoint as it arrives, so an interrupted
compile resumes without paying for the same example twice.
"""

from __future__ import annotations

import logging

import dspy
from dspy.utils.parallelizer import ParallelExecutor

from pld_optim.evaluation.scoring import INVALID
from pld_optim.evaluation.task import example_id, format_inputs
from pld_optim.files import JsonlLog
from pld_optim.lm.adapter import rule_format
from pld_optim.records import MinedRule, Refusal, StageResult
from pld_optim.stages.context import StageContext
from pld_optim.stages.gates import Gate
from pld_optim.stages.rule_form import first_answer, first_sentence
from pld_optim.stages.worked_examples import LABEL_DEMOS, MISTAKE_DEMOS

logger = logging.getLogger(__name__)

_ABSTRACT = ("The rule names that general kind of thing and the label; it never names a specific person, group, "
             "nationality, religion, organisation or place.")


class ExplainLabel(dspy.Signature):
    __doc__ = ("You write labelling rules for a small model. You see one example and its correct label. First "
               "explain why the correct label fits this example better than the other labels: name what kind of "
               "thing each important person, group, place or word of the example is. Then write ONE general rule "
               "that gives the correct label to every example with the same kind of thing. " + _ABSTRACT)

    task: str = dspy.InputField(desc="what is being classified")
    labels: str = dspy.InputField(desc="all allowed labels")
    example: str = dspy.InputField()
    gold_label: str = dspy.InputField()
    rationale: str = dspy.OutputField(desc="one or two short sentences")
    rule: str = dspy.OutputField(desc="one sentence that starts with 'If' and ends with the label")


class ExplainMistake(dspy.Signature):
    __doc__ = ("You write labelling rules for a small model. It gave this example a wrong label. First explain "
               "why the correct label is right and the model's answer is wrong: name the part of the example "
               "that decides between the two labels and what kind of thing it is. Then write ONE general rule "
               "that gives the correct label to every example with that kind of thing, even where the wrong "
               "label looks likely. " + _ABSTRACT)

    task: str = dspy.InputField(desc="what is being classified")
    labels: str = dspy.InputField(desc="all allowed labels")
    example: str = dspy.InputField()
    gold_label: str = dspy.InputField(desc="the correct label")
    wrong_label: str = dspy.InputField(desc="the label the small model gave")
    rationale: str = dspy.OutputField(desc="one or two short sentences")
    rule: str = dspy.OutputField(desc="one sentence that starts with 'If' and ends with the correct label")


class MineResult(StageResult):
    mined: list[MinedRule]

    def good(self) -> list[MinedRule]:
        return [m for m in self.mined if m.ok]

    def usable(self, n_examples: int) -> MineResult:
        """This result, or an error that says why the teacher gave no rule to build on."""
        if self.good():
            return self
        reasons = "; ".join(sorted({r.reason for r in self.refusals}))[:300] or "none"
        first = next((m.error for m in self.mined if m.error), "none")
        raise RuntimeError(f"PLD: the teacher produced no usable rule for {n_examples} examples "
                           f"({len(self.refusals)} refused by the quality gates: {reasons}); first error: "
                           f"{first}. Use a stronger teacher or more examples.")


def mine(ctx: StageContext, examples: list[dspy.Example], *, mistakes: dict[str, str] | None = None,
         checkpoint: JsonlLog | None = None) -> MineResult:
    """One rule per example. `mistakes` maps example ids to the student's wrong answer: those examples are
    mined contrastively, the others label-conditioned. A refused rule is kept with its refusal."""
    task, teacher, gate = ctx.task, ctx.teacher, ctx.gate
    mistakes = mistakes or {}
    # Kept rules of an interrupted compile, gated again: an earlier version's checkpoint may hold a rule
    # today's gates refuse (the gates cost no call). Such an example is mined again, as a refused one is
    # (`MinedRule.ok`); its record's last line counts, so a fresh refusal after a kept rule is redone too.
    last = {m.example_id: m for m in (checkpoint.read() if checkpoint else [])}
    done = {eid: m for eid, m in last.items()
            if m.ok and _refusal(m, ctx.inputs.get(eid, m.inputs), gate) is None}
    regated = sum(m.ok for m in last.values()) - len(done)
    if regated:
        logger.info("mine: %d checkpoint rules are refused by today's gates; their examples are mined again", regated)
    ids = [example_id(ex, task.input_fields) for ex in examples]
    # One signature's calls after the other: consecutive calls then share the system prompt and worked
    # examples, whose KV state the embedded engine keeps, so each call prefills only its own example.
    todo = sorted((ex for ex, eid in zip(examples, ids) if eid not in done),
                  key=lambda ex: example_id(ex, task.input_fields) in mistakes)
    if done:
        logger.info("mine: resuming, %d of %d examples already mined", len(examples) - len(todo), len(examples))
    by_label = dspy.Predict(ExplainLabel)
    by_label.demos = LABEL_DEMOS
    by_mistake = dspy.Predict(ExplainMistake)
    by_mistake.demos = MISTAKE_DEMOS
    context = {"task": task.signature.instructions, "labels": ", ".join(task.labels)}

    def mine_one(example: dspy.Example) -> MinedRule:
        eid = example_id(example, task.input_fields)
        gold, wrong = str(example[task.label_field]), mistakes.get(eid)
        shown = format_inputs(example, task.input_fields)
        record = MinedRule(example_id=eid, gold=gold, inputs=shown, predicted=wrong)
        try:
            with dspy.context(lm=teacher):
                if wrong is None:
                    out = by_label(**context, example=shown, gold_label=gold,
                                   config=rule_format(teacher, ExplainLabel, "rule", gold))
                else:
                    out = by_mistake(**context, example=shown, gold_label=gold, wrong_label=wrong,
                                     config=rule_format(teacher, ExplainMistake, "rule", gold))
        except Exception as exc:  # noqa: BLE001 - a failed teacher call is counted, never fatal
            record.error = f"{type(exc).__name__}: {exc}"[:500]
        else:
            record.rationale = str(out.rationale or "").strip()
            # Small teachers keep writing after the rule ("In this case, ..."): the rule is its first sentence.
            record.rule = first_answer(first_sentence(" ".join(str(out.rule or "").split())), gold)
            record.refusal = _refusal(record, shown, gate) if record.rule else None
            record.error = None if record.rule else "teacher returned no rule"
        if checkpoint is not None:
            checkpoint.append(record)
        return record

    executor = ParallelExecutor(num_threads=ctx.params.num_threads, max_errors=len(todo) + 1,
                                disable_progress_bar=not ctx.progress)
    fresh = {m.example_id: m for m in executor.execute(mine_one, todo) if m is not None}
    results = [done.get(eid) or fresh.get(eid) for eid in ids]
    if any(m is None for m in results):
        raise RuntimeError(f"mine: {sum(m is None for m in results)} examples were not processed (interrupted?)")
    refusals = [m.refusal for m in results if m.refusal is not None]
    failures = sum(m.error is not None for m in results)
    if failures or refusals:
        logger.warning("mine: %d of %d teacher calls gave no rule, the gates refused %d", failures, len(results),
                       len(refusals))
    return MineResult(mined=results, refusals=refusals, failures=failures)


def _refusal(mined: MinedRule, shown: str, gate: Gate) -> Refusal | None:
    verdict = gate.check(mined.rule, [shown], label=mined.gold, whose="its example's")
    return verdict.refusal("mine", mined.example_id, mined.rule) if verdict else None


def contrastive_sample(examples: list[dspy.Example], outcomes: list, labels: list[str], n: int,
                       rng) -> tuple[list[dspy.Example], dict[str, str]]:
    """At most `n` of `examples` to mine (`outcomes`: the student's zero-shot answers to them, in order),
    and the student's wrong answer for each chosen example it got wrong.

    Every label first gets a share (its mistakes, else examples it got right), so no label is left without
    a rule; the rest of the budget goes to mistakes, one confusion (gold, answer) after another, so the most
    frequent confusion does not take it all; examples it got right fill what is left.
    """
    pairs: dict[tuple[str, str], list] = {}
    right: dict[str, list] = {label: [] for label in labels}
    for k in rng.sample(range(len(examples)), len(examples)):
        outcome = outcomes[k]
        if outcome.correct:
            right[outcome.gold].append((examples[k], outcome))
        else:
            pairs.setdefault((outcome.gold, outcome.pred or INVALID), []).append((examples[k], outcome))
    chosen: dict[str, tuple] = {}
    share = max(1, min(2, n // (2 * len(labels))))
    for label in labels:
        wrong = [item for (gold, _), items in sorted(pairs.items()) if gold == label for item in items]
        chosen.update((o.example_id, (ex, o)) for ex, o in (wrong + right[label])[:min(share, n - len(chosen))])
    queues = [items for _, items in sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0]))]
    while len(chosen) < n and any(item[1].example_id not in chosen for queue in queues for item in queue):
        for queue in queues:
            fresh = [item for item in queue if item[1].example_id not in chosen]
            if fresh and len(chosen) < n:
                chosen[fresh[0][1].example_id] = fresh[0]
    rest = [[item for item in right[label] if item[1].example_id not in chosen] for label in labels]
    interleaved = [queue[k] for k in range(max(map(len, rest), default=0)) for queue in rest if k < len(queue)]
    chosen.update((o.example_id, (ex, o)) for ex, o in interleaved[: max(0, n - len(chosen))])
    mistakes = {eid: o.pred or INVALID for eid, (_, o) in chosen.items() if not o.correct}
    return [ex for ex, _ in chosen.values()], mistakes
