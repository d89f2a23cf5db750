"""Refinement as the paper does it: closed-loop conflict resolution by rewriting the whole rule list.

The student runs with the current rules on train examples; the teacher sees its failures *and* a sample
of its successes (the paper: without successes, rewrites regress) and returns a revised list. A revision
is kept only if dev macro F1 improves by more than `min_delta`; the loop stops at the first that does
not, as the paper stops when validation error converges.
"""

from __future__ import annotations

import logging
import random

import dspy
import numpy as np

from pld_optim.records import RefineIteration, Refusal
from pld_optim.rules import Prompt, Rule
from pld_optim.stages.context import StageContext
from pld_optim.stages.feedback import RefineResult, describe

logger = logging.getLogger(__name__)


class ResolveConflicts(dspy.Signature):
    """A small model labels examples by following the numbered rules. Below are cases it got wrong and
    cases it got right with these rules. Find which rules mislead it or conflict, and rewrite the rule
    list so the failures would get their gold label while the successes keep theirs: sharpen or split
    conflicting rules, add a rule for a missed case, drop a rule that misleads. Each rule is one sentence
    that names a general cue and the label it leads to; never name a specific person, group, nationality,
    religion, organisation or place. Return the complete revised list."""

    task: str = dspy.InputField(desc="what is being classified")
    labels: str = dspy.InputField(desc="all allowed labels")
    rules: list[str] = dspy.InputField(desc="current rules, in order")
    failures: str = dspy.InputField(desc="examples the model got wrong: inputs, gold label, predicted label")
    successes: str = dspy.InputField(desc="examples the model got right")
    revised_rules: list[str] = dspy.OutputField(desc="the complete revised rule list, one sentence per rule")


def rewrite_rules(ctx: StageContext, rules: list[Rule], train: list[dspy.Example],
                  dev: list[dspy.Example]) -> RefineResult:
    """A revision that is not a list of strings, or that keeps no rule, is a failed iteration: never a list
    of fragments or characters."""
    rng = random.Random(ctx.params.seed)
    best_rules, refusals, failures = rules, [], 0
    best = ctx.scorer.score(Prompt(rules=[r.text for r in rules]), dev)
    history = [RefineIteration(iteration=0, rules=[r.text for r in rules], dev_macro_f1=best.macro_f1,
                               note="clustered rules")]
    for iteration in range(1, ctx.params.max_refine_iters + 1):
        outcomes = ctx.scorer.outcomes(Prompt(rules=[r.text for r in best_rules]), train)
        wrong = [o for o in outcomes if not o.correct]
        if not wrong:
            history[-1].note += "; no train failures left"
            break
        failed = rng.sample(wrong, min(ctx.params.n_failures, len(wrong)))
        right = [o for o in outcomes if o.correct]
        succeeded = rng.sample(right, min(ctx.params.n_successes, len(right)))
        try:
            revised = _revise(ctx, best_rules, describe(failed, ctx), describe(succeeded, ctx),
                              [ctx.inputs[o.example_id] for o in failed + succeeded if o.example_id in ctx.inputs],
                              iteration, refusals)
        except Exception as exc:  # noqa: BLE001
            failures += 1
            history.append(RefineIteration(iteration=iteration, rules=[], dev_macro_f1=best.macro_f1,
                                           n_failures=len(failed), n_successes=len(succeeded), accepted=False,
                                           note=f"teacher call failed: {type(exc).__name__}: {exc}"[:300]))
            break
        score = ctx.scorer.score(Prompt(rules=revised), dev)
        accepted = score.macro_f1 > best.macro_f1 + ctx.params.min_delta
        history.append(RefineIteration(iteration=iteration, rules=revised, dev_macro_f1=score.macro_f1,
                                       n_failures=len(failed), n_successes=len(succeeded), accepted=accepted,
                                       note=f"train errors {len(wrong)}/{len(outcomes)}"))
        logger.info("refine %d: dev macro F1 %.4f -> %.4f (%s)", iteration, best.macro_f1, score.macro_f1,
                    "kept" if accepted else "rejected, stopping")
        if not accepted:
            break
        best_rules, best = carry_provenance(best_rules, revised, ctx.embed, iteration), score
    return RefineResult(rules=best_rules, history=history, score=best, refusals=refusals, failures=failures)


def _revise(ctx: StageContext, rules: list[Rule], failures: str, successes: str, shown: list[str], iteration: int,
            refusals: list[Refusal]) -> list[str]:
    with dspy.context(lm=ctx.teacher):
        out = dspy.Predict(ResolveConflicts)(task=ctx.task.signature.instructions, labels=", ".join(ctx.task.labels),
                                             rules=[r.text for r in rules], failures=failures, successes=successes)
    if not isinstance(out.revised_rules, list):
        raise ValueError(f"revised_rules is a {type(out.revised_rules).__name__}, not a list")
    revised = []
    for text in dict.fromkeys(" ".join(str(t).split()) for t in out.revised_rules if str(t).strip()):
        verdict = ctx.gate.check(text, shown, copied_from=[ResolveConflicts.__doc__])
        if verdict:
            refusals.append(verdict.refusal("refine", f"iteration {iteration}", text))
        else:
            revised.append(text)
    if not revised:
        raise ValueError(f"the gates refused all {len(out.revised_rules)} revised rules")
    return revised


def carry_provenance(old: list[Rule], revised: list[str], embed, iteration: int) -> list[Rule]:
    """Map each revised rule to the old rule it most resembles, so support, rationales and demo
    candidates survive."""
    vectors = embed([r.text for r in old] + revised)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = vectors[len(old):] @ vectors[:len(old)].T
    out = []
    for i, text in enumerate(revised):
        parent = old[int(np.argmax(sims[i]))]
        unchanged = text == parent.text
        out.append(parent.model_copy(update={
            "id": parent.id if unchanged else f"{parent.id}.{iteration}.{i + 1}", "text": text,
            "phrasings": parent.phrasings if unchanged else [], "contribution": None,
            "stage": parent.stage if unchanged else "rewrite",
            "origin": parent.origin if unchanged else f"refine {iteration} from {parent.id}"}))
    ids = [r.id for r in out]
    for k, r in enumerate(out):  # the same unchanged text twice would give one id twice
        if ids.count(r.id) > 1:
            r.id = f"{r.id}.{iteration}.{k + 1}"
    return out
