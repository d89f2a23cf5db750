"""How often a small student's answer fails to parse, with and without label constraints.

Three ways to run the same student on the same dev examples:
- ChatAdapter: DSPy's default (its JSON fallback included); a parse error is a failure.
- forgiving: LabelAdapter(constrain=False): no grammar, forgiving parsing only.
- constrained: LabelAdapter(): the label schema becomes a llama.cpp grammar (embedded engine).

    python benchmarks/parse_failures.py [--n 200] [--model local/gemma3-270m]
"""

from __future__ import annotations

import argparse
import logging

import dspy

from pld_optim.datasets.tasks import DataConfig, build_program, load_split
from pld_optim.evaluation.scoring import run_student, score_outcomes
from pld_optim.evaluation.task import resolve_task
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.lm.factory import make_lm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--model", default="local/gemma3-270m")
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    data = DataConfig(dataset="stereoset", dev_limit=args.n)  # ../shared/data or $PLD_OPTIM_DATA
    examples = load_split(data, "dev")
    program = build_program(data)
    task = resolve_task(program)
    lm = make_lm(args.model, max_tokens=args.max_tokens, cache=False)
    print(f"student {args.model}, StereoSet bias-type dev, {len(examples)} examples, max_tokens {args.max_tokens}")
    print("| adapter | parse failures | answers outside the label set | macro F1 | LM calls |")
    print("|---|---|---|---|---|")
    for name, adapter in [("ChatAdapter (default)", dspy.ChatAdapter()),
                          ("forgiving parse only", LabelAdapter(constrain=False)),
                          ("grammar-constrained", LabelAdapter())]:
        before = len(lm.history)
        with dspy.context(lm=lm, adapter=adapter):
            outcomes = run_student(program, examples, task, num_threads=1)
        score = score_outcomes(outcomes, task.labels)
        print(f"| {name} | {score.failures} ({score.failures / score.n:.1%}) | {score.invalid} | "
              f"{score.macro_f1:.3f} | {len(lm.history) - before} |")


if __name__ == "__main__":
    main()
