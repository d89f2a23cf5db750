"""Each PLD mechanism on real compiles of the quickstart: with it and without it, on several seeds.

    python benchmarks/mechanisms.py [--variants default,label-mining,rewrite,no-demos,sampler-local,...]
        [--seeds 0,1,2] [--out out/mechanisms] [--test]

Every variant is the shipped quickstart config (`pld_optim/configs/quickstart.yaml`) with a few settings
changed. Each compile is scored on its own dev split (what the search chose on), on a held-back sample
that no compile sees (StereoSet items of ../shared/data outside the quickstart excerpt and outside the
shared data's hashed test split: 40 gender, 40 profession, 40 race, 10 religion), and with --test on the
quickstart's test split. Decisions are made on dev and the held-back sample, never on test. All runs share
one DSPy cache, so a variant pays only for the calls it changes. One JSON line per run goes to
OUT/results.jsonl; a rerun skips the runs already there.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import dspy
import yaml

from pld_optim.cli.common import lm_from_config
from pld_optim.cli.compile import make_pld
from pld_optim.cli.config import RunConfig
from pld_optim.datasets import load_stereoset, split_of
from pld_optim.datasets.common import shared_data_dir
from pld_optim.datasets.tasks import build_program, load_split
from pld_optim.evaluation.scoring import run_student, score_outcomes
from pld_optim.evaluation.stats import paired_difference
from pld_optim.evaluation.task import content_key, resolve_task
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.run.folder import RunFolder

QUICKSTART = Path(__file__).resolve().parents[1] / "pld_optim" / "configs" / "quickstart.yaml"
VARIANTS = {
    "default": {},
    "label-mining": {"pld.mining": "label"},
    "rewrite": {"pld.refinement": "rewrite"},
    "no-refine": {"pld.max_refine_iters": 0},
    "no-demos": {"pld.max_demos": 0},
    "demos-4": {"pld.max_demos": 4},
    "paper": {"pld.mining": "label", "pld.refinement": "rewrite", "pld.max_demos": 0},
    "sampler-local": {"search.sampler": "local"},
    "sampler-tpe": {"search.sampler": "tpe"},
    "sampler-random": {"search.sampler": "random"},
}
HELD_BACK = {"gender": 40, "profession": 40, "race": 40, "religion": 10}


def held_back() -> list[dspy.Example]:
    """Shared StereoSet intrasentence items outside the excerpt and the shared hashed test split."""
    excerpt = load_stereoset("package:stereoset_excerpt.json")
    shipped = {ex.id for ex in excerpt} | {content_key(ex, ["context", "sentence"]) for ex in excerpt}
    pool = [ex for ex in load_stereoset(shared_data_dir() / "stereoset") if ex.id not in shipped
            and content_key(ex, ["context", "sentence"]) not in shipped and split_of(ex.id) != "test"]
    out = []
    for label, n in HELD_BACK.items():
        items = sorted((ex for ex in pool if ex.label == label),
                       key=lambda ex: hashlib.sha1(f"held-back|{ex.id}".encode()).hexdigest())
        out += items[:n]
    return out


def write_held_back(path: Path) -> None:
    ids = {ex.id for ex in held_back()}
    source = json.loads((shared_data_dir() / "stereoset" / "dev.json").read_text())
    items = [it for it in source["data"]["intrasentence"] if it["id"] in ids]
    doc = {"version": source.get("version"), "data": {"intrasentence": items, "intersentence": []}}
    path.write_text(json.dumps(doc, ensure_ascii=False))
    print(f"wrote {len(items)} held-back items to {path}")


def config_with(overrides: dict, seed: int) -> RunConfig:
    raw = yaml.safe_load(QUICKSTART.read_text())
    for key, value in overrides.items():
        section, name = key.split(".")
        raw[section][name] = value
    raw["seed"] = seed
    return RunConfig.model_validate(raw)


def run(variant: str, seed: int, out: Path, sets: dict[str, list]) -> dict:
    cfg = config_with(VARIANTS[variant], seed)
    program = build_program(cfg.data)
    train, dev = load_split(cfg.data, "train"), load_split(cfg.data, "dev")
    folder = RunFolder(out / f"{variant}-seed{seed}")
    folder.clear() if (folder.path / "fingerprint.json").exists() else None
    pld = make_pld(cfg, folder, seed)
    start = time.perf_counter()
    with dspy.context(lm=lm_from_config(cfg.student)):
        compiled = pld.compile(program, trainset=train, valset=dev)
    row = {"variant": variant, "seed": seed, "compile_s": round(time.perf_counter() - start),
           "dev_zero": pld.baseline_score_.macro_f1, "dev_pld": pld.score_.macro_f1,
           "rules": len(pld.rules_.active_rules()), "demos": len(pld.rules_.prompt().demos or []),
           "candidates": pld.rules_.search.n_candidates if pld.rules_.search else None,
           "wordings": pld.rules_.search.n_wordings if pld.rules_.search else None,
           "student_calls": sum(u.lm_calls for u in pld.rules_.usage if u.stage in ("baseline", "probe", "refine",
                                                                                      "search", "contribution")),
           "usage": {u.stage: [u.lm_calls, u.cache_hits, round(u.seconds)] for u in pld.rules_.usage}}
    task = resolve_task(program)
    with dspy.context(lm=lm_from_config(cfg.student), adapter=LabelAdapter()):
        for name, examples in sets.items():
            zero, ours = run_student(program, examples, task), run_student(compiled, examples, task)
            row[f"{name}_zero"] = score_outcomes(zero, task.labels).macro_f1
            row[f"{name}_pld"] = score_outcomes(ours, task.labels).macro_f1
            row[f"{name}_interval"] = paired_difference(ours, zero, task.labels, seed=seed)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="default")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", default="out/mechanisms")
    parser.add_argument("--test", action="store_true", help="also score the quickstart's test split")
    parser.add_argument("--write-held-back", metavar="FILE",
                        help="write the held-back items as a StereoSet file (for `pld-optim evaluate --data`) and stop")
    args = parser.parse_args()
    if args.write_held_back:
        write_held_back(Path(args.write_held_back))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dspy.configure_cache(enable_disk_cache=True, disk_cache_dir=str(out / "cache"))
    cfg = config_with({}, 0)
    sets = {"heldback": held_back()}
    if args.test:
        sets["test"] = load_split(cfg.data, "test")
    results = out / "results.jsonl"
    done = {(r["variant"], r["seed"]) for r in map(json.loads, results.read_text().splitlines())} \
        if results.exists() else set()
    for variant in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            if (variant, seed) in done:
                continue
            row = run(variant, seed, out, sets)
            with results.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(json.dumps({k: v for k, v in row.items() if k != "usage"}), flush=True)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    print("| variant | seed | dev zero-shot | dev PLD | held-back zero-shot | held-back PLD | held-back PLD - "
          "zero-shot (paired 95%) | rules | demos | compile s |\n|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        low, high = r["heldback_interval"]
        print(f"| {r['variant']} | {r['seed']} | {r['dev_zero']:.3f} | {r['dev_pld']:.3f} | {r['heldback_zero']:.3f} | "
              f"{r['heldback_pld']:.3f} | {low:+.3f} to {high:+.3f} | {r['rules']} | {r['demos']} | {r['compile_s']} |")


if __name__ == "__main__":
    main()
