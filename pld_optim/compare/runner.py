"""Compare PLD with DSPy's own optimizers on the same student, teacher, splits and seed.

Each optimizer compiles the same unoptimized program; its compile spend is counted the same way for every
peer: one tally around the whole compile (`compile_one`) gives wall time, the student's and the teacher's LM
calls (told apart even when they are one model), the cache hits among them and the tokens of the calls that
reached a model. Each optimizer compiles on its own part of the LM cache (pld_optim.compare.cache), so no
optimizer's calls are free because another one made them first. Each compiled program is scored on the test
split with the cache off: macro F1 with a bootstrap interval, per-class F1, accuracy, latency and output
tokens per example, and prompt tokens per call. Every (optimizer, seed) result is saved as it finishes, so a
rerun skips what is done (a run that failed is run again). A difference whose paired-bootstrap interval
contains zero is reported as none. A test split no interval can be computed on (one example) is refused
before the first compile; a declared label no test example has is left out of every macro and shown as
absent (`labels_absent`), never as an F1 of 0.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path

import dspy
from pydantic import BaseModel

from pld_optim.compare.cache import own_cache
from pld_optim.compare.registry import ALL, Setup, optimizers
from pld_optim.evaluation.coverage import check_test
from pld_optim.evaluation.scoring import Outcome, run_student, score_outcomes
from pld_optim.evaluation.stats import macro_f1_interval, paired_difference
from pld_optim.evaluation.task import Task, resolve_task
from pld_optim.files import atomic_write_text, lines, read_text
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.records import StageUsage
from pld_optim.run.usage import UsageLog, usage_key, with_role

logger = logging.getLogger(__name__)


class RunResult(BaseModel):
    optimizer: str
    seed: int
    macro_f1: float
    ci_low: float
    ci_high: float
    per_class_f1: dict[str, float]
    accuracy: float
    n: int
    failures: int
    latency_s: float
    output_tokens: float
    prompt_tokens: float
    compile_seconds: float
    compile_usage: StageUsage
    teacher_calls: int
    student_calls: int
    error: str | None = None


def run_compare(setup: Setup, names: list[str], out: Path) -> list[RunResult]:
    """Each optimizer in `names` on `setup`, its result saved in `out` as it finishes (a rerun skips it).

    Checked first, before any LM call: the names, and a test split each result's bootstrap interval can be
    computed on (else every compile would be paid and the first interval would fail). The labels no test
    example has are not warned about here (once per seed would repeat it); the summary rows name them."""
    unknown = [o for o in names if o not in ALL]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; choose from {ALL}")
    task = resolve_task(setup.program)
    check_test(setup.test, task, "compare", fix="give Setup.test more examples", warn=False)
    out.mkdir(parents=True, exist_ok=True)
    setup = setup.model_copy(update={"out": out})
    results = []
    for name in names:
        path = out / f"{name}-seed{setup.seed}.json"
        if path.exists():
            try:
                done = RunResult.model_validate_json(read_text(path))
            except ValueError as exc:
                raise ValueError(f"{path} is not a compare result ({str(exc).splitlines()[0]}); delete it to run "
                                 f"{name} (seed {setup.seed}) again") from None
            if done.error is None:
                logger.info("compare: %s (seed %d) already done; skipping", name, setup.seed)
                results.append(done)
                continue
            logger.info("compare: %s (seed %d) failed last time (%s); running it again", name, setup.seed,
                        done.error[:200])
        logger.info("compare: compiling with %s (seed %d)", name, setup.seed)
        results.append(_run_one(name, setup, task, out))
        atomic_write_text(path, results[-1].model_dump_json(indent=2))
    return results


def isolated(program: dspy.Module) -> dspy.Module:
    """A deep copy whose signatures are new classes. InferRules assigns `signature.instructions`, which
    writes the class shared by every copy; without this, one optimizer's rules leak into the next run."""
    copy = program.deepcopy()
    for _, predictor in copy.named_predictors():
        predictor.signature = predictor.signature.with_instructions(predictor.signature.instructions)
    return copy


class CompileCost(BaseModel):
    """What one optimizer's compile spent: `usage.lm_calls` counts every call it made (`usage.cache_hits` of
    them answered from its own cache, free), tokens those that reached a model."""

    seconds: float
    usage: StageUsage
    student_calls: int
    teacher_calls: int
    error: str | None = None


def compile_one(name: str, setup: Setup, task: Task) -> tuple[dspy.Module, CompileCost]:
    """Compile `setup.program` with optimizer `name` and count what it spent, as every peer is counted: one
    tally around the whole compile (the optimizer's own tallies, PLD's stages, add to it), on the optimizer's
    own part of the cache, with the student and teacher told apart even when they are one model."""
    student, teacher = with_role(setup.student, "student"), with_role(setup.teacher, "teacher")
    setup = setup.model_copy(update={"student": student, "teacher": teacher})
    usage, error = UsageLog(), None
    start = time.perf_counter()
    with dspy.context(lm=student, adapter=LabelAdapter()), own_cache(name), usage.stage(f"compile:{name}") as spent:
        try:
            compiled = optimizers(task, setup)[name](isolated(setup.program))
        except Exception as exc:  # noqa: BLE001 - one optimizer failing must not lose the others
            logger.warning("compare: %s failed: %s", name, exc)
            compiled, error = isolated(setup.program), f"{type(exc).__name__}: {exc}"[:500]
            spent.failures = 1
    cost = usage.stages[0]
    return compiled, CompileCost(seconds=round(time.perf_counter() - start, 2), usage=cost, error=error,
                                 student_calls=cost.by_model.get(usage_key(student), 0),
                                 teacher_calls=cost.by_model.get(usage_key(teacher), 0))


