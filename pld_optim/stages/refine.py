"""Stage 3, refinement: the student runs with the rules on train examples, and the teacher repairs.

- `corrective` (the default): each frequent confusion (gold, answered) of the current prompt gets one
  corrective rule. The teacher sees the confused examples (the failures) and examples the student rightly
  answered with that label (the successes, so the rule does not take them too), and names the cue that
  separates them. Corrective rules join the candidates the search chooses from; the confused examples
  become their demo candidates. A round adds its rules to the prompt the next round runs.
- `rewrite` (the paper's): the teacher sees failures and successes and rewrites the whole list; a revision
  is kept only while dev macro F1 improves.

Every iteration is recorded, kept or not, and every teacher text passes the quality gates.
"""

from __future__ import annotations

import logging
import random

import dspy

from pld_optim.evaluation.scoring import Outcome
from pld_optim.lm.adapter import rule_format
from pld_optim.records import RefineIteration, Refusal, Selection
from pld_optim.rules import Confusion, Prompt, Rule, prompt_of
from pld_optim.stages.context import StageContext
from pld_optim.stages.feedback import RefineResult, describe, frequent_confusions
from pld_optim.stages.gates import Verdict
from pld_optim.stages.rewrite import rewrite_rules
from pld_optim.stages.rule_form import first_answer, first_sentence

logger = logging.getLogger(__name__)


class CorrectConfusion(dspy.Signature):
    """A small model labels examples by following the numbered rules. It gives the failures below the wrong
    label, and it labels the successes right. Find what all the failures share that the successes lack, and
    write ONE general rule that gives the failures their correct label. Name that cue as a general kind of
    thing; never name a specific person, group, nationality, religion, organisation or place."""

    task: str = dspy.InputField(desc="what is being classified")
    labels: str = dspy.InputField(desc="all allowed labels")
    rules: list[str] = dspy.InputField(desc="the rules the model follows now")
    gold_label: str = dspy.InputField(desc="the correct label of every failure")
    wrong_label: str = dspy.InputField(desc="the label the model gave the failures")
    failures: str = dspy.InputField(desc="examples the model labelled wrong_label; their label is gold_label")
    successes: str = dspy.InputField(desc="examples the model rightly labelled wrong_label")
    rationale: str = dspy.OutputField(desc="two sentences")
    rule: str = dspy.OutputField(desc="one sentence that starts with 'If' and ends with the correct label")


def refine(ctx: StageContext, rules: list[Rule], train: list[dspy.Example], dev: list[dspy.Example]) -> RefineResult:
    if ctx.params.refinement == "rewrite":
        return rewrite_rules(ctx, rules, train, dev)
    return correct_confusions(ctx, rules, train, dev)


def correct_confusions(ctx: StageContext, rules: list[Rule], train: list[dspy.Example],
                       dev: list[dspy.Example]) -> RefineResult:
    """Rounds of corrective rules. The prompt a round runs is the rules with each one's first worked example
    when demos are on (the shape the search will ship); dev is not scored here, the search scores what it
    keeps."""
    rng = random.Random(ctx.params.seed)
    current, added, refusals, failures = list(rules), [], [], 0
    history = [RefineIteration(iteration=0, rules=[r.text for r in current], note="clustered rules")]
    for iteration in range(1, ctx.params.max_refine_iters + 1):
        outcomes = ctx.scorer.outcomes(illustrated(current, ctx.params.max_demos, ctx.task.label_field), train)
        wrong = sum(not o.correct for o in outcomes)
        history[-1].note += f"; train errors {wrong}/{len(outcomes)}"
        pairs = frequent_confusions(outcomes, min_count=2)[: ctx.params.max_corrections]
        if not pairs:
            history[-1].note += ", no confusion left"
            break
        new = []
        for (gold, answered), failed in pairs:
            right = [o for o in outcomes if o.correct and o.gold == answered]
            rule, refused = _corrective_rule(
                ctx, current, gold, answered, rng.sample(failed, min(ctx.params.n_failures, len(failed))),
                rng.sample(right, min(ctx.params.n_successes, len(right))), f"C{len(added) + len(new) + 1}", iteration)
            refusals += refused
            failures += rule is None and not refused
            new += [rule] if rule is not None else []
        history.append(RefineIteration(
            iteration=iteration, rules=[r.text for r in new], accepted=bool(new),
            n_failures=sum(len(r.corrects.example_ids) for r in new),
            note=("corrective rules for " + ", ".join(f"{r.corrects.gold} answered {r.corrects.predicted}"
                                                      for r in new)) if new else "no corrective rule passed the gates"))
        if not new:
            break
        current, added = current + new, added + new
    return RefineResult(rules=current, added=added, history=history, refusals=refusals, failures=failures)


