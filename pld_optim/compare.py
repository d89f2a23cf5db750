"""Compare PLD with DSPy's own optimizers on the same student, teacher, splits and seed.

Each optimizer compiles the same unoptimized program; its compile spend (LM calls and tokens per model,
wall time) is read from DSPy's history like PLD's stages. Each compiled program is scored on the test
split: macro F1 with a bootstrap confidence interval, per-class F1, accuracy, latency and output tokens
per example, and prompt tokens per call. Every (optimizer, seed) result is saved as it finishes, so a
rerun skips what is done. A difference whose paired-bootstrap interval contains zero is reported as none.
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import dspy
import numpy as np
import sklearn
from pydantic import BaseModel, Field
from sklearn.metrics import f1_score

from pld_optim.adapter import LabelAdapter
from pld_optim.artifact import StageUsage
from pld_optim.pld import PLD
from pld_optim.run_folder import atomic_write_text
from pld_optim.scoring import Outcome, run_student, score_outcomes
from pld_optim.task import Task, resolve_task
from pld_optim.usage import UsageLog

logger = logging.getLogger(__name__)

ALL = ["zero-shot", "cot", "bootstrap-fewshot", "infer-rules", "infer-rules-0shot", "miprov2", "miprov2-0shot",
       "copro", "gepa", "simba", "pld"]


class Setup(BaseModel):
    """What every optimizer shares."""

    model_config = {"arbitrary_types_allowed": True}
    program: dspy.Module
    train: list[dspy.Example]
    dev: list[dspy.Example]
    test: list[dspy.Example]
    student: dspy.BaseLM
    teacher: dspy.BaseLM
    seed: int = 0
    threads: int = 2
    budget: str = "small"
    pld_kwargs: dict = Field(default_factory=dict)
    out: Path | None = None


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


def _exact(task: Task):
    def metric(example, prediction, trace=None, *args):
        return float(str(getattr(prediction, task.label_field, "")) == str(example[task.label_field]))
    return metric


def _gepa_metric(task: Task):
    def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        ok = str(getattr(pred, task.label_field, "")) == str(gold[task.label_field])
        return dspy.Prediction(score=float(ok), feedback="correct" if ok else
                               f"wrong: expected {gold[task.label_field]}, got {getattr(pred, task.label_field, None)}")
    return metric


def _optimizers(task: Task, s: Setup) -> dict[str, Callable[[dspy.Module], dspy.Module]]:
    metric, small = _exact(task), s.budget == "small"
    teach = {"lm": s.teacher}
    n_val = len(s.dev)
    return {
        "zero-shot": lambda p: p,
        "cot": lambda p: dspy.ChainOfThought(p.predictors()[0].signature),
        "bootstrap-fewshot": lambda p: dspy.BootstrapFewShot(
            metric=metric, teacher_settings=teach, max_bootstrapped_demos=4, max_labeled_demos=4
        ).compile(p, trainset=s.train),
        "infer-rules": lambda p: dspy.InferRules(
            metric=metric, teacher_settings=teach, num_candidates=2 if small else 10, num_threads=s.threads,
            max_bootstrapped_demos=4, max_labeled_demos=4).compile(p, trainset=s.train, valset=s.dev),
        "infer-rules-0shot": lambda p: dspy.InferRules(
            metric=metric, teacher_settings=teach, num_candidates=2 if small else 10, num_threads=s.threads,
            max_bootstrapped_demos=0, max_labeled_demos=0).compile(p, trainset=s.train, valset=s.dev),
        "miprov2": lambda p: _mipro(p, s, metric, demos=4),
        "miprov2-0shot": lambda p: _mipro(p, s, metric, demos=0),
        "copro": lambda p: dspy.COPRO(prompt_model=s.teacher, metric=metric, breadth=3 if small else 10,
                                      depth=1 if small else 3).compile(
            p, trainset=s.train, eval_kwargs={"num_threads": s.threads, "display_progress": False}),
        "gepa": lambda p: dspy.GEPA(
            metric=_gepa_metric(task), reflection_lm=s.teacher, num_threads=s.threads, seed=s.seed,
            **({"max_metric_calls": 6 * (len(s.train) + n_val)} if small else {"auto": "light"})
        ).compile(p, trainset=s.train, valset=s.dev),
        "simba": lambda p: dspy.SIMBA(metric=metric, prompt_model=s.teacher, bsize=min(32, len(s.train)),
                                      num_candidates=2 if small else 6, max_steps=2 if small else 8,
                                      num_threads=s.threads).compile(p, trainset=s.train, seed=s.seed),
        "pld": lambda p: PLD(teacher=s.teacher, seed=s.seed, num_threads=s.threads,
                             out_dir=(s.out / f"pld-seed{s.seed}") if s.out else None,
                             **s.pld_kwargs).compile(p, trainset=s.train, valset=s.dev),
    }


def _mipro(program, s: Setup, metric, demos: int):
    kwargs = dict(metric=metric, prompt_model=s.teacher, task_model=s.student, max_bootstrapped_demos=demos,
                  max_labeled_demos=demos, num_threads=s.threads, seed=s.seed, verbose=False)
    if s.budget == "small":
        optimizer = dspy.MIPROv2(auto=None, num_candidates=3, **kwargs)
        return optimizer.compile(program, trainset=s.train, valset=s.dev, num_trials=4, minibatch=False)
    return dspy.MIPROv2(auto="light", **kwargs).compile(program, trainset=s.train, valset=s.dev)


def _encode(outcomes: list[Outcome], labels: list[str]):
    index = {label: i for i, label in enumerate(labels)}
    gold = np.array([index[o.gold] for o in outcomes])
    pred = np.array([index.get(o.pred, len(labels)) for o in outcomes])  # invalid -> an extra, unscored class
    return gold, pred


def _macro_f1(gold: np.ndarray, pred: np.ndarray, k: int) -> np.ndarray:
    """scikit-learn's macro F1 (zero_division=0) of each resampled row; `k` labels, index k is 'invalid'."""
    labels = list(range(k))
    with sklearn.config_context(skip_parameter_validation=True):  # the arrays are ours: 2,000 calls, not 20 s
        return np.array([f1_score(g, p, labels=labels, average="macro", zero_division=0) for g, p in zip(gold, pred)])


