"""The optimizers `pld-optim compare` runs, each as DSPy users would configure it, on the same setup."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dspy
from pydantic import BaseModel, Field

from pld_optim.evaluation.task import Task
from pld_optim.search.config import SearchConfig
from pld_optim.teleprompter import PLD

ALL = ["zero-shot", "cot", "bootstrap-fewshot", "bootstrap-rs", "infer-rules", "infer-rules-0shot", "miprov2",
       "miprov2-0shot", "copro", "gepa", "simba", "pld", "pld-rules-only"]


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


def exact_match(task: Task):
    def metric(example, prediction, trace=None, *args):
        return float(str(getattr(prediction, task.label_field, "")) == str(example[task.label_field]))
    return metric


def gepa_metric(task: Task):
    def metric(gold, pred, trace=None, pred_name=None, pred_trace=None):
        ok = str(getattr(pred, task.label_field, "")) == str(gold[task.label_field])
        return dspy.Prediction(score=float(ok), feedback="correct" if ok else
                               f"wrong: expected {gold[task.label_field]}, got {getattr(pred, task.label_field, None)}")
    return metric


# DSPy's optimizers ask their teacher for long answers (InferRules: reasoning and every rule at once; MIPROv2
# and GEPA: whole instructions) and fail, or keep a text cut mid-sentence, under a cap sized for PLD's one
# rule per call; each peer gets at least this many output tokens, as a user of that optimizer would set.
PEER_TEACHER_MAX_TOKENS = 1024


def peer_teacher(teacher: dspy.BaseLM) -> dspy.BaseLM:
    cap = (getattr(teacher, "kwargs", None) or {}).get("max_tokens") or 0
    return teacher if cap >= PEER_TEACHER_MAX_TOKENS else teacher.copy(max_tokens=PEER_TEACHER_MAX_TOKENS)


def optimizers(task: Task, s: Setup) -> dict[str, Callable[[dspy.Module], dspy.Module]]:
    metric, small = exact_match(task), s.budget == "small"
    pld_teacher = s.teacher  # PLD keeps the configured cap: its teacher writes one rule per call
    s = s.model_copy(update={"teacher": peer_teacher(s.teacher)})
    teach = {"lm": s.teacher}
    return {
        "zero-shot": lambda p: p,
        "cot": lambda p: dspy.ChainOfThought(p.predictors()[0].signature),
        "bootstrap-fewshot": lambda p: dspy.BootstrapFewShot(
            metric=metric, teacher_settings=teach, max_bootstrapped_demos=4, max_labeled_demos=4
        ).compile(p, trainset=s.train),
        "bootstrap-rs": lambda p: dspy.BootstrapFewShotWithRandomSearch(
            metric=metric, teacher_settings=teach, max_bootstrapped_demos=4, max_labeled_demos=4,
            num_candidate_programs=random_search_candidates(s.pld_kwargs.get("search"), len(s.dev)),
            num_threads=s.threads,
        ).compile(p, trainset=s.train, valset=s.dev),
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
            metric=gepa_metric(task), reflection_lm=s.teacher, num_threads=s.threads, seed=s.seed,
            **({"max_metric_calls": 6 * (len(s.train) + len(s.dev))} if small else {"auto": "light"})
        ).compile(p, trainset=s.train, valset=s.dev),
        "simba": lambda p: dspy.SIMBA(metric=metric, prompt_model=s.teacher, bsize=min(32, len(s.train)),
                                      num_candidates=2 if small else 6, max_steps=2 if small else 8,
                                      num_threads=s.threads).compile(p, trainset=s.train, seed=s.seed),
        "pld": lambda p: _pld(p, s, pld_teacher, "pld"),
        # The demo search off: what PLD's rules alone are worth, next to the demo-search peers.
        "pld-rules-only": lambda p: _pld(p, s, pld_teacher, "pld-rules-only", max_demos=0),
    }


def _pld(program, s: Setup, teacher: dspy.BaseLM, name: str, **overrides):
    return PLD(teacher=teacher, num_threads=s.threads, out_dir=(s.out / f"{name}-seed{s.seed}") if s.out else None,
               **{**s.pld_kwargs, "seed": s.seed, **overrides}).compile(program, trainset=s.train, valset=s.dev)


# BootstrapFewShotWithRandomSearch scores 3 fixed programs (zero-shot, labelled demos only, the unshuffled
# bootstrap) and then `num_candidate_programs` shuffled bootstraps, each on all of dev.
RANDOM_SEARCH_FIXED = 3


def random_search_candidates(search: SearchConfig | dict | None, n_dev: int) -> int:
    """`num_candidate_programs` that gives the random search PLD's search budget of student calls.

    The random search makes (N + 3) * n_dev student calls (each bootstrap also makes up to n_train teacher
    calls). PLD's search makes at most (n_trials + 1) * n_dev: each trial scores dev (a pruned trial stops
    after a minibatch) and the pick is scored once more (`PLD.estimate_calls`, "student: search"), or fewer
    when `max_student_calls` stops it first. So N = budget // n_dev - 3 (n_trials - 2 without that cap): the
    random search may spend what PLD's search may. A PLD with no search spends nothing there; the random
    search then runs its smallest search, N = 1.
    """
    if search is None:
        return 1
    config = search if isinstance(search, SearchConfig) else SearchConfig.model_validate(search)
    budget = (config.n_trials + 1) * n_dev
    if config.max_student_calls is not None:
        budget = min(budget, config.max_student_calls)
    return max(1, budget // max(1, n_dev) - RANDOM_SEARCH_FIXED)


def _mipro(program, s: Setup, metric, demos: int):
    kwargs = dict(metric=metric, prompt_model=s.teacher, task_model=s.student, max_bootstrapped_demos=demos,
                  max_labeled_demos=demos, num_threads=s.threads, seed=s.seed, verbose=False)
    if s.budget == "small":
        optimizer = dspy.MIPROv2(auto=None, num_candidates=3, **kwargs)
        return optimizer.compile(program, trainset=s.train, valset=s.dev, num_trials=4, minibatch=False)
    return dspy.MIPROv2(auto="light", **kwargs).compile(program, trainset=s.train, valset=s.dev)
