"""`pld-optim compare`: every optimizer on the same student, teacher, splits and seeds.

Everything a dry run can check is checked before any LM call: the data and the overlap of its splits, a test
split the bootstrap interval can be computed on (at least two examples; else every compile would be paid
and the first interval would fail), the models, the folder (its owner, its lock, its cache) and whether it
holds results of another setup. What the figures stand on is said before anything is spent (a warning for
a label absent from train or dev, or too few dev examples of one) and in compare.md (the test examples and
the labels no test example has, which no macro F1 counts). The
folder's fingerprint.json records the setup (data, models, budget, pld: and search: sections): a rerun
with the same setup resumes (finished optimizer runs are kept), another setup is refused, never mixed in.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pld_optim.cli.common import check_answers, lm_from_config, preflight, use_disk_cache
from pld_optim.cli.config import RunConfig, build_program, load_config, load_split
from pld_optim.compare import Setup, render_html, render_markdown, run_compare, summarize
from pld_optim.compare.registry import PEER_TEACHER_MAX_TOKENS, random_search_candidates
from pld_optim.datasets.sampling import data_digest
from pld_optim.evaluation.coverage import check_test, stands_on, warn_coverage
from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.task import example_id, overlap, resolve_task
from pld_optim.files import atomic_write_text
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.rules import Prompt
from pld_optim.run.folder import COMPARE_FILES, RunFolder
from pld_optim.run.tracking import Tracker


def setup_fingerprint(cfg: RunConfig, splits: dict[str, list], input_fields: list[str], budget: str) -> dict:
    """What a compare folder's results depend on (seeds and optimizers are not: adding one resumes)."""
    data = {name: data_digest(rows, [example_id(ex, input_fields) for ex in rows], "label")
            for name, rows in splits.items()}
    return {"command": "compare", "data": data, "student": cfg.student.model_dump(exclude={"threads"}),
            "teacher": cfg.teacher.model_dump(exclude={"threads"}),
            "params": {"budget": budget, "pld": cfg.pld, "search": cfg.search.model_dump() if cfg.search else None}}


def compare_cmd(args) -> int:
    cfg = load_config(args.config)
    folder = RunFolder(args.out, written=COMPARE_FILES, title=f"compare: {cfg.name}")
    folder.check()
    program = build_program(cfg.data)
    task = resolve_task(program)
    splits, shared = _checked_splits(cfg, task.input_fields)
    train, dev, test = splits["train"], splits["dev"], splits["test"]
    tested = check_test(test, task, "compare")  # before the models: a one-example test split costs nothing
    warn_coverage(train, dev, task, "compare")  # every optimizer learns and chooses on these two
    student, teacher = lm_from_config(cfg.student), lm_from_config(cfg.teacher)  # bad model strings fail now
    fingerprint = setup_fingerprint(cfg, splits, task.input_fields, args.budget)
    folder.check_fingerprint(fingerprint)  # results of another setup are refused, in a dry run too
    print(f"compare {args.optimizers} x seeds {args.seeds} | {len(train)} train, {len(dev)} dev, {len(test)} test | "
          f"student {cfg.student.model} | teacher {cfg.teacher.model} | budget {args.budget}"
          + (f" | overlap {shared}" if shared else ""))
    tracker = Tracker.from_config(cfg.tracking)
    if tracker:
        tracker.check(dry_run=args.dry_run)
    if args.dry_run:
        print("dry run: data, split overlap, models, output folder, its earlier results and the tracking store "
              "checked; nothing was called or written")
        return 0
    preflight(cfg)
    out = Path(args.out)
    results = []
    with folder.writing():
        use_disk_cache(folder.cache_dir)
        folder.claim(fingerprint)
        # The student must answer before any optimizer spends on it: the zero-shot program on dev. Outside
        # every optimizer's own part of the cache, so it makes no optimizer's calls free (PLD's baseline
        # makes the same calls and pays for them, as it would alone).
        zero_shot = Scorer(program, task, adapter=LabelAdapter(), lm=student, num_threads=cfg.student.threads)
        check_answers(zero_shot.outcomes(Prompt(), dev), task.labels, "compare: the zero-shot student on dev", cfg)
        for seed in args.seeds:
            setup = Setup(program=program, train=train, dev=dev, test=test, student=student, teacher=teacher,
                          seed=seed, threads=cfg.student.threads, budget=args.budget,
                          pld_kwargs={**cfg.pld, "search": cfg.search})
            results += run_compare(setup, args.optimizers, out)
        rows = summarize(results, out, task.labels)
        context = {"config": args.config, "student": cfg.student.model, "teacher": cfg.teacher.model,
                   "data": f"{len(train)} train / {len(dev)} dev / {len(test)} test", "seeds": args.seeds,
                   "test figures stand on": stands_on(tested.support),
                   "budget": args.budget, "peers' teacher max_tokens": max(cfg.teacher.max_tokens or 0,
                                                                           PEER_TEACHER_MAX_TOKENS),
                   **({"bootstrap-rs candidate programs (PLD's search budget)": random_search_candidates(
                       cfg.search, len(dev))} if "bootstrap-rs" in args.optimizers else {}),
                   **({"split overlap (pld.allow_overlap)": shared} if shared else {})}
        markdown = render_markdown(rows, context)
        atomic_write_text(out / "compare.md", markdown)
        render_html(rows, context, out / "compare.html")
    print(markdown)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.html'}")
    if tracker:
        run_id = tracker.log_compare(rows, context, out, run_name=f"compare: {cfg.name}")
        print(f"logged MLflow run {run_id} (experiment {tracker.experiment!r}) to {tracker.uri}")
    return _exit_code(results)


def _checked_splits(cfg: RunConfig, input_fields: list[str]) -> tuple[dict[str, list], dict]:
    """The three splits, none empty, and the inputs they share (refused unless pld.allow_overlap)."""
    splits = {s: load_split(cfg.data, s) for s in ("train", "dev", "test")}
    if not splits["test"]:
        raise ValueError("the test split is empty; set data.fractions or data.test_limit")
    if not splits["dev"] or not splits["train"]:
        raise ValueError(f"the {'dev' if not splits['dev'] else 'train'} split is empty; set data.fractions")
    shared = overlap(splits, input_fields)
    if shared and not cfg.pld_checked().allow_overlap:
        raise ValueError(f"compare: the splits share inputs ({shared}, compared by content, not id): test would "
                         "score examples an optimizer trained or chose on. Fix the data, or set "
                         "pld.allow_overlap: true to compare anyway")
    return splits, shared


def _exit_code(results) -> int:
    """2 when an optimizer failed: its row scores the unoptimized program, which must not read as a result."""
    failed = [r for r in results if r.error]
    if failed:
        print(f"pld-optim: error: {len(failed)} optimizer run(s) failed: "
              + "; ".join(f"{r.optimizer} seed {r.seed}: {r.error[:200]}" for r in failed)
              + ". Their rows score the unoptimized program (compare.md lists the errors); fix the cause and rerun "
                "the same command: finished runs are kept, failed ones run again", file=sys.stderr)
        return 2
    return 0