def _run_one(name: str, setup: Setup, task: Task, out: Path) -> RunResult:
    compiled, cost = compile_one(name, setup, task)
    compiled.save(str(out / f"{name}-seed{setup.seed}.program.json"))
    # Scored with the cache off, one example at a time, so latency and tokens are real for every seed.
    scorer = setup.student.copy(cache=False)
    with dspy.context(lm=scorer, adapter=LabelAdapter()):
        outcomes = run_student(compiled, setup.test, resolve_task(compiled, task.labels, task.label_field),
                               num_threads=1)
    prompt = [int((e.get("usage") or {}).get("prompt_tokens") or 0) for e in scorer.history]
    completion = [int((e.get("usage") or {}).get("completion_tokens") or 0) for e in scorer.history]
    score = score_outcomes(outcomes, task.labels)
    low, high = macro_f1_interval(outcomes, task.labels, seed=setup.seed)
    atomic_write_text(out / f"{name}-seed{setup.seed}.outcomes.jsonl",
                      "".join(o.model_dump_json() + "\n" for o in outcomes))
    return RunResult(
        optimizer=name, seed=setup.seed, macro_f1=score.macro_f1, ci_low=low, ci_high=high,
        per_class_f1=score.per_class_f1, accuracy=score.accuracy, n=score.n, failures=score.failures,
        latency_s=statistics.mean(o.seconds for o in outcomes),
        output_tokens=statistics.mean(completion) if completion else 0.0,
        prompt_tokens=statistics.mean(prompt) if prompt else 0.0, compile_seconds=cost.seconds,
        compile_usage=cost.usage, teacher_calls=cost.teacher_calls, student_calls=cost.student_calls,
        error=cost.error)


def load_outcomes(out: Path, name: str, seed: int) -> list[Outcome]:
    path = out / f"{name}-seed{seed}.outcomes.jsonl"
    return [Outcome.model_validate_json(line) for line in lines(read_text(path)) if line.strip()]


def summarize(results: list[RunResult], out: Path, labels: list[str]) -> list[dict]:
    """One row per optimizer: mean over seeds, seed spread, CI, and the verdict against zero-shot.

    A result's `per_class_f1` holds the labels its test gold contains (`Score.per_class_f1`); every result
    is scored on the one test split, so a label one of them lacks is absent from the split. Each row's
    `per_class_f1` holds the labels present, in declared order, and `labels_absent` the others, so no table
    shows an F1 for a label nothing measured (compare.md's per-class columns are the present labels; its
    header says which labels the test split lacks)."""
    by_name: dict[str, list[RunResult]] = {}
    for r in results:
        by_name.setdefault(r.optimizer, []).append(r)
    absent = [k for k in labels if any(k not in r.per_class_f1 for r in results)]
    present = [k for k in labels if k not in absent]
    return [_row(name, runs, "zero-shot" in by_name and name != "zero-shot", out, labels, present, absent)
            for name, runs in by_name.items()]


def _row(name: str, runs: list[RunResult], against_zero_shot: bool, out: Path, labels: list[str],
         present: list[str], absent: list[str]) -> dict:
    f1s = [r.macro_f1 for r in runs]
    verdict = ""
    if against_zero_shot:
        seed = runs[0].seed
        try:
            low, high = paired_difference(load_outcomes(out, name, seed), load_outcomes(out, "zero-shot", seed),
                                          labels, seed=seed)
            verdict = ("better" if low > 0 else "worse" if high < 0 else "no difference") + \
                f" ({low:+.3f} to {high:+.3f})"
        except (FileNotFoundError, IndexError):
            verdict = "n/a"
    first = runs[0].compile_usage  # later seeds replay cached calls: cost is the first, fresh run's
    return {
        "optimizer": name, "seeds": len(runs), "macro_f1": statistics.mean(f1s), "spread": (min(f1s), max(f1s)),
        "ci": (runs[0].ci_low, runs[0].ci_high), "accuracy": statistics.mean(r.accuracy for r in runs),
        "vs_zero_shot": verdict, "latency_s": statistics.mean(r.latency_s for r in runs),
        "output_tokens": statistics.mean(r.output_tokens for r in runs),
        "prompt_tokens": statistics.mean(r.prompt_tokens for r in runs),
        # Every call the compile made (student + teacher), and those of them that reached a model (billed:
        # the cache answered the rest). "compile_calls" is the billed count under its old name, which
        # run/tracking.py and benchmarks/quality.py still read.
        "lm_calls": first.lm_calls, "billed_calls": first.lm_calls - first.cache_hits,
        "compile_calls": first.lm_calls - first.cache_hits, "cache_hits": first.cache_hits,
        "compile_tokens": first.prompt_tokens + first.completion_tokens,
        "student_calls": runs[0].student_calls, "teacher_calls": runs[0].teacher_calls,
        "compile_seconds": runs[0].compile_seconds,
        "per_class_f1": {k: statistics.mean(r.per_class_f1[k] for r in runs) for k in present},
        "labels_absent": absent,
        "errors": [r.error for r in runs if r.error],
    }
