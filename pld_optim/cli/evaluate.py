"""`pld-optim evaluate`: score a compiled program (or its folder's rules.json, or any rule file) on a split
or on your own held-out file; prints one JSON object."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import dspy

from pld_optim.cli.common import check_answers, lm_from_config, preflight
from pld_optim.cli.config import RunConfig, load_config
from pld_optim.datasets import DataError
from pld_optim.datasets.tasks import build_program, load_split
from pld_optim.evaluation.scoring import run_student
from pld_optim.evaluation.task import refuse_overlap, resolve_task
from pld_optim.files import FileFormatError, read_json
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.plan import apply_rules
from pld_optim.rules import RuleSet

log = logging.getLogger("pld_optim")


def _same_task(path: Path, program: dspy.Module) -> dict:
    """dspy's load() pours any JSON state into any program: a program compiled for another task would be
    scored field-by-position with exit code 0. Refuse it, naming both. Returns the state, read as every
    file is (a byte-order mark from an editor is no error)."""
    try:
        state = read_json(path)
    except FileFormatError as exc:
        raise ValueError(f"--program {exc}") from None
    if not isinstance(state, dict):
        raise ValueError(f"--program {path}: not a saved DSPy program (a JSON {type(state).__name__})")
    for name, predictor in program.named_predictors():
        saved = state if "signature" in state else state.get(name)
        if not isinstance(saved, dict) or "signature" not in saved:
            raise ValueError(f"--program {path}: no predictor {name!r} in it; it was saved from another program")
        demos = saved.get("demos", [])
        if not isinstance(demos, list) or not all(isinstance(d, dict) for d in demos):
            raise ValueError(f"--program {path}: not a program state DSPy can load (predictor {name!r}: demos must "
                             "be a list of objects); save it with program.save('program.json')")
        got = [f.get("prefix") for f in saved["signature"].get("fields", [])]
        want = [f.json_schema_extra["prefix"] for f in predictor.signature.fields.values()]
        if got != want:
            raise ValueError(f"--program {path}: its fields are {got}, the config's task has {want}; it was "
                             "compiled for another task or config")
    return state


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
            raise FileNotFoundError(f"--program: {path} does not exist" + (
                " (the folder holds no program.json: give the --out folder of a compile)" if folder else ""))
        state = _same_task(path, program)
        # JSON state only (never a pickle), through the state read above: dspy's own load() reads the file
        # again with another decoder and fails on a byte-order mark or a missing `metadata` with a traceback.
        try:
            program.load_state(state)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"--program {path}: not a program state DSPy can load ({type(exc).__name__}: "
                             f"{exc}); save it with program.save('program.json')") from None
    rules_path = Path(rules_arg) if rules_arg else (folder / "rules.json" if folder else None)
    if rules_path is None or (not rules_arg and not rules_path.exists()):
        return program
    edited = apply_rules(build_program(cfg.data), RuleSet.load(rules_path))
    if _prompt_of(edited) != _prompt_of(program):
        print(f"note: scoring the rules in {rules_path}, which differ from the program's", file=sys.stderr)
    return edited


def _prompt_of(program: dspy.Module) -> tuple[str, list[dict]]:
    """What the student sees from a program: its instructions and each demo's fields (an edited demo counts,
    not only a changed number of them)."""
    predictor = program.predictors()[0]
    fields = list(predictor.signature.fields)
    return predictor.signature.instructions, [{k: str(d.get(k)) for k in fields} for d in predictor.demos]


def evaluate_cmd(args) -> int:
    cfg = load_config(args.config)
    program = load_program(cfg, args.program, args.rules)
    split = args.split or ("all" if args.data else "test")
    examples = load_split(cfg.data, split, path=args.data)
    if args.limit:
        examples = examples[: args.limit]
    if not examples:
        raise ValueError(f"no examples in split {split!r} of {args.data or cfg.data.path or cfg.data.dataset}")
    task = resolve_task(program)
    shared = _check_overlap(cfg, examples, task.input_fields, split, args.data)
    student = lm_from_config(cfg.student, cache=not args.no_cache)
    preflight(cfg, teacher=False)
    with dspy.context(lm=student, adapter=LabelAdapter()):
        outcomes = run_student(program, examples, task, num_threads=cfg.student.threads, progress=sys.stderr.isatty())
    score = check_answers(outcomes, task.labels, f"evaluate: split {split!r}", cfg)
    result = score.model_dump()
    result["mean_latency_s"] = round(sum(o.seconds for o in outcomes) / len(outcomes), 4)
    result["split"] = split
    if shared:
        result["data_overlap"] = shared
    print(json.dumps(result))
    return 0


def _check_overlap(cfg: RunConfig, examples: list, input_fields: list[str], split: str, data: str | None) -> dict:
    """Scored examples that are also the config's train or dev examples (by content, not id) would score
    what the rules were fitted to: refused unless pld.allow_overlap, as `compile --test` does. Scoring the
    config's own train, dev or all split is what was asked for."""
    if data is None and split in ("train", "dev", "all"):
        return {}
    try:
        fitted = {name: load_split(cfg.data, name) for name in ("train", "dev")}
    except (DataError, OSError) as exc:
        log.warning("evaluate: could not read the config's train and dev splits to check for overlap (%s)", exc)
        return {}
    scored = "data" if data else split
    where = f"evaluate: {_scored_name(data, split)}"
    return refuse_overlap({**fitted, scored: examples}, input_fields, scored, allow=cfg.pld_checked().allow_overlap,
                          where=where)


def _scored_name(data: str | None, split: str) -> str:
    return f"--data {data}" if data else f"the {split} split"
