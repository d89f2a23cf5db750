"""`pld-optim`: compile, quickstart, evaluate, ablate, pick, compare, report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import dspy

from pld_optim.adapter import LabelAdapter
from pld_optim.artifact import RuleSet
from pld_optim.config import RunConfig, build_program, load_config, load_split
from pld_optim.models import lm_from_config
from pld_optim.pld import PLD
from pld_optim.report import render_report
from pld_optim.review import write_review
from pld_optim.run_folder import atomic_write_text, check_cache, check_writable, clear_run
from pld_optim.scoring import run_student, score_outcomes
from pld_optim.task import resolve_task
from pld_optim.tracking import Tracker
from pld_optim.usage import UsageLog

log = logging.getLogger("pld_optim")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("dspy", "httpx", "LiteLLM", "datasets", "optuna"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.WARNING)


def _pld(cfg: RunConfig, out: Path | None, seed: int) -> PLD:
    search = cfg.search
    if search is not None and search.study_name is None:
        search = search.model_copy(update={"study_name": cfg.name})
    return PLD(teacher=lm_from_config(cfg.teacher), out_dir=out, seed=seed, progress=sys.stderr.isatty(), search=search,
               num_threads=cfg.teacher.threads, student_threads=cfg.student.threads, **cfg.pld.model_dump())


def compile_cmd(args) -> int:
    cfg = load_config(args.config)
    seed = cfg.seed if args.seed is None else args.seed
    out = Path(args.out)
    check_writable(out)
    program = build_program(cfg.data)
    train, dev = load_split(cfg.data, "train"), load_split(cfg.data, "dev")
    pld = _pld(cfg, out, seed)
    if args.fresh and not args.dry_run:
        removed = clear_run(out)
        print(f"--fresh: removed {', '.join(removed) or 'nothing'} from {out}")
    # Data, labels, parameters, the folder, its cache and the study are checked before any LM call (and by
    # --dry-run).
    pld.check(program, train, dev)
    check_cache(out / "cache")
    tracker = Tracker.from_config(cfg.tracking)  # MLflow missing for a configured `tracking:` fails here
    if tracker:
        tracker.check()
    estimate = pld.estimate_calls(len(train), len(dev), len(resolve_task(program).labels))
    print(f"data: {len(train)} train, {len(dev)} dev | student {cfg.student.model} | teacher {cfg.teacher.model}")
    print("LM calls, at most: " + ", ".join(f"{k} {v}" for k, v in estimate.items())
          + f" (total {sum(estimate.values())})")
    if args.dry_run:
        print("dry run: data, labels, settings, output folder and study storage checked; nothing was called")
        return 0
    from pld_optim.ollama import preflight_all

    preflight_all([cfg.student.model, cfg.teacher.model], {cfg.student.model: cfg.student.api_base,
                                                           cfg.teacher.model: cfg.teacher.api_base}, pull=args.pull)
    out.mkdir(parents=True, exist_ok=True)
    # The cache lives with the run: rerunning the same command after an interruption replays finished
    # LM calls for free and continues where it stopped.
    _disk_cache(out / "cache")
    start = time.perf_counter()
    with dspy.context(lm=lm_from_config(cfg.student), track_usage=True):
        compiled = pld.compile(program, trainset=train, valset=dev)
    rules = compiled.pld_rules
    context = {**_run_context(cfg, args.config, seed), "train / dev examples": f"{len(train)} / {len(dev)}",
               "wall time": f"{time.perf_counter() - start:.0f} s"}
    atomic_write_text(out / "report.md", render_report(rules, title=f"PLD compile: {cfg.name}", context=context))
    write_review(out, rules, context=context, title=f"PLD rule review: {cfg.name}")
    for name in ("program.json", "rules.json", "system_prompt.txt", "report.md", "review.html"):
        print(f"wrote {out / name}")
    if tracker:
        params = {"config": args.config, "seed": seed, "train_examples": len(train), "dev_examples": len(dev),
                  "student": cfg.student.model_dump(), "teacher": cfg.teacher.model_dump(),
                  "data": cfg.data.model_dump(), "pld": cfg.pld.model_dump(),
                  "search": cfg.search.model_dump() if cfg.search else "none"}
        run_id = tracker.log_compile(rules, out, run_name=cfg.name, params=params, program=compiled,
                                     student_lm=lm_from_config(cfg.student))
        print(f"logged MLflow run {run_id} (experiment {tracker.experiment!r}) to {tracker.uri}")
    n_rules = len(rules.active_rules())
    baseline = rules.baseline_dev_macro_f1
    print(f"dev  macro F1: zero-shot {'n/a' if baseline is None else f'{baseline:.3f}'} | PLD {rules.dev_macro_f1:.3f} "
          f"({n_rules} rules, {len(dev)} examples)")
    if args.test:
        test = load_split(cfg.data, "test")
        if not test:
            raise ValueError("--test: the test split is empty; set data.fractions")
        task = resolve_task(program)
        with dspy.context(lm=lm_from_config(cfg.student), adapter=LabelAdapter()):
            scores = [score_outcomes(run_student(p, test, task, num_threads=cfg.student.threads), task.labels)
                      for p in (program, compiled)]
        print(f"test macro F1: zero-shot {scores[0].macro_f1:.3f} | PLD {scores[1].macro_f1:.3f} "
              f"({n_rules} rules, {len(test)} examples)")
    return 0


def _run_context(cfg: RunConfig, config: str, seed: int | None = None) -> dict:
    """The header of report.md and review.html; pick and ablate rewrite review.html with it too."""
    return {"config": config, "student": cfg.student.model, "teacher": cfg.teacher.model,
            "seed": cfg.seed if seed is None else seed}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _disk_cache(folder: Path) -> None:
    check_cache(folder)
    dspy.configure_cache(enable_disk_cache=True, disk_cache_dir=str(folder))


def _same_task(path: Path, program: dspy.Module) -> None:
    """dspy's load() pours any JSON state into any program: a program compiled for another task would be
    scored field-by-position with exit code 0. Refuse it, naming both."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"--program {path}: not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    for name, predictor in program.named_predictors():
        saved = state if "signature" in state else state.get(name)
        if not isinstance(saved, dict) or "signature" not in saved:
            raise ValueError(f"--program {path}: no predictor {name!r} in it; it was saved from another program")
        got = [f.get("prefix") for f in saved["signature"].get("fields", [])]
        want = [f.json_schema_extra["prefix"] for f in predictor.signature.fields.values()]
        if got != want:
            raise ValueError(f"--program {path}: its fields are {got}, the config's task has {want}; it was "
                             "compiled for another task or config")


