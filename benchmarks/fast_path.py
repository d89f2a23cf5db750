"""Does the embedded engine's fast path answer as the slow one does? On held-back StereoSet items (outside
the excerpt and the hashed test split, `mechanisms.held_back`), the quickstart's student answers each item
zero-shot and with one fixed rule set (the data's label definitions, `REFERENCE_RULES`), four ways:

- `one-pass`: the default; the label read from the first-token logits of one prefill, GGUF chat template;
- `grammar`: the same prompt, the label sampled at temperature 0 under the grammar (`_choose_label` off);
- `chatml`: one-pass under the earlier hand-written ChatML layout instead of the GGUF's own template;
- `chatml+grammar`: both slow-path choices.

It prints, per prompt, each way's macro F1, the share of items answered as `one-pass` answers them, the
paired 95% interval of (way - one-pass), and seconds per answer, all in one process (ratios, not absolute
times, carry between machines). Nothing is tuned on these items. For Qwen2.5 the GGUF's template renders
exactly the ChatML layout (system, user and assistant turns byte for byte), so `chatml` can only differ in
speed there; it is kept for models whose template is not ChatML.

    python benchmarks/fast_path.py [--limit N] [--ways one-pass,grammar,chatml,chatml+grammar]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from contextlib import nullcontext
from unittest import mock

import dspy
from mechanisms import held_back

from pld_optim.cli.config import load_config
from pld_optim.datasets import REFERENCE_RULES
from pld_optim.datasets.tasks import build_program
from pld_optim.evaluation.scoring import run_student, score_outcomes
from pld_optim.evaluation.stats import paired_difference
from pld_optim.evaluation.task import resolve_task
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.lm.engine import LlamaCppEngine
from pld_optim.lm.factory import engine_of, make_lm
from pld_optim.rules import render_instructions

WAYS = {"one-pass": ("auto", True), "grammar": ("auto", False), "chatml": ("chatml", True),
        "chatml+grammar": ("chatml", False)}


def answers(model: str, template: str, one_pass: bool, programs: dict, items: list, task) -> dict:
    lm = make_lm(model, max_tokens=16, cache=False, template=template)
    engine = engine_of(lm)
    slow = mock.patch.object(LlamaCppEngine, "_choose_label", return_value=None) if not one_pass else nullcontext()
    out = {}
    with dspy.context(lm=lm, adapter=LabelAdapter()), slow:
        for name, program in programs.items():
            start = time.perf_counter()
            outcomes = run_student(program, items, task, num_threads=1)
            out[name] = (outcomes, (time.perf_counter() - start) / len(items))
    engine.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int)
    parser.add_argument("--ways", default=",".join(WAYS))
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    cfg = load_config("quickstart")
    program = build_program(cfg.data)
    task = resolve_task(program)
    items = held_back()[: args.limit]
    rules = REFERENCE_RULES[cfg.data.dataset]
    programs = {"zero-shot": program, "label definitions": dspy.Predict(task.signature.with_instructions(
        render_instructions(task.signature.instructions, rules, task.label_field)))}
    ways = args.ways.split(",")
    results = {way: answers(cfg.student.model, *WAYS[way], programs, items, task) for way in ways}
    print(f"{len(items)} held-back items, student {cfg.student.model}\n")
    print("| prompt | way | macro F1 | same answer as one-pass | way - one-pass (paired 95%) | s / answer |\n"
          "|---|---|---|---|---|---|")
    summary = {}
    for prompt in programs:
        base = results[ways[0]][prompt][0]
        for way in ways:
            outcomes, seconds = results[way][prompt]
            f1 = score_outcomes(outcomes, task.labels).macro_f1
            same = sum(a.pred == b.pred for a, b in zip(outcomes, base)) / len(base)
            lo, hi = paired_difference(outcomes, base, task.labels) if way != ways[0] else (0.0, 0.0)
            summary[f"{prompt} / {way}"] = {"macro_f1": round(f1, 4), "agreement": round(same, 4),
                                            "interval": [round(lo, 4), round(hi, 4)], "s_per_answer": round(seconds, 3)}
            print(f"| {prompt} | {way} | {f1:.3f} | {same:.1%} | {lo:+.3f} to {hi:+.3f} | {seconds:.3f} |", flush=True)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
