"""`pld-optim compile` and `pld-optim quickstart`: every check first, then (for --fresh) the old run goes,
then the compile; with --test, zero-shot and PLD on the test split with a paired bootstrap interval."""

from __future__ import annotations

import sys
import time

import dspy

from pld_optim.cli.common import lm_from_config, preflight, run_context, use_disk_cache
from pld_optim.cli.config import RunConfig, build_program, load_config, load_split
from pld_optim.evaluation.scoring import run_student, score_outcomes
from pld_optim.evaluation.stats import paired_difference
from pld_optim.evaluation.task import overlap, resolve_task
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.run.folder import RunFolder
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
        run = pld.prepare(program, train, dev)
    if test is not None:
        _check_test(run, test)
    tracker = Tracker.from_config(cfg.tracking)
    if tracker:
        tracker.check(dry_run=args.dry_run)
    estimate = pld.estimate_calls(len(run.train), len(run.dev), len(run.task.labels))
    print(f"data: {len(run.train)} train, {len(run.dev)} dev{f', {len(test)} test' if test else ''} | student "
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
        with dspy.context(lm=student, track_usage=True):
            compiled = pld.execute(run)
    rules = compiled.pld_rules
    _print_written(folder, rules)
    if tracker:
        _log_to_tracker(tracker, cfg, args, seed, run, compiled, student)
    print(f"compile: {time.perf_counter() - start:.0f} s")
    described = _describe(rules)
    base = rules.baseline_dev_macro_f1
    print(f"dev  macro F1: zero-shot {'n/a' if base is None else f'{base:.3f}'} | PLD {rules.dev_macro_f1:.3f} "
          f"({described}, {len(run.dev)} examples)")
    if test is not None:
        _test_lines(cfg, program, compiled, test, described, seed)
    return 0


def _print_written(folder: RunFolder, rules) -> None:
    for name in ("program.json", "rules.json", "system_prompt.txt", "report.md", "review.html"):
        print(f"wrote {folder.path / name}")
    if rules.refusals:
        print(f"quality gates: refused {len(rules.refusals)} teacher texts ({_refusal_counts(rules)}); each is "
              "listed with its reason in rules.json (refusals) and report.md")
    if rules.data_overlap:
        print(f"data overlap (allowed by pld.allow_overlap): {rules.data_overlap}")


def _log_to_tracker(tracker: Tracker, cfg, args, seed: int, run, compiled: dspy.Module, student) -> None:
    params = {"config": args.config, "seed": seed, "train_examples": len(run.train),
              "dev_examples": len(run.dev), "student": cfg.student.model_dump(),
              "teacher": cfg.teacher.model_dump(),
              "data": cfg.data.model_dump(), "pld": cfg.pld_params(),
              "search": cfg.search.model_dump() if cfg.search else "none"}
    run_id = tracker.log_compile(compiled.pld_rules, run.folder.path, run_name=cfg.name, params=params,
                                 program=compiled, student_lm=student)
    print(f"logged MLflow run {run_id} (experiment {tracker.experiment!r}) to {tracker.uri}")


def _check_test(run, test: list[dspy.Example]) -> None:
    """Test items that are also train or dev items would score what the rules were fitted to."""
    shared = overlap({"train": run.train, "dev": run.dev, "test": test}, run.task.input_fields)
    shared = {k: v for k, v in shared.items() if "test" in k}
    if shared and not run.params.allow_overlap:
        raise ValueError(f"--test: the test split shares inputs with other splits ({shared}); fix the data, or set "
                         "pld.allow_overlap: true to score it anyway")


def _refusal_counts(rules) -> str:
    """Refusals by kind of reason: 'speaks about the prompt' (injected commands) counted apart."""
    kinds: dict[str, int] = {}
    for refusal in rules.refusals:
        kind = refusal.reason.split(" (")[0].split(":")[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    return "; ".join(f"{n} {kind}" for kind, n in sorted(kinds.items(), key=lambda kv: -kv[1]))


def _describe(rules) -> str:
    n_rules = len(rules.active_rules())
    demos = len(rules.prompt().demos or [])
    return f"{n_rules} rules" + (f", {demos} demos" if demos else "")


def _test_lines(cfg: RunConfig, program: dspy.Module, compiled: dspy.Module, test: list, described: str,
                seed: int) -> None:
    task = resolve_task(program)
    with dspy.context(lm=lm_from_config(cfg.student), adapter=LabelAdapter()):
        zero, pld = (run_student(p, test, task, num_threads=cfg.student.threads) for p in (program, compiled))
    a, b = score_outcomes(zero, task.labels), score_outcomes(pld, task.labels)
    low, high = paired_difference(pld, zero, task.labels, seed=seed)
    print(f"test macro F1: zero-shot {a.macro_f1:.3f} | PLD {b.macro_f1:.3f} ({described}, {len(test)} examples)")
    print(f"test PLD - zero-shot: {b.macro_f1 - a.macro_f1:+.3f} macro F1, paired bootstrap 95% interval "
          f"{low:+.3f} to {high:+.3f}")