def illustrated(rules: list[Rule], max_demos: int, label_field: str) -> Prompt:
    """The rules, each with its first worked example while `max_demos` allows."""
    selection = [Selection(rule_id=r.id, demos=[0] if r.examples and k < max_demos else [])
                 for k, r in enumerate(rules)]
    return prompt_of(rules, selection, label_field)


# A corrective rule the gates refuse gets one more teacher call (a new rollout): on the quickstart the 1.5B
# teacher wrote "..., answer gender." for "profession answered gender" in both confusions, and refinement
# added nothing.
ATTEMPTS = 2


def _corrective_rule(ctx: StageContext, current: list[Rule], gold: str, wrong: str, failed: list[Outcome],
                     succeeded: list[Outcome], rule_id: str, iteration: int) -> tuple[Rule | None, list[Refusal]]:
    source = f"iteration {iteration}: {gold} answered {wrong}"
    shown = [ctx.inputs[o.example_id] for o in failed + succeeded if o.example_id in ctx.inputs]
    refusals = []
    for attempt in range(ATTEMPTS):
        out = _ask_for_correction(ctx, current, gold, wrong, failed, succeeded, attempt)
        if out is None:
            return None, refusals
        text = first_answer(first_sentence(" ".join(str(out.rule or "").split())), gold)
        if not text:  # no rule is a failed call, not a refusal: the next rollout may write one
            continue
        verdict = ctx.gate.check(text, shown, copied_from=[CorrectConfusion.__doc__], label=gold, whose="the correct")
        if verdict is None:
            verdict = _repeats(text, current)
        if verdict is None:
            break
        refusals.append(verdict.refusal("refine", source + (f" (attempt {attempt + 1})" if attempt else ""), text))
    else:
        return None, refusals
    ids = [o.example_id for o in failed]
    return Rule(id=rule_id, text=text, label=gold, support=ids, cluster_size=len(ids),
                rationales=[str(out.rationale or "").strip()] if out.rationale else [],
                corrects=Confusion(gold=gold, predicted=wrong, example_ids=ids),
                examples=[ctx.demo_pool[i] for i in ids if i in ctx.demo_pool][: ctx.params.n_demo_candidates],
                stage="corrective", origin=f"corrective (refine {iteration}: {gold} answered {wrong})"), refusals


def _repeats(text: str, current: list[Rule]) -> Verdict | None:
    """A corrective rule that says what a rule of the prompt says already adds nothing but a second copy of
    it (the quickstart compare shipped one rule twice)."""
    same = next((r.id for r in current if " ".join(r.text.lower().split()) == " ".join(text.lower().split())), None)
    return Verdict("duplicate", f"repeats rule {same} word for word") if same else None


def _ask_for_correction(ctx: StageContext, current: list[Rule], gold: str, wrong: str, failed: list[Outcome],
                        succeeded: list[Outcome], attempt: int):
    """The teacher's answer, or None when the call failed (counted by the caller, never fatal). A retry is a
    new rollout (DSPy's rollout_id, at temperature 1.0), so it is not the cached first answer again."""
    teacher = ctx.teacher if attempt == 0 else ctx.teacher.copy(rollout_id=attempt, temperature=1.0)
    try:
        with dspy.context(lm=teacher):
            return dspy.Predict(CorrectConfusion)(
                task=ctx.task.signature.instructions, labels=", ".join(ctx.task.labels),
                rules=[r.text for r in current], gold_label=gold, wrong_label=wrong,
                failures=describe(failed, ctx), successes=describe(succeeded, ctx),
                config=rule_format(teacher, CorrectConfusion, "rule", gold))
    except Exception as exc:  # noqa: BLE001 - a failed teacher call is counted, never fatal
        logger.warning("refine: corrective rule for %s answered %s failed: %s", gold, wrong, exc)
        return None
