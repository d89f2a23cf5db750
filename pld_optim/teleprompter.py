"""PLD, the teleprompter: mine -> cluster -> merge -> refine -> search, and the compiled student it returns."""

from __future__ import annotations

import inspect
import logging
from contextlib import nullcontext
from pathlib import Path

import dspy
from dspy.teleprompt import Teleprompter

from pld_optim.compile_run import (
    STUDENT_CHECK,
    CompileRun,
    check_student,
    estimate_calls,
    fingerprint,
    prepare_run,
    search_failed,
    stratified,
)
from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.scoring import score_outcomes
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.lm.factory import as_lm
from pld_optim.params import PLDParams, validate
from pld_optim.program import apply_rules
from pld_optim.records import Selection
from pld_optim.rules import Prompt, RuleSet
from pld_optim.run.folder import RunFolder
from pld_optim.search.config import SearchConfig
from pld_optim.search.study import PromptSearch
from pld_optim.stages.cluster import cluster_rules, make_embedder
from pld_optim.stages.context import StageContext
from pld_optim.stages.contribution import rule_contributions, with_contributions
from pld_optim.stages.merge import merge_clusters
from pld_optim.stages.mine import contrastive_sample, mine
from pld_optim.stages.refine import refine

logger = logging.getLogger("pld_optim")
REPORTING_ONLY = {"evaluate_baseline", "contribution", "num_threads", "student_threads", "allow_overlap",
                  "max_invalid_share"}