def bootstrap_ci(outcomes: list[Outcome], labels: list[str], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    gold, pred = _encode(outcomes, labels)
    idx = np.random.default_rng(seed).integers(0, len(gold), size=(n, len(gold)))
    values = _macro_f1(gold[idx], pred[idx], len(labels))
    return float(np.quantile(values, 0.025)), float(np.quantile(values, 0.975))


def paired_difference(a: list[Outcome], b: list[Outcome], labels: list[str], n: int = 2000, seed: int = 0):
    """95% interval of macro F1(a) - macro F1(b) over the same resampled test examples."""
    if [o.example_id for o in a] != [o.example_id for o in b]:
        raise ValueError("paired comparison needs the same test examples in the same order")
    (ga, pa), (_, pb) = _encode(a, labels), _encode(b, labels)
    idx = np.random.default_rng(seed).integers(0, len(ga), size=(n, len(ga)))
    diffs = _macro_f1(ga[idx], pa[idx], len(labels)) - _macro_f1(ga[idx], pb[idx], len(labels))
    return float(np.quantile(diffs, 0.025)), float(np.quantile(diffs, 0.975))


def run_compare(setup: Setup, optimizers: list[str], out: Path) -> list[RunResult]:
    unknown = [o for o in optimizers if o not in ALL]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; choose from {ALL}")
    out.mkdir(parents=True, exist_ok=True)
    setup = setup.model_copy(update={"out": out})
    task = resolve_task(setup.program)
    results = []
    for name in optimizers:
        path = out / f"{name}-seed{setup.seed}.json"
        if path.exists():
            logger.info("compare: %s (seed %d) already done; skipping", name, setup.seed)
            results.append(RunResult.model_validate_json(path.read_text()))
            continue
        logger.info("compare: compiling with %s (seed %d)", name, setup.seed)
        results.append(_run_one(name, setup, task, out))
        path.write_text(results[-1].model_dump_json(indent=2))
    return results


def isolated(program: dspy.Module) -> dspy.Module:
    """A deep copy whose signatures are new classes. InferRules assigns `signature.instructions`, which
    writes the class shared by every copy; without this, one optimizer's rules leak into the next run."""
    copy = program.deepcopy()
    for _, predictor in copy.named_predictors():
        predictor.signature = predictor.signature.with_instructions(predictor.signature.instructions)
    return copy


def _run_one(name: str, setup: Setup, task: Task, out: Path) -> RunResult:
    usage = UsageLog()
    start = time.perf_counter()
    error = None
    with dspy.context(lm=setup.student, adapter=LabelAdapter()):
        with usage.stage(f"compile:{name}") as st:
            try:
                compiled = _optimizers(task, setup)[name](isolated(setup.program))
            except Exception as exc:  # noqa: BLE001 - one optimizer failing must not lose the others
                logger.warning("compare: %s failed: %s", name, exc)
                compiled, error = isolated(setup.program), f"{type(exc).__name__}: {exc}"[:500]
                st.failures = 1
        seconds = time.perf_counter() - start
        compiled.save(str(out / f"{name}-seed{setup.seed}.program.json"))
    # Scored with the cache off, one example at a time, so latency and tokens are real for every seed.
    scorer = setup.student.copy(cache=False)
    with dspy.context(lm=scorer, adapter=LabelAdapter()):
        outcomes = run_student(compiled, setup.test, resolve_task(compiled, task.labels, task.label_field),
                               num_threads=1)
    entries = scorer.history
    prompt = [int((e.get("usage") or {}).get("prompt_tokens") or 0) for e in entries]
    completion = [int((e.get("usage") or {}).get("completion_tokens") or 0) for e in entries]
    score = score_outcomes(outcomes, task.labels)
    low, high = bootstrap_ci(outcomes, task.labels, seed=setup.seed)
    (out / f"{name}-seed{setup.seed}.outcomes.jsonl").write_text("".join(o.model_dump_json() + "\n" for o in outcomes))
    spend = usage.stages[0]
    return RunResult(
        optimizer=name, seed=setup.seed, macro_f1=score.macro_f1, ci_low=low, ci_high=high,
        per_class_f1=score.per_class_f1, accuracy=score.accuracy, n=score.n, failures=score.failures,
        latency_s=statistics.mean(o.seconds for o in outcomes),
        output_tokens=statistics.mean(completion) if completion else 0.0,
        prompt_tokens=statistics.mean(prompt) if prompt else 0.0,
        compile_seconds=round(seconds, 2), compile_usage=spend,
        teacher_calls=spend.by_model.get(setup.teacher.model, 0),
        student_calls=spend.by_model.get(setup.student.model, 0) if setup.student.model != setup.teacher.model else 0,
        error=error)


def load_outcomes(out: Path, name: str, seed: int) -> list[Outcome]:
    path = out / f"{name}-seed{seed}.outcomes.jsonl"
    return [Outcome.model_validate(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def summarize(results: list[RunResult], out: Path, labels: list[str]) -> list[dict]:
    """One row per optimizer: mean over seeds, seed spread, CI, and the verdict against zero-shot."""
    rows = []
    by_name: dict[str, list[RunResult]] = {}
    for r in results:
        by_name.setdefault(r.optimizer, []).append(r)
    base = by_name.get("zero-shot")
    for name, runs in by_name.items():
        f1s = [r.macro_f1 for r in runs]
        verdict = ""
        if base and name != "zero-shot":
            seed = runs[0].seed
            try:
                low, high = paired_difference(load_outcomes(out, name, seed), load_outcomes(out, "zero-shot", seed),
                                              labels, seed=seed)
                verdict = ("better" if low > 0 else "worse" if high < 0 else "no difference") + \
                    f" ({low:+.3f} to {high:+.3f})"
            except (FileNotFoundError, IndexError):
                verdict = "n/a"
        first = runs[0].compile_usage  # later seeds replay cached calls: cost is the first, fresh run's
        rows.append({
            "optimizer": name, "seeds": len(runs), "macro_f1": statistics.mean(f1s),
            "spread": (min(f1s), max(f1s)), "ci": (runs[0].ci_low, runs[0].ci_high),
            "accuracy": statistics.mean(r.accuracy for r in runs), "vs_zero_shot": verdict,
            "latency_s": statistics.mean(r.latency_s for r in runs),
            "output_tokens": statistics.mean(r.output_tokens for r in runs),
            "prompt_tokens": statistics.mean(r.prompt_tokens for r in runs),
            "compile_calls": first.lm_calls - first.cache_hits,
            "compile_tokens": first.prompt_tokens + first.completion_tokens,
            "teacher_calls": runs[0].teacher_calls,
            "compile_seconds": runs[0].compile_seconds,
            "per_class_f1": {k: statistics.mean(r.per_class_f1[k] for r in runs) for k in labels},
            "errors": [r.error for r in runs if r.error],
        })
    return rows


def render_markdown(rows: list[dict], context: dict) -> str:
    lines = ["# Optimizer comparison", ""] + [f"- **{k}**: {v}" for k, v in context.items()] + [
        "", "Test-split macro F1: mean over seeds, the min–max across seeds, and the 95% bootstrap interval of the "
        "first seed. 'vs zero-shot' is a paired bootstrap of the difference on the same test examples: an "
        "interval containing zero is reported as no difference. Compile cost is the first seed's run, on a fresh "
        "cache (later seeds reuse cached calls).", "",
        "| optimizer | macro F1 | seed spread | 95% CI | vs zero-shot | accuracy | s / example | output tokens | "
        "prompt tokens / call | compile LM calls | compile tokens | compile s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['optimizer']}{' (failed)' if r['errors'] else ''} | {r['macro_f1']:.3f} | "
            f"{r['spread'][0]:.3f}–{r['spread'][1]:.3f} | {r['ci'][0]:.3f}–{r['ci'][1]:.3f} | {r['vs_zero_shot']} | "
            f"{r['accuracy']:.3f} | {r['latency_s']:.3f} | {r['output_tokens']:.1f} | {r['prompt_tokens']:.0f} | "
            f"{r['compile_calls']:.0f} | {r['compile_tokens']:.0f} | {r['compile_seconds']:.0f} |")
    labels = list(rows[0]["per_class_f1"]) if rows else []
    lines += ["", "Per-class F1 (mean over seeds):", "", "| optimizer | " + " | ".join(labels) + " |",
              "|---|" + "---|" * len(labels)]
    lines += [f"| {r['optimizer']} | " + " | ".join(f"{r['per_class_f1'][k]:.3f}" for k in labels) + " |"
              for r in rows]
    errors = [(r["optimizer"], e) for r in rows for e in r["errors"]]
    if errors:
        lines += ["", "Failures (the program was scored unoptimized):", ""]
        lines += [f"- {name}: {' '.join(str(e).split())[:300]}" for name, e in errors]
    return "\n".join(lines) + "\n"


def render_html(rows: list[dict], context: dict, path: Path) -> None:
    """A self-contained page (opens from disk, no server): HTML tables, then plots whose F1 axes run 0-1."""
    import jinja2
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [r["optimizer"] for r in rows]
    f1 = [r["macro_f1"] for r in rows]
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.14, subplot_titles=(
        "Test macro F1 (95% CI)", "F1 vs prompt tokens per call", "F1 vs student latency", "F1 vs compile cost"))
    fig.add_trace(go.Bar(x=names, y=f1, error_y={"type": "data", "symmetric": False,
                                                 "array": [r["ci"][1] - r["macro_f1"] for r in rows],
                                                 "arrayminus": [r["macro_f1"] - r["ci"][0] for r in rows]}),
                  row=1, col=1)
    for col, row, key, title in ((2, 1, "prompt_tokens", "prompt tokens per call"),
                                 (1, 2, "latency_s", "student seconds per example"),
                                 (2, 2, "compile_tokens", "compile tokens")):
        fig.add_trace(go.Scatter(x=[r[key] for r in rows], y=f1, text=names, mode="markers+text",
                                 textposition="top center", cliponaxis=False), row=row, col=col)
        fig.update_xaxes(title_text=title, row=row, col=col)
    fig.update_yaxes(range=[0, 1.05], title_text="test macro F1")  # F1 lives in [0, 1]: never an auto range
    fig.update_layout(height=760, showlegend=False, margin={"t": 40, "b": 40, "l": 60, "r": 20})
    labels = list(rows[0]["per_class_f1"]) if rows else []
    errors = [(r["optimizer"], " ".join(str(e).split())[:300]) for r in rows for e in r["errors"]]
    env = jinja2.Environment(loader=jinja2.PackageLoader("pld_optim", "templates"), autoescape=True)
    page = env.get_template("compare.html.j2").render(
        rows=rows, context=context, labels=labels, errors=errors,
        figure=fig.to_html(full_html=False, include_plotlyjs=True))
    atomic_write_text(path, page)

