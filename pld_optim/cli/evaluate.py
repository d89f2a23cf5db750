"""`pld-optim evaluate`: score a compiled program (or its folder's rules.json, or any rule file) on a split
or on your own held-out file; prints one JSON object."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dspy

from pld_optim.cli.common import lm_from_config, preflight
from pld_optim.cli.config import RunConfig, build_program, load_config, load_split
from pld_optim.evaluation.scoring import run_student, score_outcomes
from pld_optim.evaluation.task import resolve_task
from pld_optim.files import read_text
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.program import apply_rules
from pld_optim.rules import RuleSet


def _same_task(path: Path, program: dspy.Module) -> None:
    """dspy's load() pours any JSON state into any program: a program compiled for another task would be
    scored field-by-position with exit code 0. Refuse it, naming both."""
    try:
        state = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise ValueError(f"--program {path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(state, dict):
        raise ValueError(f"--program {path}: not a saved DSPy program (a JSON {type(state).__name__})")
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
    program = build_program(cfg.data)
    folder = Path(program_arg) if program_arg != "none" and Path(program_arg).is_dir() else None
    if program_arg != "none":
        path = folder / "program.json" if folder else Path(program_arg)
        if path.suffix != ".json":
            raise ValueError(f"--program {path}: only a program.json (or its folder) is loaded; pickled "
                             "programs can run code and are refused")
        if not path.is_file():
            raise FileNotFoundError(f"--program: {path} does not exist")
        _same_task(path, program)
        program.load(str(path))  # JSON state only: dspy refuses pickles unless allow_pickle=True
    rules_path = Path(rules_arg) if rules_arg else (folder / "rules.json" if folder else None)
    if rules_path is None or (not rules_arg and not rules_path.exists()):
        return program
    edited = apply_rules(build_program(cfg.data), RuleSet.load(rules_path))
    ours, theirs = edited.predictors()[0], program.predictors()[0]
    if ours.signature.instructions != theirs.signature.instructions or len(ours.demos) != len(theirs.demos):
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
    preflight(cfg, teacher=False)
    task = resolve_task(program)
    with dspy.context(lm=lm_from_config(cfg.student, cache=not args.no_cache), adapter=LabelAdapter()):
        outcomes = run_student(program, examples, task, num_threads=cfg.student.threads, progress=sys.stderr.isatty())
    result = score_outcomes(outcomes, task.labels).model_dump()
    result["mean_latency_s"] = round(sum(o.seconds for o in outcomes) / len(outcomes), 4)
    result["split"] = split
    print(json.dumps(result))
    return 0
