"""Trials PLD's search needs to reach 95% of the best dev macro F1, TPE against random search.

The student is scripted (pld_optim.testing.rule_follower): it applies the first numbered rule whose
cue occurs in the sentence, so its F1 is a known function of which rules are in the prompt, in what
order and in which wording. 12 rules: 6 helpful (one per cue group, each with a weaker and a stronger
wording), 3 that conflict with a helpful rule when placed before it, 3 that are redundant. Each search
runs in memory with no pruning, so "trials" counts full dev evaluations.

    python benchmarks/search_efficiency.py [--seeds 8] [--trials 120]
"""

from __future__ import annotations

import argparse
import logging
import statistics
from typing import Literal

import dspy
import optuna

from pld_optim.adapter import LabelAdapter
from pld_optim.artifact import Rule, render_instructions
from pld_optim.scoring import run_student
from pld_optim.search import SearchConfig, search_rules
from pld_optim.task import resolve_task
from pld_optim.testing import ScriptedEngine, rule_follower

LABELS = ("a", "b", "c", "d", "e", "f", "g")
GROUPS = {  # label -> (weak cue list, strong cue list)
    "a": (["alpha"], ["alpha", "apex"]), "b": (["bravo"], ["bravo", "bolt"]), "c": (["cedar"], ["cedar", "cove"]),
    "d": (["delta"], ["delta", "dune"]), "e": (["ember"], ["ember", "elm"]), "f": (["fjord"], ["fjord", "flint"]),
}


class Classify(dspy.Signature):
    """Label the sentence."""

    sentence: str = dspy.InputField()
    label: Literal[LABELS] = dspy.OutputField()


def build():
    rules = []
    for i, (label, (weak, strong)) in enumerate(GROUPS.items()):
        rules.append(Rule(id=f"H{i}", text=f"If the sentence mentions {' or '.join(weak)}, answer {label}.",
                          phrasings=[f"If the sentence mentions {' or '.join(strong)}, answer {label}."]))
    for i, (label, other) in enumerate([("a", "b"), ("c", "d"), ("e", "f")]):  # conflicts, harmful if first
        rules.append(Rule(id=f"X{i}", text=f"If the sentence mentions {GROUPS[label][1][1]}, answer {other}."))
    for i, label in enumerate(["b", "d", "f"]):  # redundant with the helpful rules' strong wording
        rules.append(Rule(id=f"R{i}", text=f"If the sentence mentions {GROUPS[label][0][0]}, answer {label}."))
    dev = []
    for n in range(84):
        label = LABELS[n % 7]
        cue = "nothing" if label == "g" else GROUPS[label][1][(n // 7) % 2]
        dev.append(dspy.Example(id=str(n), sentence=f"Item {n} the {cue} here", label=label).with_inputs("sentence"))
    return rules, dev


def run(sampler: str, seed: int, trials: int, rules, dev) -> list[float]:
    lm = dspy.LM("local/student", engine=ScriptedEngine(rule_follower(default="g")), cache=False)
    task = resolve_task(dspy.Predict(Classify))

    def evaluate(active, examples):
        sig = Classify.with_instructions(render_instructions(Classify.instructions, active, "label"))
        with dspy.context(lm=lm, adapter=LabelAdapter()):
            return run_student(dspy.Predict(sig), examples, task)

    config = SearchConfig(n_trials=trials, sampler=sampler, pruner="none", minibatch_size=len(dev), plots=False,
                          n_startup_trials=10)
    history: list[float] = []
    original = evaluate

    def tracked(active, examples):
        outcomes = original(active, examples)
        from pld_optim.scoring import score_outcomes

        history.append(score_outcomes(outcomes, task.labels).macro_f1)
        return outcomes

    search_rules(rules, dev=dev, labels=task.labels, evaluate=tracked, render=lambda a: a and "\n".join(a) or "",
                 count_tokens=lambda t: len(t.split()), token_counter="words", config=config, seed=seed)
    return history[:trials]  # the last entry is the winner's re-score


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--trials", type=int, default=120)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rules, dev = build()
    best = 1.0  # H0..H5 in their strong wording, no conflict first: every label right
    print(f"space: {len(rules)} rules (use x rank x phrasing), dev {len(dev)} examples, optimum macro F1 {best:.2f}, "
          f"{args.trials} trials max, {args.seeds} seeds")
    print("| sampler | share | runs that reached it | trials needed (median) | per seed | best F1 (mean) |")
    print("|---|---|---|---|---|---|")
    for sampler in ("tpe", "random"):
        curves = [run(sampler, seed, args.trials, rules, dev) for seed in range(args.seeds)]
        finals = [max(c) for c in curves]
        for share in (0.90, 0.95):
            needed = [next((i + 1 for i, f1 in enumerate(c) if f1 >= share * best), None) for c in curves]
            reached = [n for n in needed if n is not None]
            median = statistics.median(reached) if reached else "n/a"
            print(f"| {sampler} | {share:.0%} | {len(reached)}/{args.seeds} | {median} | "
                  f"{['-' if n is None else n for n in needed]} | {statistics.mean(finals):.3f} |")


if __name__ == "__main__":
    main()
