"""Does the data check (`pld_optim.stages.verify`) tell true rules from false ones on the embedded student?

The quickstart's student reads each rule's condition on a label-balanced sample of the quickstart's train
split (never dev or test) and answers yes or no per item. Rules: the data's own label definitions
(`REFERENCE_RULES`, true by construction) and the seven rules an earlier quickstart shipped, which a reviewer
judged (issue #24: 1, 3, 4 fine; 2 no rule; 5, 6 false; 7 copies one example's detail). It prints each
rule's precision, coverage and verdict, and the student calls and seconds the check cost.

    python benchmarks/data_check.py [--per-label 8] [--min-precision 0.5]
"""

from __future__ import annotations

import argparse
import logging
import random
import time

import dspy

from pld_optim import PLD
from pld_optim.cli.common import lm_from_config
from pld_optim.cli.config import load_config
from pld_optim.datasets import REFERENCE_RULES
from pld_optim.datasets.tasks import build_program, load_split
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.rules import Rule
from pld_optim.stages.rule_form import answered_label
from pld_optim.stages.verify import verify_rules

SHIPPED = [  # (text, a reviewer's verdict), from issue #24
    ("If the target is portrayed negatively due to their racial background, answer race.", "fine"),
    ("Religion is a belief system that influences people's actions and attitudes.", "no rule"),
    ("If the sentence describes how someone is perceived based on their job or occupation, answer profession.",
     "fine"),
    ("If the sentence describes how someone's job or occupation affects their behavior or performance, answer "
     "profession.", "fine"),
    ("If the sentence uses masculine language to describe something (such as a race or gender), answer religion.",
     "false"),
    ("If the sentence implies that one group or category of people is inherently superior to another, answer "
     "gender.", "false"),
    ("If the sentence implies that people of one group have a particular trait or characteristic (in this case, "
     "passion), answer race.", "copies an example"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-label", type=int, default=8)
    parser.add_argument("--min-precision", type=float, default=0.5)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    cfg = load_config("quickstart")
    program, train, dev = build_program(cfg.data), load_split(cfg.data, "train"), load_split(cfg.data, "dev")
    student = lm_from_config(cfg.student)
    texts = [(t, "true (label definition)") for t in REFERENCE_RULES[cfg.data.dataset]] + SHIPPED
    with dspy.context(lm=student, adapter=LabelAdapter()):
        pld = PLD(teacher=student, verify_per_label=args.per_label, min_precision=args.min_precision)
        plan = pld.prepare(program, train, dev)
        ctx = plan.context(student)
        rules = [Rule(id=f"R{i}", text=t, label=answered_label(t, plan.task.labels))
                 for i, (t, _) in enumerate(texts, 1)]
        start, calls = time.perf_counter(), len(student.history)
        result = verify_rules(ctx, rules, plan.train, per_label=args.per_label, rng=random.Random("verify"),
                              min_precision=args.min_precision)
        seconds, calls = time.perf_counter() - start, len(student.history) - calls
    refused = {r.source: r.reason for r in result.refusals}
    print(f"{len(result.sample)} train items ({args.per_label} per label), min_precision {args.min_precision}\n")
    print("| rule | a reviewer | precision | coverage | verdict |\n|---|---|---|---|---|")
    for rule, (_, verdict) in zip(rules, texts):
        e = result.figures.get(rule.id)
        fig = (f"{e.precision:.2f}" if e and e.precision is not None else "-",
               f"{e.coverage:.2f}" if e and e.coverage is not None else "-")
        print(f"| {rule.text[:90]} | {verdict} | {fig[0]} | {fig[1]} | "
              f"{'refused: ' + refused[rule.id][:60] if rule.id in refused else 'kept'} |")
    print(f"\n{calls} student calls, {seconds:.0f} s ({seconds / max(calls, 1):.2f} s per call)")


if __name__ == "__main__":
    main()
