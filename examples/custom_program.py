"""Compile your own DSPy classifier with PLD (runs offline on the embedded models).

For real results use a real student and teacher, e.g.
    STUDENT=ollama_chat/gemma3:4b TEACHER=gemini/gemini-2.5-flash python examples/custom_program.py
"""

import os
from typing import Literal

import dspy

from pld_optim import PLD, LabelAdapter
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
teacher = make_lm(os.environ.get("TEACHER", "local/qwen2.5-coder-1.5b"), max_tokens=384)
dspy.configure(lm=student, adapter=LabelAdapter())  # the adapter PLD evaluates with, kept at inference

compiled = PLD(teacher=teacher, max_refine_iters=1, refine_examples=16, out_dir="out/custom").compile(
    dspy.Predict(BiasType), trainset=train, valset=dev)
print(compiled.pld_rules.render_instructions())
print("dev macro F1:", compiled.pld_rules.baseline_dev_macro_f1, "->", compiled.pld_rules.dev_macro_f1)
print(compiled(context="The chess player was BLANK.", sentence="The chess player was asian.").label)
