"""Stage 4, the search: an Optuna study over the rules' subset, order, wording and worked examples.

Objective: corpus macro F1 over the dev split. In single-objective mode each trial is scored in fixed
chunks of `minibatch_size`, reporting the running F1 after each so a pruner stops a bad prompt early; a
trial that survives every chunk has been scored on the whole dev split. The multi-objective mode
(NSGA-II) trades F1 against prompt tokens and returns the Pareto front. Samplers, pruners and storages
are Optuna's objects (or names for them); the default is TPE, and `local` (`pld_optim.search.sampler`)
proposes one edit of the best prompt so far per trial.

A study is continued only by a search that would score its trials the same: its name hashes the rules and
`PromptSearch.setup()` (the student, the dev data, every setting that changes a prompt or its score), so two
runs on one storage under one name with another student, dev set or setting never share trials, while the
workers of one run (and a resumed run) do. The seed is not part of it: it only steers which points are
proposed, as the sampler does, and the dev chunks a trial is scored in are ordered by example id.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import dspy
import optuna

from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.scoring import Outcome, Score, confusions, score_outcomes
from pld_optim.evaluation.task import example_id
from pld_optim.records import Candidate, SearchResult, Selection
from pld_optim.rules import Prompt, Rule, prompt_of
from pld_optim.search.config import SearchConfig
from pld_optim.search.plots import save_plots
from pld_optim.search.pruner import ANSWERS, IncumbentPruner
from pld_optim.search.sampler import LocalSearchSampler
from pld_optim.search.space import Space
from pld_optim.search.storage import open_storage, search_setup, storage_url, study_name_for

logger = logging.getLogger(__name__)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


@dataclass(frozen=True)
class Choice:
    """What the search stage hands on: the candidate rules, the chosen prompt among them (None: every rule,
    unsearched), the study's result and the chosen prompt's dev score."""

    pool: list[Rule]
    selection: list[Selection] | None
    search: SearchResult | None
    score: Score


class SearchFailed(RuntimeError):
    """The search raised; the compile keeps refinement's rules and says what a rerun costs (only a folder's
    cache replays the earlier stages)."""

    def __init__(self, cause: Exception, kept_rules: int, folder=None):
        where = folder.path / "rules.json" if folder else "PLD.rules_"
        rerun = ("rerun the same command: mining, clustering and refinement replay from the folder's cache, so "
                 "only the search runs again" if folder else "compile again; with no out_dir there is no folder to "
                 "resume from, so mining, clustering and refinement run again (free only where DSPy's own disk "
                 "cache still holds their calls): pass out_dir= to resume instead")
        super().__init__(f"PLD: the search failed ({type(cause).__name__}: {cause}). Refinement's {kept_rules} rules "
                         f"are kept in {where}. Fix the search settings and {rerun}.")


def check_budget(scorer: Scorer, config: SearchConfig) -> None:
    """A token budget below the prompt without any rule leaves no feasible prompt. It needs only the
    student's tokenizer, so `PLD.prepare` (and a dry run) checks it before the teacher is paid."""
    if not config.max_prompt_tokens:
        return
    bare = scorer.count_tokens(Prompt())
    if bare > config.max_prompt_tokens:
        raise ValueError(f"search: max_prompt_tokens={config.max_prompt_tokens} is below the prompt without any "
                         f"rule ({bare} tokens, {scorer.token_counter.name}); raise search.max_prompt_tokens")


