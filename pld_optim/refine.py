"""Stage 3: closed-loop conflict resolution.

The student runs with the current rules on train examples; the teacher sees its failures *and* a sample
of its successes (the paper: without successes, rewrites regress) and returns a revised rule list. A
revision is kept only if dev macro F1 improves; the loop stops at the first revision that does not, as
the paper stops when validation error converges. Every iteration is recorded, accepted or not.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import dspy
import numpy as np

from pld_optim.artifact import RefineIteration, Refusal, Rule
from pld_optim.gates import Gate
from pld_optim.scoring import Outcome, Score
from pld_optim.task import Task, example_id, format_inputs

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


def describe(outcomes: list[Outcome], by_id: dict[str, dspy.Example], task: Task) -> str:
    blocks = []
    for n, o in enumerate(outcomes, 1):
        ex = by_id[o.example_id]
        line = f"[{n}] {format_inputs(ex, task.input_fields)}\ngold: {o.gold}"
        if not o.correct:
            line += f"\npredicted: {o.pred if o.pred is not None else '(no answer: ' + str(o.error) + ')'}"
        blocks.append(line)
    return "\n\n".join(blocks) or "(none)"


def refine_rules(
    rules: list[Rule],
    task: Task,
    *,
    teacher: dspy.LM,
    train: list[dspy.Example],
    evaluate_train: Callable[[list[str]], list[Outcome]],
    evaluate_dev: Callable[[list[str]], Score],
    embed: Callable[[list[str]], np.ndarray],
    gate: Gate,
    inputs: dict[str, str],
    max_iters: int = 2,
    n_failures: int = 20,
    n_successes: int = 20,
    min_delta: float = 0.0,
    seed: int = 0,
    refusals: list[Refusal] | None = None,
) -> tuple[list[Rule], list[RefineIteration], Score]:
    """Return the best rule list, every iteration, and the best dev score.

    Each revised rule passes the quality gates (checked against the examples shown to the teacher);
    refused ones are appended to `refusals`. A revision that is not a list of strings, or that keeps no
    rule, is a failed iteration: never a list of fragments or characters.
    """
    refusals = refusals if refusals is not None else []
    rng = random.Random(seed)
    by_id = {example_id(ex, task.input_fields): ex for ex in train}
    best_rules = rules
    best = evaluate_dev([r.text for r in rules])
    history = [RefineIteration(iteration=0, rules=[r.text for r in rules], dev_macro_f1=best.macro_f1,
                               note="clustered rules")]
    resolver = dspy.Predict(ResolveConflicts)
    for iteration in range(1, max_iters + 1):
        outcomes = evaluate_train([r.text for r in best_rules])
        wrong = [o for o in outcomes if not o.correct]
        right = [o for o in outcomes if o.correct]
        if not wrong:
            history[-1].note += "; no train failures left"
            break
        failures = rng.sample(wrong, min(n_failures, len(wrong)))
        successes = rng.sample(right, min(n_successes, len(right)))
        try:
            with dspy.context(lm=teacher):
                out = resolver(task=task.signature.instructions, labels=", ".join(task.labels),
                               rules=[r.text for r in best_rules], failures=describe(failures, by_id, task),
                               successes=describe(successes, by_id, task))
            if not isinstance(out.revised_rules, list):
                raise ValueError(f"revised_rules is a {type(out.revised_rules).__name__}, not a list")
            revised = []
            shown = [inputs[o.example_id] for o in failures + successes if o.example_id in inputs]
            for text in dict.fromkeys(" ".join(str(t).split()) for t in out.revised_rules if str(t).strip()):
                reason = gate.check(text, shown, copied_from=[ResolveConflicts.__doc__])
                if reason:
                    refusals.append(Refusal(stage="refine", source=f"iteration {iteration}", text=text, reason=reason))
                else:
                    revised.append(text)
            if not revised:
                raise ValueError(f"the gates refused all {len(out.revised_rules)} revised rules")
        except Exception as exc:  # noqa: BLE001
            history.append(RefineIteration(iteration=iteration, rules=[], dev_macro_f1=best.macro_f1,
                                           n_failures=len(failures), n_successes=len(successes), accepted=False,
                                           note=f"teacher call failed: {type(exc).__name__}: {exc}"[:300]))
            break
        candidate = carry_provenance(best_rules, revised, embed, iteration)
        score = evaluate_dev(revised)
        accepted = score.macro_f1 > best.macro_f1 + min_delta
        history.append(RefineIteration(iteration=iteration, rules=revised, dev_macro_f1=score.macro_f1,
                                       n_failures=len(failures), n_successes=len(successes), accepted=accepted,
                                       note=f"train errors {len(wrong)}/{len(outcomes)}"))
        logger.info("refine %d: dev macro F1 %.4f -> %.4f (%s)", iteration, best.macro_f1, score.macro_f1,
                    "kept" if accepted else "rejected, stopping")
        if not accepted:
            break
        best_rules, best = candidate, score
    return best_rules, history, best


def carry_provenance(old: list[Rule], revised: list[str], embed, iteration: int) -> list[Rule]:
    """Map each revised rule to the old rule it most resembles, so support and rationales survive."""
    old_texts = [r.text for r in old]
    vectors = embed(old_texts + revised)
    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    sims = vectors[len(old):] @ vectors[:len(old)].T
    out = []
    for i, text in enumerate(revised):
        j = int(np.argmax(sims[i]))
        parent = old[j]
        unchanged = text == parent.text
        out.append(Rule(
            id=parent.id if unchanged else f"{parent.id}.{iteration}.{i + 1}",
            text=text,
            phrasings=parent.phrasings if unchanged else [],
            support=parent.support, rationales=parent.rationales, cluster_size=parent.cluster_size, label=parent.label,
            origin=parent.origin if unchanged else f"refine {iteration} from {parent.id}",
        ))
    ids = [r.id for r in out]
    for k, r in enumerate(out):  # the same unchanged text twice would give one id twice
        if ids.count(r.id) > 1:
            r.id = f"{r.id}.{iteration}.{k + 1}"
    return out
