"""Tune a prompt budget: search rule subsets, order and phrasing for dev macro F1 against prompt tokens.

Runs PLD with the multi-objective (NSGA-II) search, prints the Pareto front, then picks the best
point within a token budget, all without calling an LM again. Offline on the embedded models.
"""

import os
from typing import Literal

import dspy

from pld_optim import PLD, LabelAdapter, apply_rules
from pld_optim.datasets import load_stereoset
from pld_optim.lm.factory import make_lm


class BiasType(dspy.Signature):
    """Classify which kind of social stereotype the sentence expresses about the target in the context."""

    context: str = dspy.InputField()
    sentence: str = dspy.InputField()
    label: Literal["gender", "profession", "race", "religion"] = dspy.OutputField()


slice_path = "package:stereoset_excerpt.json"  # shipped with the package
train = load_stereoset(slice_path, split="train", limit=24)
dev = load_stereoset(slice_path, split="dev", limit=16)
student = make_lm(os.environ.get("STUDENT", "local/qwen2.5-coder-1.5b"), max_tokens=24)
dspy.configure(lm=student, adapter=LabelAdapter())

pld = PLD(teacher=make_lm(os.environ.get("TEACHER", "local/qwen2.5-coder-1.5b"), max_tokens=384), max_refine_iters=0,
          out_dir="out/budget", search={"n_trials": 12, "multi_objective": True, "n_startup_trials": 6})
compiled = pld.compile(dspy.Predict(BiasType), trainset=train, valset=dev)

front = pld.rules_.search.pareto
for point in front:
    rules = [s.rule_id for s in point.selection]
    print(f"{point.prompt_tokens:6d} tokens  dev macro F1 {point.macro_f1:.3f}  rules {rules}")
budget = front[len(front) // 2].prompt_tokens
cheaper = apply_rules(dspy.Predict(BiasType), pld.rules_.pick(max_tokens=budget))
print(f"picked the best point within {budget} tokens:\n{cheaper.predictors()[0].signature.instructions}")