class PLD(Teleprompter):
    """Prompt-Level Distillation (arXiv 2602.21103) as a DSPy optimizer.

    A teacher explains labelled train examples and abstracts one rule from each; the rules are clustered and
    merged, repaired against the student's own mistakes, and an Optuna search chooses which rules (in what
    order and wording, with which worked examples) go into the student's prompt, for dev macro F1.

    Args:
        teacher: model string (`"gemini/gemini-2.5-flash"`, `"local/qwen2.5-coder-1.5b"`) or `dspy.LM` that
            mines, merges and repairs; default `dspy.settings.lm`. The student is the program's own LM.
        labels, label_field: the label set and output field, when the signature's `Literal` does not say.
        mining: `"contrastive"`: the teacher explains the student's zero-shot mistakes (gold label and the
            student's answer); `"label"`: the paper's label-conditioned examples.
        max_train_examples: teacher calls for mining (None: one per probed or sampled train example).
        probe_examples: contrastive mining: train examples the student answers zero-shot first.
        num_threads, student_threads: parallel teacher and student calls.
        embedder: `"tfidf"` (offline), an embedding model string for `dspy.Embedder`, or a callable.
        cluster_method, cluster_by, n_clusters, max_clusters, eps, min_samples, min_cluster_size: k-means (k by
            silhouette up to `max_clusters`, per label) or DBSCAN; clusters smaller than `min_cluster_size`
            are noise.
        n_phrasings: alternative wordings the teacher writes per merged rule.
        refinement: `"corrective"`: one rule per frequent confusion of the current prompt; `"rewrite"`: the
            paper's whole-list rewrite.
        max_refine_iters, refine_examples, n_failures, n_successes, max_corrections, min_delta: refinement
            rounds, the train sample it runs on, failures and successes shown per teacher call, corrective
            rules per round, and the dev F1 gain a rewrite must show.
        max_demos: worked examples (train examples with their gold label) the search may show the student,
            each next to the rule it illustrates; 0 keeps the paper's rules-only prompt.
        n_demo_candidates: train examples per rule the search chooses its demo from.
        max_invalid_share: stop when more zero-shot dev answers than this share are invalid or failed.
        allow_overlap: go on when dev holds train examples (compared by content); else an error.
        search: `SearchConfig` or dict for the Optuna stage; None skips it.
        adapter: the adapter every stage runs under (default `LabelAdapter()`).
        out_dir: output folder (str, Path or `RunFolder`): resume, artifacts, report.md, review.html.
        evaluate_baseline, contribution: score zero-shot on dev; measure each rule's worth after compile.
        progress: progress bars. seed: every random choice (sampling, clustering, search).
    """

    def __init__(self, teacher: str | dspy.LM | None = None, *, labels: list[str] | None = None,
                 label_field: str | None = None, mining: str = "contrastive", max_train_examples: int | None = None,
                 probe_examples: int = 64, num_threads: int = 4, student_threads: int | None = None,
                 embedder="tfidf", cluster_method: str = "kmeans", cluster_by: str = "label",
                 n_clusters: int | None = None, max_clusters: int = 6, eps: float = 0.4, min_samples: int = 6,
                 min_cluster_size: int = 2, n_phrasings: int = 2, refinement: str = "corrective",
                 max_refine_iters: int = 2, refine_examples: int = 64, n_failures: int = 20, n_successes: int = 20,
                 max_corrections: int = 3, min_delta: float = 0.0, max_demos: int = 4, n_demo_candidates: int = 3,
                 max_invalid_share: float = 0.5, allow_overlap: bool = False,
                 search: SearchConfig | dict | None = None, adapter: dspy.Adapter | None = None,
                 out_dir: str | Path | RunFolder | None = None, evaluate_baseline: bool = True,
                 contribution: bool = True, progress: bool = False, seed: int = 0):
        for name, value in locals().items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    @classmethod
    def defaults(cls) -> dict:
        """Each parameter's default, from the one place it is stated: this class's signature."""
        return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}

    def estimate_calls(self, n_train: int, n_dev: int, n_labels: int) -> dict[str, int]:
        """Upper bounds on LM calls per stage, before any money is spent (cache hits are free)."""
        return estimate_calls(*self.validated(), n_train, n_dev, n_labels)

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self.defaults()}

    def validated(self) -> tuple[PLDParams, SearchConfig | None]:
        """scikit-learn's way: the constructor stores, `compile` validates, against the schema YAML's `pld:`
        section uses too (pld_optim.params)."""
        params = validate({n: getattr(self, n) for n in PLDParams.model_fields})
        if self.search is None or isinstance(self.search, SearchConfig):
            return params, self.search
        try:
            return params, SearchConfig.model_validate(self.search)
        except ValueError as exc:
            raise ValueError(f"PLD: search: {exc}") from None

    def prepare(self, student: dspy.Module, trainset, valset=None) -> CompileRun:
        """Everything that can be checked before the first LM call: data, labels and their overlap, the
        parameters, the output folder, its cache and the search storage. `pld-optim compile --dry-run` runs
        only this."""
        params, search = self.validated()
        return prepare_run(student, params, search, trainset, valset, self.out_dir, self.adapter or LabelAdapter())

    def compile(self, student: dspy.Module, *, trainset, valset=None, teacher=None, **kwargs) -> dspy.Module:
        """Distil rules into a copy of `student` and return it; `student` is never changed.

        Steps: prepare (all checks, no LM call), baseline, mine, cluster, refine, search, contributions,
        finish. With `out_dir`, the same call after an interruption resumes from the folder.
        """
        if kwargs:
            raise TypeError(f"PLD.compile() got unexpected arguments: {sorted(kwargs)}")
        return self.execute(self.prepare(student, trainset, valset), teacher)

    def execute(self, run: CompileRun, teacher=None) -> dspy.Module:
        """The stages of a prepared compile (the CLI prepares, then removes an old run for --fresh)."""
        teacher_lm = self._teacher(teacher)
        run.ctx = self._context(run, teacher_lm)
        folder = run.folder
        with folder.writing() if folder else nullcontext():
            if folder is not None:
                names = [n for n in PLDParams.model_fields if n not in REPORTING_ONLY]
                folder.claim(fingerprint(run, teacher_lm, run.scorer.student_lm, names, self.embedder))
            with dspy.context(adapter=run.adapter):
                self._baseline(run)
                self._mine(run)
                self._cluster(run)
                self._refine(run)
                rules = self._search(run)
                rules = self._contributions(run, rules)
                return self._finish(run, rules)

    def _teacher(self, teacher) -> dspy.BaseLM:
        lm = as_lm(teacher if teacher is not None else self.teacher) or dspy.settings.lm
        if lm is None:
            raise ValueError("PLD: no teacher; pass teacher='provider/model' or a dspy.LM, or dspy.configure(lm=...)")
        if (lm.kwargs.get("temperature") or 0) > 0:
            lm = lm.copy(rollout_id=self.seed)  # seeded samples that still hit the cache
        return lm

    def _context(self, run: CompileRun, teacher: dspy.BaseLM) -> StageContext:
        if run.task.predictor.lm is None and dspy.settings.lm is None:
            raise ValueError("PLD: the student program has no LM; dspy.configure(lm=...) or predictor.set_lm(...)")
        p = run.params
        scorer = Scorer(run.student, run.task, adapter=run.adapter, num_threads=p.student_threads or p.num_threads,
                        progress=self.progress)
        return StageContext.build(run.task, run.train, teacher, scorer, p, make_embedder(self.embedder, p.seed),
                                  self.progress)

    # -- the steps ------------------------------------------------------------------------------

    def _baseline(self, run: CompileRun) -> None:
        """Before the teacher is paid, the student must answer: on all of dev (the baseline), else on the
        train probe contrastive mining runs anyway (`_mine`), else on the first dev examples."""
        p, labels = run.params, run.task.labels
        with run.usage.stage("baseline" if p.evaluate_baseline else "input check", run.scorer):
            run.scorer.check_inputs_reach(run.dev[:2])
            if p.evaluate_baseline:
                outcomes = run.scorer.outcomes(Prompt(), run.dev)
            elif p.mining != "contrastive":
                outcomes = run.scorer.outcomes(Prompt(), run.dev[:STUDENT_CHECK])
        if p.evaluate_baseline:
            run.baseline = check_student(outcomes, labels, "dev", p.max_invalid_share)
        elif p.mining != "contrastive":
            check_student(outcomes, labels, f"the first {len(outcomes)} dev examples", p.max_invalid_share)

    def _mine(self, run: CompileRun) -> None:
        p, rng = run.params, run.rng("mine")
        mistakes = None
        if p.mining == "contrastive":
            probe = stratified(run.train, run.task.label_field, p.probe_examples, rng)
            with run.usage.stage("probe", run.scorer):
                outcomes = run.scorer.outcomes(Prompt(), probe)
            if run.baseline is None:
                check_student(outcomes, run.task.labels, "the train probe", p.max_invalid_share)
            examples, mistakes = contrastive_sample(probe, outcomes, run.task.labels,
                                                    p.max_train_examples or len(probe), rng)
        else:
            examples = stratified(run.train, run.task.label_field, p.max_train_examples, rng)
        checkpoint = run.folder.mined_log() if run.folder else None
        with run.usage.stage("mine") as spent:
            run.mined = mine(run.ctx, examples, mistakes=mistakes, checkpoint=checkpoint)
            spent.failures = run.mined.failures
        if not run.mined.good():
            refused = run.mined.refusals
            reasons = "; ".join(sorted({r.reason for r in refused}))[:300] or "none"
            first = next((m.error for m in run.mined.mined if m.error and not m.refused), "none")
            raise RuntimeError(f"PLD: the teacher produced no usable rule for {len(examples)} examples ({len(refused)} "
                               f"refused by the quality gates: {reasons}); first error: {first}. Use a stronger "
                               "teacher or more examples.")

    def _cluster(self, run: CompileRun) -> None:
        p = run.params
        with run.usage.stage("cluster") as spent:
            run.clusters = cluster_rules(run.mined.good(), run.ctx.embed, by=p.cluster_by, method=p.cluster_method,
                                         n_clusters=p.n_clusters, max_clusters=p.max_clusters, eps=p.eps,
                                         min_samples=p.min_samples, min_cluster_size=p.min_cluster_size, seed=p.seed)
            run.merged = merge_clusters(run.ctx, run.clusters)
            spent.failures = run.merged.failures

    def _refine(self, run: CompileRun) -> None:
        sample = run.rng("refine").sample(run.train, min(run.params.refine_examples, len(run.train)))
        with run.usage.stage("refine", run.scorer) as spent:
            run.refined = refine(run.ctx, run.merged.rules, sample, run.dev)
            spent.failures = run.refined.failures

    def _search(self, run: CompileRun) -> RuleSet:
        clustered, refined = run.merged.rules, run.refined.rules
        pool = refined + [r for r in clustered if r.id not in {x.id for x in refined}]
        if run.search is None:
            return self._ruleset(run, refined, None, None, run.refined.score or run.scorer.score(
                Prompt(rules=[r.text for r in refined]), run.dev))
        # Known points, and no rules at all (zero-shot, scored as the baseline): rules that do not beat it
        # on dev are not shipped. Rules only: the clustered and the refined list; with demos: the refined
        # list with one and with two worked examples per rule (the decoder keeps at most max_demos).
        if run.params.max_demos:
            seeds = [[Selection(rule_id=r.id, demos=list(range(min(n, len(r.examples))))) for r in refined]
                     for n in (1, 2)] + [[]]
        else:
            seeds = [[Selection(rule_id=r.id) for r in clustered], [Selection(rule_id=r.id) for r in refined], []]
        search = PromptSearch(run.scorer, pool, run.dev, config=run.search, max_demos=run.params.max_demos,
                              label_field=run.task.label_field, out_dir=run.folder.path if run.folder else None,
                              seed=run.params.seed)
        with run.usage.stage("search", run.scorer):
            try:
                result, outcomes = search.run(seeds)
            except Exception as exc:
                kept = self._finish(run, self._ruleset(run, refined, None, None, run.refined.score or run.scorer.score(
                    Prompt(rules=[r.text for r in refined]), run.dev)))
                raise search_failed(run.folder, exc, len(kept.pld_rules.active_rules())) from exc
            # This process scored the winner already, unless an earlier one did: then once more (a cache hit).
            score = (score_outcomes(outcomes, run.task.labels) if outcomes is not None
                     else run.scorer.score(search.prompt(result.best.selection), run.dev))
        return self._ruleset(run, pool, result.best.selection, result, score)

    def _contributions(self, run: CompileRun, rules: RuleSet) -> RuleSet:
        if not run.params.contribution:
            return rules
        with run.usage.stage("contribution", run.scorer):
            rules = with_contributions(rules, rule_contributions(run.scorer, rules, run.dev, rules.dev_macro_f1))
        rules.usage = [*run.usage.stages, run.usage.total()]
        return rules

    def _ruleset(self, run: CompileRun, rules, selection, searched, score) -> RuleSet:
        base, run.score = run.baseline, score
        return RuleSet(
            predictor=run.task.predictor_name, label_field=run.task.label_field, labels=run.task.labels,
            base_instructions=run.task.signature.instructions, rules=rules, selection=selection,
            clustering=run.clusters.report, history=run.refined.history,
            refusals=run.mined.refusals + run.merged.refusals + run.refined.refusals,
            baseline_dev_macro_f1=base.macro_f1 if base else None, dev_macro_f1=score.macro_f1,
            baseline_dev_confusion=base.confusion if base else None, dev_confusion=score.confusion,
            search=searched, usage=[*run.usage.stages, run.usage.total()], data_overlap=run.overlap,
            seed=run.params.seed)

    def _finish(self, run: CompileRun, rules: RuleSet) -> dspy.Module:
        compiled = apply_rules(run.student, rules)
        rules.system_prompt = run.adapter.format_system_message(compiled.predictors()[0].signature)
        self.mined_, self.clusters_, self.history_ = run.mined.mined, run.clusters.report, run.refined.history
        self.usage_, self.baseline_score_, self.score_, self.rules_ = rules.usage, run.baseline, run.score, rules
        compiled.pld_rules = rules
        if run.folder is not None:
            run.folder.save(compiled, rules, context=run.header(rules))
        logger.info("PLD: dev macro F1 %s -> %.4f with %d rules", f"{run.baseline.macro_f1:.4f}" if run.baseline
                    else "?", rules.dev_macro_f1, len(rules.active_rules()))
        return compiled