class PromptSearch:
    """One search over `rules` for `scorer`'s student, scored on `dev`.

    Args:
        scorer: scores a prompt on the student (and counts the calls).
        rules: the candidates; each rule's wordings and example candidates are part of the space.
        dev: the examples every completed trial is scored on.
        config: trials, budget, sampler, pruner, storage.
        max_demos: at most this many worked examples per prompt (0: rules only).
        label_field: the output field a demo's gold label fills.
        out_dir: where the default SQLite study and the plots go (None: an in-memory study, no plots).
    """

    def __init__(self, scorer: Scorer, rules: list[Rule], dev: list[dspy.Example], *, config: SearchConfig,
                 max_demos: int, label_field: str, out_dir: Path | None = None, seed: int = 0):
        if not rules:
            raise ValueError("search: there are no rules to search over")
        self.scorer, self.rules, self.dev, self.config = scorer, rules, dev, config
        self.space = Space(rules, max_demos)
        self.label_field, self.out_dir, self.seed = label_field, out_dir, seed
        # Ordered by a hash of the example id, not by the seed: every worker of a study (each with its own
        # sampler seed) reports a trial's running F1 on the same chunks, which the pruner compares.
        ids = [example_id(ex, scorer.task.input_fields) for ex in dev]
        order = sorted(range(len(dev)), key=lambda i: (hashlib.sha1(ids[i].encode()).hexdigest(), i))
        size = config.minibatch_size
        self.chunks = [[dev[i] for i in order[k:k + size]] for k in range(0, len(dev), size)]
        self.outcomes: dict[int, list[Outcome]] = {}  # completed trials of this process: no re-scoring

    def prompt(self, selection: list[Selection]):
        return prompt_of(self.rules, selection, self.label_field)

    def setup(self) -> dict:
        """What besides the rules the study is keyed by (`pld_optim.search.storage.search_setup`)."""
        return search_setup(self.scorer, self.dev, self.config, max_demos=self.space.max_demos,
                            demo_field=self.label_field)

    def fit_budget(self, selection: list[Selection]) -> tuple[list[Selection], int, int]:
        """Repair, not reject: the lowest-ranked rules go until the prompt fits, so every trial is a feasible
        prompt and the objective stays a deterministic function of the parameters."""
        budget, dropped = self.config.max_prompt_tokens, 0
        tokens = self.scorer.count_tokens(self.prompt(selection))
        while budget and tokens > budget and selection:
            selection, dropped = selection[:-1], dropped + 1
            tokens = self.scorer.count_tokens(self.prompt(selection))
        return selection, tokens, dropped

    def objective(self, trial: optuna.Trial):
        selection, tokens, dropped = self.fit_budget(self.space.selection(self.space.suggest(trial)))
        for key, value in (("prompt_tokens", tokens), ("selection", [s.model_dump() for s in selection]),
                           ("dropped_for_budget", dropped), ("worker", f"{socket.gethostname()}:{os.getpid()}")):
            trial.set_user_attr(key, value)
        prompt = self.prompt(selection)
        if self.config.multi_objective:  # Optuna cannot prune multi-objective trials: one full pass.
            outcomes = self._score(trial, prompt, self.dev)
            self.outcomes[trial.number] = outcomes
            return score_outcomes(outcomes, self.scorer.task.labels).macro_f1, float(tokens)
        outcomes: list[Outcome] = []
        for step, chunk in enumerate(self.chunks):
            outcomes += self._score(trial, prompt, chunk, done=outcomes)
            f1 = score_outcomes(outcomes, self.scorer.task.labels).macro_f1
            if step < len(self.chunks) - 1:
                trial.report(f1, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        self.outcomes[trial.number] = outcomes
        return f1

    def _score(self, trial, prompt, examples, done=()) -> list[Outcome]:
        outcomes = self.scorer.outcomes(prompt, examples)
        answered = [*done, *outcomes]
        index = {label: i for i, label in enumerate(self.scorer.task.labels)}
        trial.set_user_attr("student_calls", len(answered))
        trial.set_user_attr("errors", _errors(answered))
        trial.set_user_attr(ANSWERS, [index.get(o.pred, -1) for o in answered])  # what IncumbentPruner pairs
        return outcomes

    @staticmethod
    def seeds(clustered: list[Rule], refined: list[Rule], max_demos: int) -> list[list[Selection]]:
        """Known points, and no rules at all (zero-shot, scored as the baseline): rules that do not beat it
        on dev are not shipped. Rules only: the clustered and the refined list; with demos: the refined list
        with one and with two worked examples per rule (the decoder keeps at most max_demos)."""
        if max_demos:
            return [[Selection(rule_id=r.id, demos=list(range(min(n, len(r.examples))))) for r in refined]
                    for n in (1, 2)] + [[]]
        return [[Selection(rule_id=r.id) for r in clustered], [Selection(rule_id=r.id) for r in refined], []]

    def choose(self, seeds: list[list[Selection]], *, kept_rules: int, folder=None) -> Choice:
        """`run`, as the compile's search step: the chosen prompt with its dev score, or `SearchFailed`."""
        try:
            result, outcomes = self.run(seeds)
        except Exception as exc:
            raise SearchFailed(exc, kept_rules, folder) from exc
        # This process scored the winner already, unless an earlier one did: then once more (a cache hit).
        score = (score_outcomes(outcomes, self.scorer.task.labels) if outcomes is not None
                 else self.scorer.score(self.prompt(result.best.selection), self.dev))
        return Choice(pool=self.rules, selection=result.best.selection, search=result, score=score)

    def run(self, seeds: list[list[Selection]] = ()) -> tuple[SearchResult, list[Outcome] | None]:
        """Continue (or start) the study to `n_trials` finished trials; the result and, when this process
        scored it, the best prompt's dev outcomes."""
        config = self.config
        check_budget(self.scorer, config)
        storage, setup = storage_url(config, self.out_dir), self.setup()
        study = optuna.create_study(
            storage=open_storage(storage) if storage is not None else None, sampler=self._sampler(),
            pruner=self._pruner(), load_if_exists=True,
            study_name=study_name_for(self.rules, config.study_name, setup),
            **({"directions": ["maximize", "minimize"]} if config.multi_objective else {"direction": "maximize"}))
        if "pld_setup" not in study.user_attrs:  # what the name's hash stands for, for whoever opens the storage
            study.set_user_attr("pld_setup", setup)
        # A trial that failed (e.g. interrupted mid-evaluation) is not counted: it is the one unit lost.
        finished = [t for t in study.trials if t.state in FINISHED]
        if not finished:
            for selection in seeds:
                study.enqueue_trial(self.space.params(selection), skip_if_exists=True)
        remaining = config.n_trials - len(finished)
        logger.info("search: study %s has %d finished trials; running %d more (at most %d student calls)",
                    study.study_name, len(finished), max(0, remaining), max(0, remaining) * len(self.dev))
        if remaining > 0:
            study.optimize(self.objective, n_trials=remaining, timeout=config.timeout, callbacks=self._callbacks(),
                           gc_after_trial=False)
        result = self._result(study)
        if self.out_dir and config.plots:
            save_plots(study, self.out_dir, config.multi_objective)
        return result, self.outcomes.get(result.best.trial)

    def _callbacks(self) -> list:
        # Counted over the whole study, so several workers sharing one storage stop at n_trials together.
        callbacks = [optuna.study.MaxTrialsCallback(self.config.n_trials, states=FINISHED), log_trial]
        budget = self.config.max_student_calls
        if budget:
            def stop_on_budget(study, trial):
                if _student_calls(study) >= budget:
                    logger.info("search: student-call budget %d reached; stopping", budget)
                    study.stop()
            callbacks.append(stop_on_budget)
        return callbacks

    def _sampler(self):
        config = self.config
        if isinstance(config.sampler, optuna.samplers.BaseSampler):
            return config.sampler
        if config.sampler == "random":
            return optuna.samplers.RandomSampler(seed=self.seed)
        if config.multi_objective:
            return optuna.samplers.NSGAIISampler(seed=self.seed, population_size=max(8, config.n_startup_trials))
        if config.sampler == "local":
            return LocalSearchSampler(self.space, self.scorer.task.labels, seed=self.seed)
        # Independent TPE: per-rule use/rank/wording preferences are close to separable, and a joint density
        # over 3-4 parameters per rule is too thin at these trial counts.
        return optuna.samplers.TPESampler(seed=self.seed, multivariate=False, n_startup_trials=config.n_startup_trials)

    def _pruner(self):
        config = self.config
        if isinstance(config.pruner, optuna.pruners.BasePruner):
            return config.pruner
        if config.multi_objective or config.pruner == "none":
            return optuna.pruners.NopPruner()
        if config.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=config.n_startup_trials, n_warmup_steps=0)
        index = {label: i for i, label in enumerate(self.scorer.task.labels)}
        gold = [index[str(ex[self.scorer.task.label_field])] for chunk in self.chunks for ex in chunk]
        return IncumbentPruner(gold, len(index), confidence=config.prune_confidence,
                               min_examples=min(config.minibatch_size, len(gold)), seed=self.seed)

    def _result(self, study: optuna.Study) -> SearchResult:
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not done:
            raise RuntimeError("search: no trial completed (timeout or call budget too small?)")
        pareto: list[Candidate] = []
        if self.config.multi_objective:
            pareto = _front(study)
            pool = [c for c in pareto if self.config.pick_max_tokens is None
                    or c.prompt_tokens <= self.config.pick_max_tokens]
            if not pool:
                raise RuntimeError(f"search: no Pareto point within pick_max_tokens={self.config.pick_max_tokens}; "
                                   f"the smallest uses {pareto[0].prompt_tokens} tokens")
            best = max(pool, key=lambda c: (c.macro_f1, -c.prompt_tokens))
        else:
            best = _candidate(max(done, key=lambda t: (t.values[0], -t.user_attrs["prompt_tokens"])))
        n_rules, n_wordings, n_demos = self.space.size()
        states = [t.state for t in study.trials]
        history = [(t.number, t.values[0] if t.state == optuna.trial.TrialState.COMPLETE else None,
                    int(t.user_attrs.get("student_calls", 0))) for t in sorted(study.trials, key=lambda t: t.number)]
        return SearchResult(
            best=best, pareto=pareto, n_trials=len(study.trials), history=history,
            n_pruned=states.count(optuna.trial.TrialState.PRUNED),
            n_repaired=sum(bool(t.user_attrs.get("dropped_for_budget")) for t in done),
            token_counter=self.scorer.token_counter.name, student_calls=_student_calls(study), n_candidates=n_rules,
            n_wordings=n_wordings, n_demo_candidates=n_demos, sampler=self.config.sampler_name())


