"""`pld-optim compile` and `pld-optim quickstart`: every check first, then (for --fresh) the old run goes,
then the compile; with --test, zero-shot and PLD on the test split with a paired bootstrap interval. Every
figure it prints says what it stands on (examples, and the labels present when some are not)."""

from __future__ import annotations

import sys
import time
from collections import Counter

import dspy

from pld_optim.cli.common import lm_from_config, preflight, run_context, use_disk_cache
from pld_optim.cli.config import RunConfig, load_config
from pld_optim.datasets.tasks import build_program, load_split
from pld_optim.evaluation.coverage import check_test, coverage, stands_on
from pld_optim.evaluation.scoring import run_student, score_outcomes
from pld_optim.evaluation.stats import paired_difference
from pld_optim.evaluation.task import refuse_overlap, resolve_task
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.run.folder import ARTIFACTS, RunFolder
from pld_optim.run.tracking import Tracker
from pld_optim.teleprompter import PLD


def make_pld(cfg: RunConfig, folder: RunFolder | None, seed: int) -> PLD:
    search = cfg.search
    if search is not None and search.study_name is None:
        search = search.model_copy(update={"study_name": cfg.name})
    return PLD(teacher=lm_from_config(cfg.teacher), out_dir=folder, seed=seed, progress=sys.stderr.isatty(),
               search=search, num_threads=cfg.teacher.threads, student_threads=cfg.student.threads, **cfg.pld)


def compile_cmd(args) -> int:
    cfg = load_config(args.config)
    seed = cfg.seed if args.seed is None else args.seed
    folder = RunFolder(args.out, context=run_context(cfg, args.config, seed), title=f"PLD compile: {cfg.name}")
    folder.check()  # named as --out here; PLD.prepare checks it again as out_dir
    program = build_program(cfg.data)
    train, dev = load_split(cfg.data, "train"), load_split(cfg.data, "dev")
    test = load_split(cfg.data, "test") if args.test else None
    if test is not None and not test:
        raise ValueError("--test: the test split is empty; set data.fractions or data.test_limit")
    pld = make_pld(cfg, folder, seed)
    student = lm_from_config(cfg.student)  # a bad model string, GGUF path or OLLAMA_HOST fails here, in a dry run too
    # Data, labels, parameters, the folder, its cache, the study and the token budget (the student's
    # tokenizer, no call), checked before any LM call and before --fresh removes anything.
    with dspy.context(lm=student):
        plan = pld.prepare(program, train, dev)
    if test is not None:
        check_test(test, plan.task)  # a split no interval can be computed on fails now, not after the compile
        refuse_overlap({"train": plan.train, "dev": plan.dev, "test": test}, plan.task.input_fields, "test",
                       allow=plan.params.allow_overlap, where="--test")
    tracker = Tracker.from_config(cfg.tracking)
    if tracker:
        tracker.check(dry_run=args.dry_run)
    estimate = pld.estimate_calls(len(plan.train), len(plan.dev), len(plan.task.labels))
    splits = [("train", plan.train), ("dev", plan.dev)] + ([("test", test)] if test else [])
    print(f"data: {', '.join(coverage(rows, plan.task, name).describe() for name, rows in splits)} | student "
          f"{cfg.student.model} | teacher {cfg.teacher.model}")
    print("LM calls, at most: " + ", ".join(f"{k} {v}" for k, v in estimate.items())
          + f" (total {sum(estimate.values())})")
    if args.dry_run:
        print("dry run: data, labels, split overlap, settings, models, output folder, LM cache, study storage and "
              "tracking store checked; nothing was called or written")
        return 0
    preflight(cfg, pull=args.pull)
    start = time.perf_counter()
    with folder.writing():
        if args.fresh:
            removed = folder.clear()
            print(f"--fresh: removed {', '.join(removed) or 'nothing'} from {folder.path}")
        use_disk_cache(folder.cache_dir)
        # Through `compile`, as a Python user's call goes, so DSPy's compile callbacks see CLI compiles too.
        with dspy.context(lm=student, track_usage=True):
            compiled = pld.compile(program, trainset=train, valset=dev)
    rules = compiled.pld_rules
    _print_written(folder, rules)
    if tracker:
        _log_to_tracker(tracker, cfg, args, seed, plan, compiled, student)
    print(f"compile: {time.perf_counter() - start:.0f} s")
    described = _describe(rules)
    base = rules.baseline_dev_macro_f1
    print(f"dev  macro F1: zero-shot {'n/a' if base is None else f'{base:.3f}'} | PLD {rules.dev_macro_f1:.3f} "
          f"({described}; {stands_on(coverage(plan.dev, plan.task, 'dev').support)})")
    if test is not None:
        _test_lines(cfg, student, program, compiled, test, described, seed)
    return 0


def _print_written(folder: RunFolder, rules) -> None:
    for name in ARTIFACTS:
        print(f"wrote {folder.path / name}")
    if rules.refusals:
        print(f"quality gates: refused {len(rules.refusals)} teacher texts ({_refusal_counts(rules)}); each is "
              "listed with its reason in rules.json (refusals) and report.md")
    if rules.data_overlap:
        print(f"data overlap (allowed by pld.allow_overlap): {rules.data_overlap}")


def _log_to_tracker(tracker: Tracker, cfg, args, seed: int, plan, compiled: dspy.Module, student) -> None:
    params = {"config": args.config, "seed": seed, "train_examples": len(plan.train),
              "dev_examples": len(plan.dev), "student": cfg.student.model_dump(),
              "teacher": cfg.teacher.model_dump(),
              "data": cfg.data.model_dump(), "pld": cfg.pld_params(),
              "search": cfg.search.model_dump() if cfg.search else "none"}
    run_id = tracker.log_compile(compiled.pld_rules, plan.folder.path, run_name=cfg.name, params=params,
                                 program=compiled, student_lm=student)
    print(f"logged MLflow run {run_id} (experiment {tracker.experiment!r}) to {tracker.uri}")


def _refusal_counts(rules) -> str:
    """Refusals by the gate that refused them, the most frequent first."""
    return "; ".join(f"{n} {gate}" for gate, n in Counter(r.gate for r in rules.refusals).most_common())


def _describe(rules) -> str:
    n_rules = len(rules.active_rules())
    demos = len(rules.prompt().demos or [])
    return f"{n_rules} rules" + (f", {demos} demos" if demos else "")


def _test_lines(cfg: RunConfig, student: dspy.BaseLM, program: dspy.Module, compiled: dspy.Module, test: list,
                described: str, seed: int) -> None:
    task = resolve_task(program)
    with dspy.context(lm=student, adapter=LabelAdapter()):
        zero, pld = (run_student(p, test, task, num_threads=cfg.student.threads) for p in (program, compiled))
    a, b = score_outcomes(zero, task.labels), score_outcomes(pld, task.labels)
    low, high = paired_difference(pld, zero, task.labels, seed=seed)
    print(f"test macro F1: zero-shot {a.macro_f1:.3f} | PLD {b.macro_f1:.3f} ({described}; {b.stands_on()})")
    print(f"test PLD - zero-shot: {b.macro_f1 - a.macro_f1:+.3f} macro F1, paired bootstrap 95% interval "
          f"{low:+.3f} to {high:+.3f} (over {len(test)} paired examples)")
