"""What a compile costs: PLD against InferRules on the same setup, in one process.

    python benchmarks/compile_cost.py [--config quickstart] [--peer infer-rules] [--budget small] [--seed 0]
        [--scripted]

Both compile through `pld_optim.compare.compile_one`, so they are counted as `pld-optim compare` counts
every peer: one tally around the whole compile, each optimizer on its own part of a fresh in-memory cache (no
call is free because an earlier run or the other optimizer made it), the student's and the teacher's calls told
apart even when they are one model. It prints wall seconds, LM calls (student, teacher, the cached ones among
them), tokens, and PLD's figure over the peer's. Nothing is scored on test.

Default: the quickstart config (pld_optim/configs/quickstart.yaml) on the embedded models, many minutes on
2 cores. `--scripted`: the scripted student and teacher on a toy cue-word task, a smoke test in seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Literal

import dspy

from pld_optim.compare import ALL, CompileCost, Setup, compile_one
from pld_optim.evaluation.task import resolve_task
from pld_optim.testing import cue_examples, cue_teacher, field_value, rule_follower, scripted_lm

CUES = {"gender": ["she", "mother", "wife"], "religion": ["church", "prayer", "mosque"], "race": ["country", "skin"]}
LABEL_OF = {cue: label for label, cues in CUES.items() for cue in cues}
pld_teacher = cue_teacher(CUES)


class Classify(dspy.Signature):
    """Classify the bias type of the sentence."""

    sentence: str = dspy.InputField()
    label: Literal["gender", "race", "religion"] = dspy.OutputField()


def scripted_teacher(system: str, user: str) -> dict:
    """PLD's prompts get PLD's scripted teacher; InferRules' rule induction gets the cue rules as a numbered
    list; the bootstrap (the task itself) gets the gold label."""
    try:
        return pld_teacher(system, user)
    except AssertionError:
        pass
    if "`natural_language_rules`" in system:
        rules = [f"{k}. If the sentence mentions {' or '.join(cues)}, answer {label}."
                 for k, (label, cues) in enumerate(CUES.items(), 1)]
        return {"reasoning": "Each label has its cue words.", "natural_language_rules": "\n".join(rules)}
    return {"label": LABEL_OF[field_value(user, "sentence").split()[3]]}


def examples(n: int, offset: int = 0) -> list[dspy.Example]:
    return cue_examples(CUES, n, offset)


def scripted_setup(seed: int) -> Setup:
    return Setup(program=dspy.Predict(Classify), train=examples(48), dev=examples(18, 100), test=[],
                 student=scripted_lm(rule_follower("race"), "student", cache=True),
                 teacher=scripted_lm(scripted_teacher, "teacher", cache=True), seed=seed, threads=2,
                 pld_kwargs={"max_clusters": 2, "max_refine_iters": 1, "contribution": False,
                             "search": {"n_trials": 6, "plots": False}})


def config_setup(config: str, seed: int) -> Setup:
    from pld_optim.cli.common import lm_from_config, preflight
    from pld_optim.cli.config import build_program, load_config, load_split

    cfg = load_config(config)
    preflight(cfg)
    return Setup(program=build_program(cfg.data), train=load_split(cfg.data, "train"),
                 dev=load_split(cfg.data, "dev"), test=[], student=lm_from_config(cfg.student),
                 teacher=lm_from_config(cfg.teacher), seed=seed, threads=cfg.student.threads,
                 pld_kwargs={**cfg.pld, "search": cfg.search})  # as `pld-optim compare` passes them


def figures(cost: CompileCost) -> dict[str, float]:
    u = cost.usage
    return {"wall s": cost.seconds, "student calls": cost.student_calls, "teacher calls": cost.teacher_calls,
            "cached": u.cache_hits, "billed calls": u.lm_calls - u.cache_hits, "prompt tokens": u.prompt_tokens,
            "completion tokens": u.completion_tokens, "tokens": u.prompt_tokens + u.completion_tokens}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--peer", default="infer-rules", choices=[n for n in ALL if n != "pld"],
                        help="the compare optimizer PLD is measured against")
    parser.add_argument("--budget", choices=["small", "light"], default="small", help="as `pld-optim compare`'s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scripted", action="store_true", help="scripted LMs on a toy task: seconds, not minutes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    setup = scripted_setup(args.seed) if args.scripted else config_setup(args.config, args.seed)
    setup = setup.model_copy(update={"budget": args.budget})
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)  # nothing cached by an earlier run
    task = resolve_task(setup.program)
    rows = {}
    for name in (args.peer, "pld"):
        _, cost = compile_one(name, setup, task)
        if cost.error:
            print(f"compile_cost: {name} failed: {cost.error}", file=sys.stderr)
            return 2
        rows[name] = figures(cost)
    keys = list(rows["pld"])
    ratio = {k: (rows["pld"][k] / rows[args.peer][k]) if rows[args.peer][k] else None for k in keys}
    print(f"| optimizer | {' | '.join(keys)} |\n|---|{'---|' * len(keys)}")
    for name, row in rows.items():
        print(f"| {name} | {' | '.join(f'{v:g}' for v in row.values())} |")
    print(f"| pld / {args.peer} | {' | '.join('n/a' if v is None else f'{v:.2f}' for v in ratio.values())} |")
    print(json.dumps({"setup": "scripted" if args.scripted else args.config, "budget": args.budget, "seed": args.seed,
                      **rows,
                      f"pld / {args.peer}": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