def _student_calls(study: optuna.Study) -> int:
    """Every trial's calls, those of an interrupted earlier run included: what the search spent."""
    return sum(int(t.user_attrs.get("student_calls", 0)) for t in study.trials)


def _errors(outcomes: list[Outcome]) -> list[tuple[str, str, int]]:
    """(gold, answered, count) for every confusion of one prompt: where the local sampler looks for edits."""
    return [(gold, pred, n) for (gold, pred), n in sorted(confusions(outcomes).items())]


def _candidate(trial: optuna.trial.FrozenTrial) -> Candidate:
    return Candidate(selection=[Selection(**s) for s in trial.user_attrs["selection"]], macro_f1=trial.values[0],
                     prompt_tokens=int(trial.user_attrs["prompt_tokens"]), trial=trial.number)


def _front(study: optuna.Study) -> list[Candidate]:
    front = sorted((_candidate(t) for t in study.best_trials), key=lambda c: (c.prompt_tokens, c.trial))
    points: dict[tuple[int, float], Candidate] = {}  # several parameter points can render the same prompt
    for c in front:
        points.setdefault((c.prompt_tokens, c.macro_f1), c)
    return list(points.values())


def log_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """One line per finished trial: a search runs for minutes, and Optuna's own log is off in the CLI."""
    finished = [t for t in study.trials if t.state in FINISHED]
    if trial.state == optuna.trial.TrialState.COMPLETE and trial.values:
        outcome = f"dev macro F1 {trial.values[0]:.4f}"
    else:
        outcome = trial.state.name.lower()
    best = max((t.values[0] for t in finished if t.state == optuna.trial.TrialState.COMPLETE and t.values),
               default=None)
    logger.info("search: trial %d (%d finished): %s%s, %s student calls", trial.number, len(finished), outcome,
                "" if best is None else f"; best so far {best:.4f}", trial.user_attrs.get("student_calls", "?"))
