"""What a compiled program's rules and worked examples each bring, on held-back StereoSet items.

For one compile folder (its rules.json), the quickstart's student answers the held-back items
(`mechanisms.held_back`: outside the excerpt and the hashed test split, never tuned on) five ways: zero-shot,
the data's own label definitions as rules (`REFERENCE_RULES`), the program's rules alone, its worked
examples alone, and both (the program as compiled). It prints macro F1 and the paired 95% interval against
zero-shot for each.

    python benchmarks/rules_vs_demos.py out/quickstart [--limit N]
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import dspy
from mechanisms import held_back

from pld_optim import RuleSet, Scorer
from pld_optim.cli.common import lm_from_config
from pld_optim.cli.config import load_config
from pld_optim.datasets import REFERENCE_RULES
from pld_optim.datasets.tasks import build_program
from pld_optim.evaluation.scoring import score_outcomes
from pld_optim.evaluation.stats import paired_difference
from pld_optim.evaluation.task import resolve_task
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.rules import Prompt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    cfg = load_config("quickstart")
    program = build_program(cfg.data)
    task = resolve_task(program)
    rules = RuleSet.load(args.folder / "rules.json")
    shown = rules.prompt()
    items = held_back()[: args.limit]
    prompts = {"zero-shot": Prompt(), "label definitions": Prompt(rules=REFERENCE_RULES[cfg.data.dataset]),
               "its rules alone": Prompt(rules=shown.rules), "its worked examples alone": Prompt(demos=shown.demos),
               "rules + worked examples (as compiled)": shown}
    scorer = Scorer(program, task, lm=lm_from_config(cfg.student), adapter=LabelAdapter())
    with dspy.context(lm=scorer.student_lm):
        outcomes = {name: scorer.outcomes(p, items) for name, p in prompts.items()}
    print(f"{len(items)} held-back items; {args.folder}: {len(shown.rules)} rules, {len(shown.demos or [])} worked "
          "examples\n\n| prompt | macro F1 | minus zero-shot (paired 95%) |\n|---|---|---|")
    for name, outs in outcomes.items():
        f1 = score_outcomes(outs, task.labels).macro_f1
        lo, hi = paired_difference(outs, outcomes["zero-shot"], task.labels) if name != "zero-shot" else (0, 0)
        print(f"| {name} | {f1:.3f} | {lo:+.3f} to {hi:+.3f} |")


if __name__ == "__main__":
    main()
