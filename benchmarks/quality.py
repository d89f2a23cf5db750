"""Test-split macro F1 of zero-shot, PLD and InferRules on the embedded default, with the paired-bootstrap
interval of PLD - zero-shot and the LM calls each method spent to compile.

    python benchmarks/quality.py [--configs quickstart,configs/contract_nli_local.yaml] [--out out/quality]
        [--optimizers zero-shot,infer-rules,pld] [--seed 0] [--teacher-max-tokens N]

Each config runs through `pld_optim.compare` (same student, teacher, splits and seed for every method; test
scored with the cache off); results are saved per method, so a rerun skips what is done. Tune nothing on
the test split: these numbers are read once, after the configs were fixed on train/dev.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import dspy

from pld_optim.cli.common import lm_from_config
from pld_optim.cli.config import load_config
from pld_optim.compare import Setup, load_outcomes, run_compare, summarize
from pld_optim.datasets.tasks import build_program, load_split
from pld_optim.evaluation.stats import paired_difference
from pld_optim.evaluation.task import resolve_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="quickstart,configs/contract_nli_local.yaml")
    parser.add_argument("--optimizers", default="zero-shot,infer-rules,pld")
    parser.add_argument("--out", default="out/quality")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--teacher-max-tokens", type=int,
                        help="override the configs' teacher cap (InferRules writes its reasoning and every rule in "
                             "one answer and fails when it is cut)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    optimizers = args.optimizers.split(",")
    summary = {}
    print("| data | method | test macro F1 | 95% CI | PLD - zero-shot (paired 95%) | accuracy | compile LM calls "
          "| compile s |\n|---|---|---|---|---|---|---|---|")
    for path in args.configs.split(","):
        cfg = load_config(path)
        out = Path(args.out) / cfg.name
        dspy.configure_cache(enable_disk_cache=True, disk_cache_dir=str(out / "cache"))
        program = build_program(cfg.data)
        task = resolve_task(program)
        train, dev, test = (load_split(cfg.data, s) for s in ("train", "dev", "test"))
        pld_kwargs = {**cfg.pld, "search": cfg.search}  # as `pld-optim compare` passes them; PLD fills its defaults
        setup = Setup(program=program, train=train, dev=dev, test=test, student=lm_from_config(cfg.student),
                      teacher=lm_from_config(cfg.teacher, max_tokens=args.teacher_max_tokens), seed=args.seed,
                      threads=cfg.student.threads, pld_kwargs=pld_kwargs)
        rows = summarize(run_compare(setup, optimizers, out), out, task.labels)
        diff = None
        if {"pld", "zero-shot"} <= set(optimizers):
            diff = paired_difference(load_outcomes(out, "pld", args.seed), load_outcomes(out, "zero-shot", args.seed),
                                     task.labels, seed=args.seed)
        name = f"{cfg.name} ({len(train)}/{len(dev)}/{len(test)})"
        summary[cfg.name] = {"n_test": len(test), "pld_minus_zero_shot": diff}
        for r in rows:
            gap = f"{diff[0]:+.3f} to {diff[1]:+.3f}" if r["optimizer"] == "pld" and diff else ""
            print(f"| {name} | {r['optimizer']}{' (failed)' if r['errors'] else ''} | {r['macro_f1']:.3f} | "
                  f"{r['ci'][0]:.3f}–{r['ci'][1]:.3f} | {gap} | {r['accuracy']:.3f} | {r['lm_calls']:.0f} | "
                  f"{r['compile_seconds']:.0f} |", flush=True)
            summary[cfg.name][r["optimizer"]] = {"macro_f1": round(r["macro_f1"], 4),
                                                 "compile_lm_calls": int(r["lm_calls"])}
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
