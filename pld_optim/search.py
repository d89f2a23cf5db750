"""Stage 4: Optuna search over which rules to include, in what order, in which phrasing.

Search space, per rule i:
- `use_i` (categorical True/False): include the rule.
- `rank_i` (float in [0, 1]): rules are shown sorted by rank. A permutation encoded as independent
  rank keys is something TPE can model: "rule i early" is a one-dimensional preference (low rank_i),
  whereas a categorical over n! orders, or a swap sequence, has no structure a density model can learn.
- `variant_i` (int): which phrasing; only for rules that have alternatives.

Objective: corpus macro F1 over the dev split, in single-objective mode evaluated in fixed chunks of
`minibatch_size` with the running F1 reported after each so a pruner stops bad configurations early;
a trial that survives every chunk is a full dev evaluation. A hard `max_prompt_tokens` turns over-budget
configurations into feasible ones by dropping their lowest-ranked rules (a repair decoder: the budget is
never broken and no trial is wasted on an infeasible point). The
multi-objective mode (NSGA-II) trades F1 against prompt tokens and returns the Pareto front.

The default sampler (`pld_optim.local_search`) proposes one edit of the best prompt so far per trial;
TPE and random search remain. Pruners and storages stay Optuna's own: the study lives in any storage URL
(SQLite in the output folder by default; PostgreSQL for many workers) and is opened with `load_if_exists`,
so running the same compile again continues the study where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import dspy
import optuna
from pydantic import BaseModel, ConfigDict, Field

from pld_optim.artifact import Candidate, Rule, SearchResult, Selection, texts_of
from pld_optim.local_search import LocalSearchSampler, params_for, selection_from_params
from pld_optim.scoring import Outcome, score_outcomes

logger = logging.getLogger(__name__)


class SearchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    n_trials: int = Field(30, ge=1, description="total trials in the study, counting earlier runs")
    timeout: float | None = Field(None, gt=0, description="seconds for this run")
    max_student_calls: int | None = Field(None, gt=0, description="stop starting trials past this many calls")
    minibatch_size: int = Field(16, gt=0)
    max_prompt_tokens: int | None = Field(None, gt=0, description="hard cap on the rendered system prompt")
    multi_objective: bool = False
    sampler: Literal["local", "tpe", "random"] | optuna.samplers.BaseSampler = Field(
        "local", description="local: edits of the best prompt so far (benchmarks/search_efficiency.py); or any "
                             "Optuna sampler object (Python). multi_objective with a name uses NSGA-II")
    pruner: Literal["median", "none"] | optuna.pruners.BasePruner = Field(
        "median", description="or any Optuna pruner object (Python)")
    n_startup_trials: int = Field(8, ge=0)
    storage: str | None = Field(None, description="Optuna storage URL; default sqlite in out_dir, else memory")
    study_name: str | None = None
    pick_max_tokens: int | None = Field(None, gt=0, description="multi-objective: best F1 within this many tokens")
    plots: bool = True


def study_name_for(rules: list[Rule], name: str | None) -> str:
    """A new rule set gets a new study: old trials scored other rules and must not mix in."""
    digest = hashlib.sha1("\n".join(v for r in rules for v in r.variants()).encode()).hexdigest()[:10]
    return f"{name or 'pld'}-{digest}"


def search_rules(
    rules: list[Rule],
    *,
    dev: list[dspy.Example],
    labels: list[str],
    evaluate: Callable[[list[str], list[dspy.Example]], list[Outcome]],
    render: Callable[[list[str]], str],
    count_tokens: Callable[[str], int],
    token_counter: str,
    config: SearchConfig,
    seeds: list[list[Selection]] = (),
    out_dir: Path | None = None,
    seed: int = 0,
    call_counter: Callable[[], int] | None = None,
) -> SearchResult:
    if not rules:
        raise ValueError("search: there are no rules to search over")
    texts = [rule.variants() for rule in rules]
    order = list(range(len(dev)))
    random.Random(seed).shuffle(order)
    chunks = [[dev[i] for i in order[k:k + config.minibatch_size]] for k in range(0, len(dev), config.minibatch_size)]
    budget = config.max_prompt_tokens
    if budget and count_tokens(render([])) > budget:
        raise ValueError(f"search: max_prompt_tokens={budget} is below the prompt without any rule "
                         f"({count_tokens(render([]))} tokens, {token_counter})")

    def tokens_of(selection: list[Selection]) -> tuple[list[str], int]:
        active = texts_of(rules, selection)
        return active, count_tokens(render(active))

    def objective(trial: optuna.Trial):
        params = {}
        for i, variants in enumerate(texts):
            params[f"use_{i}"] = trial.suggest_categorical(f"use_{i}", [True, False])
            params[f"rank_{i}"] = trial.suggest_float(f"rank_{i}", 0.0, 1.0)
            if len(variants) > 1:
                params[f"variant_{i}"] = trial.suggest_int(f"variant_{i}", 0, len(variants) - 1)
        selection = selection_from_params(params, rules)
        active, n_tokens = tokens_of(selection)
        dropped = 0
        while budget and n_tokens > budget and selection:
            # Repair, not reject: the lowest-ranked rules go until the prompt fits, so every trial is a
            # feasible prompt and the objective stays a deterministic function of the parameters.
            selection = selection[:-1]
            dropped += 1
            active, n_tokens = tokens_of(selection)
        trial.set_user_attr("prompt_tokens", n_tokens)
        trial.set_user_attr("selection", [s.model_dump() for s in selection])
        trial.set_user_attr("dropped_for_budget", dropped)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        if config.multi_objective:  # Optuna cannot prune multi-objective trials: one full pass.
            outcomes = evaluate(active, dev)
            trial.set_user_attr("student_calls", len(dev))
            trial.set_user_attr("errors", _errors(outcomes))
            return score_outcomes(outcomes, labels).macro_f1, float(n_tokens)
        outcomes: list[Outcome] = []
        for step, chunk in enumerate(chunks):
            outcomes += evaluate(active, chunk)
            trial.set_user_attr("student_calls", len(outcomes))
            f1 = score_outcomes(outcomes, labels).macro_f1
            if step < len(chunks) - 1:
                trial.report(f1, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        trial.set_user_attr("errors", _errors(outcomes))
        return f1

    url = storage_url(config, out_dir)
    storage = open_storage(url) if url else None
    sampler = _sampler(config, seed, rules, labels)
    if isinstance(config.pruner, optuna.pruners.BasePruner):
        pruner = config.pruner
    else:
        pruner = (optuna.pruners.MedianPruner(n_startup_trials=config.n_startup_trials, n_warmup_steps=0)
                  if config.pruner == "median" and not config.multi_objective else optuna.pruners.NopPruner())
    study = optuna.create_study(
        storage=storage, sampler=sampler, pruner=pruner, load_if_exists=True,
        study_name=study_name_for(rules, config.study_name),
        **({"directions": ["maximize", "minimize"]} if config.multi_objective else {"direction": "maximize"}))
    # A trial that failed (e.g. interrupted mid-evaluation) is not counted: it is the one unit lost.
    finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                       optuna.trial.TrialState.PRUNED)]
    if not finished:
        for sel in seeds:
            study.enqueue_trial(params_for(sel, rules), skip_if_exists=True)
    remaining = config.n_trials - len(finished)
    logger.info("search: study %s has %d finished trials; running %d more (at most %d student calls)",
                study.study_name, len(finished), max(0, remaining), max(0, remaining) * len(dev))
    start_calls = call_counter() if call_counter else 0
    # Counted over the whole study, so several workers sharing one storage stop at n_trials together.
    callbacks = [optuna.study.MaxTrialsCallback(
        config.n_trials, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))]
    if config.max_student_calls and call_counter:
        def stop_on_budget(study, trial):
            if call_counter() - start_calls >= config.max_student_calls:
                logger.info("search: student-call budget %d reached; stopping", config.max_student_calls)
                study.stop()
        callbacks.append(stop_on_budget)
    if remaining > 0:
        study.optimize(objective, n_trials=remaining, timeout=config.timeout, callbacks=callbacks,
                       gc_after_trial=False)
    result = _result(study, rules, config, evaluate, dev, labels, token_counter)
    result.student_calls = (call_counter() - start_calls) if call_counter else 0
    if out_dir and config.plots:
        save_plots(study, out_dir, config.multi_objective)
    return result


def storage_url(config: SearchConfig, out_dir: Path | None) -> str | None:
    return config.storage or (f"sqlite:///{(out_dir / 'study.db').resolve()}" if out_dir else None)


def check_storage(config: SearchConfig, out_dir: Path | None) -> None:
    """Before any LM call: a malformed URL or an unreadable (e.g. corrupted) study fails now, with the
    way out, instead of after mining and refinement have been paid for."""
    import sqlalchemy.engine
    import sqlalchemy.exc

    url = storage_url(config, out_dir)
    if url is None:
        return
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError as exc:
        raise ValueError(f"search.storage={url!r} is not a database URL (e.g. sqlite:///study.db or "
                         "postgresql://user@host/db)") from exc
    path = Path(parsed.database) if parsed.get_backend_name() == "sqlite" and parsed.database else None
    if path is not None and not path.exists():
        return  # a new study: created when the search starts
    try:
        storage = open_storage(url, attempts=2)
        storage.get_all_studies()
    except Exception as exc:  # noqa: BLE001 - any failure to read the study is reported the same way
        fix = f"delete {path} to start the search afresh" if path else "check the server and the URL"
        reason = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(f"search storage {url} cannot be read ({type(exc).__name__}: {reason}); {fix}") from exc


def open_storage(url: str, attempts: int = 6):
    """An RDB storage, retried: workers started together on a fresh database race to create Optuna's
    tables (PostgreSQL raises on the duplicate enum type); the loser succeeds once the tables exist."""
    import sqlalchemy.exc
    import tenacity

    retry = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(sqlalchemy.exc.SQLAlchemyError), reraise=True,
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_incrementing(0.2, 0.2) + tenacity.wait_random(0, 0.3))
    return retry(optuna.storages.RDBStorage, url, engine_kwargs={"pool_pre_ping": True})


def _errors(outcomes: list[Outcome]) -> list[tuple[str, str, int]]:
    """(gold, answered, count) for every confusion of one prompt: where the local sampler looks for edits."""
    pairs = Counter((o.gold, o.pred or "<failed>") for o in outcomes if o.pred != o.gold)
    return [(gold, pred, n) for (gold, pred), n in sorted(pairs.items())]


def _sampler(config: SearchConfig, seed: int, rules: list[Rule], labels: list[str]):
    if isinstance(config.sampler, optuna.samplers.BaseSampler):
        return config.sampler
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.multi_objective:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, config.n_startup_trials))
    if config.sampler == "local":
        return LocalSearchSampler(rules, labels, seed=seed)
    # Independent TPE: on benchmarks/search_efficiency.py it beat multivariate TPE (mean best dev F1
    # 0.924 after 100 trials against 0.866 after 150); per-rule use/rank/variant preferences are
    # close to separable, and a 3n-dimensional joint density is too thin at these trial counts.
    return optuna.samplers.TPESampler(seed=seed, multivariate=False, n_startup_trials=config.n_startup_trials)


def _candidate(trial: optuna.trial.FrozenTrial) -> Candidate:
    f1 = trial.values[0]
    return Candidate(selection=[Selection(**s) for s in trial.user_attrs["selection"]], macro_f1=f1,
                     prompt_tokens=int(trial.user_attrs["prompt_tokens"]), trial=trial.number)


def _result(study, rules, config, evaluate, dev, labels, token_counter) -> SearchResult:
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not done:
        raise RuntimeError("search: no trial completed (timeout or call budget too small?)")
    pareto: list[Candidate] = []
    if config.multi_objective:
        front = sorted((_candidate(t) for t in study.best_trials),
                       key=lambda c: (c.prompt_tokens, c.trial))
        seen: set[tuple[int, float]] = set()  # several parameter points can render the same prompt
        pareto = [c for c in front if (c.prompt_tokens, c.macro_f1) not in seen
                  and not seen.add((c.prompt_tokens, c.macro_f1))]
        pool = [c for c in pareto if config.pick_max_tokens is None or c.prompt_tokens <= config.pick_max_tokens]
        if not pool:
            raise RuntimeError(f"search: no Pareto point within pick_max_tokens={config.pick_max_tokens}; "
                               f"the smallest uses {pareto[0].prompt_tokens} tokens")
        best = max(pool, key=lambda c: (c.macro_f1, -c.prompt_tokens))
    else:
        best = _candidate(max(done, key=lambda t: (t.values[0], -t.user_attrs["prompt_tokens"])))
    # Re-score the winner on the whole dev split (a cache hit when it already ran in full).
    best.macro_f1 = score_outcomes(evaluate(texts_of(rules, best.selection), dev), labels).macro_f1
    states = [t.state for t in study.trials]
    history = [(t.number, t.values[0] if t.state == optuna.trial.TrialState.COMPLETE else None,
                int(t.user_attrs.get("student_calls", 0))) for t in sorted(study.trials, key=lambda t: t.number)]
    return SearchResult(best=best, pareto=pareto, n_trials=len(study.trials), history=history,
                        n_pruned=states.count(optuna.trial.TrialState.PRUNED),
                        n_repaired=sum(bool(t.user_attrs.get("dropped_for_budget")) for t in done),
                        token_counter=token_counter)


def save_plots(study: optuna.Study, out_dir: Path, multi_objective: bool) -> list[Path]:
    """Optuna's own figures as self-contained HTML: history, rule importances, Pareto front."""
    import optuna.visualization as vis

    target = (lambda t: t.values[0]) if multi_objective else None
    name = "dev macro F1"
    makers = {
        "optimization_history": lambda: vis.plot_optimization_history(study, target=target, target_name=name),
        "param_importances": lambda: vis.plot_param_importances(
            study, target=target, target_name=name, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0)),
    }
    if multi_objective:
        makers["pareto_front"] = lambda: vis.plot_pareto_front(study, target_names=[name, "prompt tokens"])
    figures = {}
    for key, make in makers.items():
        try:
            figures[key] = make()
        except (ImportError, ValueError, RuntimeError) as exc:  # e.g. importances when every trial tied
            logger.warning("search: %s plot skipped: %s", key, exc)
    paths = []
    for key, figure in figures.items():
        path = out_dir / f"search_{key}.html"
        figure.write_html(str(path), include_plotlyjs=True)
        paths.append(path)
    return paths