def load_program(cfg: RunConfig, program_arg: str, rules_arg: str | None = None) -> dspy.Module:
    """The program to score. A compile folder's rules.json is what a reviewer edits, so it wins over
    program.json when they differ (a note says so); `--rules FILE` scores any edited rule file."""
    from pld_optim.pld import apply_rules

    program = build_program(cfg.data)
    folder = Path(program_arg) if program_arg != "none" and Path(program_arg).is_dir() else None
    if program_arg != "none":
        path = folder / "program.json" if folder else Path(program_arg)
        if path.suffix != ".json":
            raise ValueError(f"--program {path}: only a program.json (or its folder) is loaded; pickled "
                             "programs can run code and are refused")
        if not path.exists():
            raise FileNotFoundError(f"--program: {path} does not exist")
        _same_task(path, program)
        program.load(str(path))  # JSON state only: dspy refuses pickles unless allow_pickle=True
    rules_path = Path(rules_arg) if rules_arg else (folder / "rules.json" if folder else None)
    if rules_path is None or (not rules_arg and not rules_path.exists()):
        return program
    edited = apply_rules(build_program(cfg.data), RuleSet.load(rules_path))
    if edited.predictors()[0].signature.instructions != program.predictors()[0].signature.instructions:
        print(f"note: scoring the rules in {rules_path}, which differ from the program's", file=sys.stderr)
    return edited


def evaluate_cmd(args) -> int:
    cfg = load_config(args.config)
    program = load_program(cfg, args.program, args.rules)
    split = args.split or ("all" if args.data else "test")
    examples = load_split(cfg.data, split, path=args.data)
    if args.limit:
        examples = examples[: args.limit]
    if not examples:
        raise ValueError(f"no examples in split {split!r} of {args.data or cfg.data.path or cfg.data.dataset}")
    from pld_optim.ollama import preflight_all

    preflight_all([cfg.student.model], {cfg.student.model: cfg.student.api_base})
    task = resolve_task(program)
    with dspy.context(lm=lm_from_config(cfg.student, cache=not args.no_cache), adapter=LabelAdapter()):
        outcomes = run_student(program, examples, task, num_threads=cfg.student.threads,
                               progress=sys.stderr.isatty())
    score = score_outcomes(outcomes, task.labels)
    result = score.model_dump()
    result["mean_latency_s"] = round(sum(o.seconds for o in outcomes) / len(outcomes), 4)
    result["split"] = split
    print(json.dumps(result))
    return 0


