"""Which embedded students follow rules at all: dev macro F1 with no rules and with the data's own label
definitions written as rules (`pld_optim.datasets.REFERENCE_RULES`).

A student whose score does not move even with correct rules cannot show PLD, whatever the teacher writes,
so this table chooses the quickstart's student. Models whose packages are not installed are skipped.

    python benchmarks/rule_following.py [--config quickstart] [--split dev] [--limit N]
        [--models gemma3-270m,smollm2-135m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b]

The last line is one JSON object: {model: {"no_rules": F1, "reference_rules": F1, "accuracy_no_rules", ...}}.
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import dspy

from pld_optim.cli.config import load_config
from pld_optim.datasets import REFERENCE_RULES
from pld_optim.datasets.tasks import build_program, load_split
from pld_optim.evaluation.scoring import run_student, score_outcomes
from pld_optim.evaluation.task import resolve_task
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.lm.factory import engine_of, make_lm
from pld_optim.rules import render_instructions

CANDIDATES = "gemma3-270m,smollm2-135m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--models", default=CANDIDATES)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    cfg = load_config(args.config)
    program = build_program(cfg.data)
    task = resolve_task(program)
    examples = load_split(cfg.data, args.split)[: args.limit]
    rules = REFERENCE_RULES[cfg.data.dataset]
    with_rules = dspy.Predict(task.signature.with_instructions(
        render_instructions(task.signature.instructions, rules, task.label_field)))
    print(f"{cfg.data.dataset} {args.split}: {len(examples)} examples; reference rules:")
    print("\n".join(f"  {i}. {r}" for i, r in enumerate(rules, 1)))
    print("\n| student | macro F1, no rules | macro F1, reference rules | accuracy, no rules | accuracy, rules "
          "| s / example |\n|---|---|---|---|---|---|")
    results = {}
    for name in args.models.split(","):
        try:
            lm = make_lm(f"local/{name}", max_tokens=8, cache=False, n_ctx=2048)
            engine_of(lm).llama  # noqa: B018 - load now, so a missing package is a skip, not a crash
        except (ImportError, ValueError) as exc:
            print(f"| {name} | skipped: {exc} | | | | |")
            continue
        scores, start = {}, time.perf_counter()
        with dspy.context(lm=lm, adapter=LabelAdapter()):
            for key, prog in (("no_rules", program), ("reference_rules", with_rules)):
                scores[key] = score_outcomes(run_student(prog, examples, task), task.labels)
        per_example = (time.perf_counter() - start) / (2 * len(examples))
        results[name] = {"no_rules": round(scores["no_rules"].macro_f1, 3),
                         "reference_rules": round(scores["reference_rules"].macro_f1, 3),
                         "accuracy_no_rules": round(scores["no_rules"].accuracy, 3),
                         "accuracy_reference_rules": round(scores["reference_rules"].accuracy, 3),
                         "seconds_per_example": round(per_example, 2)}
        r = results[name]
        print(f"| {name} | {r['no_rules']:.3f} | {r['reference_rules']:.3f} | {r['accuracy_no_rules']:.3f} | "
              f"{r['accuracy_reference_rules']:.3f} | {per_example:.2f} |", flush=True)
        engine_of(lm).close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