def pick_cmd(args) -> int:
    """Choose another point of a multi-objective search's Pareto front, with no LM call."""
    from pld_optim.pld import apply_rules, save_artifacts

    cfg = load_config(args.config)
    out = Path(args.dir)
    rules = RuleSet.load(out / "rules.json").pick(args.max_tokens)
    program = apply_rules(build_program(cfg.data), rules)
    rules.system_prompt = LabelAdapter().format_system_message(program.predictors()[0].signature)
    save_artifacts(program, rules, out, context=_run_context(cfg, args.config, rules.seed),
                   title=f"PLD rule review: {cfg.name}")
    chosen = next(c for c in rules.search.pareto if c.selection == rules.selection)
    print(f"picked {len(rules.selection)} rules, {chosen.prompt_tokens} prompt tokens, dev macro F1 "
          f"{chosen.macro_f1:.4f}; rewrote {out / 'program.json'}, rules.json, system_prompt.txt and review.html")
    return 0


def compare_cmd(args) -> int:
    from pld_optim.compare import ALL, Setup, render_html, render_markdown, run_compare, summarize

    cfg = load_config(args.config)
    optimizers = ALL if args.optimizers == "all" else [o.strip() for o in args.optimizers.split(",") if o.strip()]
    unknown = [o for o in optimizers if o not in ALL]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; choose from {ALL}")
    try:
        seeds = [int(x) for x in args.seeds.split(",")]
    except ValueError:
        raise ValueError(f"--seeds {args.seeds!r}: expected comma-separated integers, e.g. 0,1,2") from None
    out = Path(args.out)
    check_writable(out)
    program = build_program(cfg.data)
    train, dev, test = (load_split(cfg.data, s) for s in ("train", "dev", "test"))
    if not test:
        raise ValueError("the test split is empty; set data.fractions or data.test_limit")
    print(f"compare {optimizers} x seeds {seeds} | {len(train)} train, {len(dev)} dev, {len(test)} test | "
          f"student {cfg.student.model} | teacher {cfg.teacher.model} | budget {args.budget}")
    tracker = Tracker.from_config(cfg.tracking)
    if tracker:
        tracker.check()
    if args.dry_run:
        return 0
    from pld_optim.ollama import preflight_all

    preflight_all([cfg.student.model, cfg.teacher.model], {cfg.student.model: cfg.student.api_base,
                                                           cfg.teacher.model: cfg.teacher.api_base})
    out.mkdir(parents=True, exist_ok=True)
    _disk_cache(out / "cache")
    results = []
    for seed in seeds:
        setup = Setup(program=program, train=train, dev=dev, test=test, student=lm_from_config(cfg.student),
                      teacher=lm_from_config(cfg.teacher), seed=seed, threads=cfg.student.threads, budget=args.budget,
                      pld_kwargs=cfg.pld.model_dump())
        results += run_compare(setup, optimizers, out)
    task = resolve_task(program)
    rows = summarize(results, out, task.labels)
    context = {"config": args.config, "student": cfg.student.model, "teacher": cfg.teacher.model,
               "data": f"{len(train)} train / {len(dev)} dev / {len(test)} test", "seeds": seeds,
               "budget": args.budget}
    markdown = render_markdown(rows, context)
    (out / "compare.md").write_text(markdown, encoding="utf-8")
    render_html(rows, context, out / "compare.html")
    print(markdown)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.html'}")
    if tracker:
        run_id = tracker.log_compare(rows, context, out, run_name=f"compare: {cfg.name}")
        print(f"logged MLflow run {run_id} (experiment {tracker.experiment!r}) to {tracker.uri}")
    return 0


def ablate_cmd(args) -> int:
    """Each active rule's contribution, for an edited rules.json too: one dev pass per rule, no teacher."""
    from pld_optim.ablate import rule_contributions, with_contributions
    from pld_optim.artifact import render_instructions
    from pld_optim.ollama import preflight_all
    from pld_optim.pld import with_instructions

    cfg = load_config(args.config)
    out = Path(args.dir)
    rules = RuleSet.load(out / "rules.json")
    program = build_program(cfg.data)
    task = resolve_task(program)
    dev = load_split(cfg.data, "dev")
    if not dev:
        raise ValueError("ablate: the dev split is empty; set data.fractions")
    preflight_all([cfg.student.model], {cfg.student.model: cfg.student.api_base})
    _disk_cache(out / "cache")  # prompts the search already scored are cache hits
    student = lm_from_config(cfg.student)

    def score(texts: list[str]) -> float:
        instructions = render_instructions(rules.base_instructions, texts, rules.label_field, rules.preamble)
        candidate = with_instructions(program, rules.predictor, instructions)
        with dspy.context(lm=student, adapter=LabelAdapter()):
            outcomes = run_student(candidate, dev, task, num_threads=cfg.student.threads)
        return score_outcomes(outcomes, task.labels).macro_f1

    usage = UsageLog()
    with usage.stage("contribution") as spent:
        contributions = rule_contributions(rules, score)
    updated = with_contributions(rules, contributions)
    updated.save(out / "rules.json")
    write_review(out, updated, context=_run_context(cfg, args.config, rules.seed),
                 title=f"PLD rule review: {cfg.name}")
    for (rule_id, value), text in zip(contributions.items(), rules.active_rules()):
        flag = "  <- the prompt scores higher without it" if value < 0 else ""
        print(f"{value:+.4f}  {rule_id}: {text[:100]}{flag}")
    print(f"wrote the contributions ({len(dev)} dev examples; {spent.lm_calls} student calls, {spent.cache_hits} "
          f"from the cache, {spent.seconds:.0f} s) to {out / 'rules.json'} and {out / 'review.html'}")
    return 0


def report_cmd(args) -> int:
    path = Path(args.dir) / "report.md"
    if not path.exists():
        rules = RuleSet.load(Path(args.dir) / "rules.json")
        print(render_report(rules))
    else:
        print(path.read_text(encoding="utf-8"))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pld-optim", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="also show DSPy's and litellm's logs")
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="distil rules for the configured task")
    c.add_argument("config")
    c.add_argument("--out", required=True)
    c.add_argument("--seed", type=int)
    c.add_argument("--dry-run", action="store_true", help="print the LM-call estimate and stop")
    c.add_argument("--pull", action="store_true", help="let Ollama pull a missing model")
    c.add_argument("--test", action="store_true", help="then score zero-shot and PLD on the test split")
    c.add_argument("--fresh", action="store_true",
                   help="remove what an earlier compile wrote to --out (mined rules, cache, study, artifacts) first")
    c.set_defaults(func=compile_cmd)

    q = sub.add_parser("quickstart", help="compile the shipped quickstart config on the embedded models")
    q.add_argument("--out", default="out/quickstart")
    q.add_argument("--seed", type=int)
    q.add_argument("--dry-run", action="store_true")
    q.add_argument("--fresh", action="store_true", help="start over in --out")
    q.set_defaults(func=compile_cmd, config="quickstart", pull=False, test=True)

    e = sub.add_parser("evaluate", help="score a compiled (or unoptimized) program; prints one JSON object")
    e.add_argument("config")
    e.add_argument("--program", required=True, help="a compile output folder, a program.json, or 'none'")
    e.add_argument("--data", help="a data file in the benchmark's format (default: the config's data)")
    e.add_argument("--split", help="train, dev, test or all (default: test, or all with --data)")
    e.add_argument("--rules", help="score this rules.json (e.g. a reviewer's edit) instead of the folder's; no teacher "
                                   "call")
    e.add_argument("--limit", type=_positive, help="score only the first N examples (N >= 1)")
    e.add_argument("--no-cache", action="store_true", help="call the student even for answers in DSPy's cache")
    e.set_defaults(func=evaluate_cmd)

    p = sub.add_parser("pick", help="choose a Pareto point (multi-objective search) within a token budget")
    p.add_argument("config")
    p.add_argument("dir")
    p.add_argument("--max-tokens", type=int, required=True)
    p.set_defaults(func=pick_cmd)

    k = sub.add_parser("compare", help="PLD against DSPy's optimizers on the same student, data and seed")
    k.add_argument("config")
    k.add_argument("--optimizers", default="zero-shot,cot,bootstrap-fewshot,infer-rules-0shot,miprov2-0shot,pld",
                   help="comma-separated, or 'all': zero-shot, cot, bootstrap-fewshot, infer-rules, "
                        "infer-rules-0shot, miprov2, miprov2-0shot, copro, gepa, simba, pld")
    k.add_argument("--out", required=True)
    k.add_argument("--seeds", default="0")
    k.add_argument("--budget", choices=["small", "light"], default="small",
                   help="small: a few candidates/trials each (fits a 2-core machine); light: DSPy's auto='light'")
    k.add_argument("--dry-run", action="store_true")
    k.set_defaults(func=compare_cmd)

    a = sub.add_parser("ablate", help="each active rule's dev macro F1 contribution (e.g. after editing rules.json)")
    a.add_argument("config")
    a.add_argument("dir")
    a.set_defaults(func=ablate_cmd)

    r = sub.add_parser("report", help="print a compile's report.md")
    r.add_argument("dir")
    r.set_defaults(func=report_cmd)

    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume from the cache and checkpoints", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as exc:
        print(f"pld-optim: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
