"""PLD, the teleprompter: mine -> cluster -> merge -> refine -> search, and the compiled student it returns."""

from __future__ import annotations

import inspect
import logging
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import dspy
from dspy.teleprompt import Teleprompter

from pld_optim.datasets.sampling import stratified
from pld_optim.evaluation.scoring import Score, check_valid
from pld_optim.lm.adapter import LabelAdapter, student_adapter
from pld_optim.lm.factory import resolve_teacher
from pld_optim.params import PLDParams, validate
from pld_optim.plan import STUDENT_CHECK, CompilePlan, apply_rules, estimate_lm_calls, plan_compile
from pld_optim.records import Selection
from pld_optim.rules import Prompt, Rule, RuleSet
from pld_optim.run.fingerprint import fingerprint
from pld_optim.run.folder import RunFolder
from pld_optim.run.usage import UsageLog
from pld_optim.search.config import SearchConfig
from pld_optim.search.study import Choice, PromptSearch, SearchFailed
from pld_optim.stages.cluster import ClusterResult, cluster_rules
from pld_optim.stages.context import StageContext
from pld_optim.stages.contribution import Earned, earn_places
from pld_optim.stages.feedback import RefineResult
from pld_optim.stages.merge import MergeResult, merge_clusters
from pld_optim.stages.mine import MineResult, contrastive_sample, mine
from pld_optim.stages.refine import refine
from pld_optim.stages.verify import VerifyResult, verify_rules

logger = logging.getLogger("pld_optim")


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
        verify_per_label, min_precision: before the search, the student reads each rule's condition on this
            many train items per label (one yes/no each); a rule whose condition never holds, or holds for
            items of its label less than `min_precision` of the time, is refused (0: no check).
        max_demos: worked examples (train examples with their gold label) the search may show the student,
            each next to the rule it illustrates; 0 keeps the paper's rules-only prompt.
        n_demo_candidates: train examples per rule the search chooses its demo from.
        max_invalid_share: stop when more zero-shot dev answers than this share are invalid or failed.
        allow_overlap: go on when dev holds train examples (compared by content); else an error.
        search: `SearchConfig` or dict for the Optuna stage; None skips it.
        adapter: the adapter every stage runs under; default: the student runs under the configured one
            (`dspy.configure(adapter=...)`), else `LabelAdapter()`, and the teacher under `LabelAdapter()`.
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
                 max_corrections: int = 3, min_delta: float = 0.0, verify_per_label: int = 8,
                 min_precision: float = 0.5, max_demos: int = 4, n_demo_candidates: int = 3,
                 max_invalid_share: float = 0.5, allow_overlap: bool = False,
                 search: SearchConfig | dict | None = None, adapter: dspy.Adapter | None = None,
                 out_dir: str | Path | RunFolder | None = None, evaluate_baseline: bool = True,
                 contribution: bool = True, progress: bool = False, seed: int = 0):
        # The constructor only stores, as scikit-learn's do; `prepare` validates.
        self.teacher = teacher
        self.labels, self.label_field = labels, label_field
        # Mining
        self.mining, self.max_train_examples, self.probe_examples = mining, max_train_examples, probe_examples
        # Clustering and merging
        self.embedder, self.cluster_method, self.cluster_by = embedder, cluster_method, cluster_by
        self.n_clusters, self.max_clusters, self.eps = n_clusters, max_clusters, eps
        self.min_samples, self.min_cluster_size, self.n_phrasings = min_samples, min_cluster_size, n_phrasings
        # Refinement
        self.refinement, self.max_refine_iters, self.refine_examples = refinement, max_refine_iters, refine_examples
        self.n_failures, self.n_successes = n_failures, n_successes
        self.max_corrections, self.min_delta = max_corrections, min_delta
        # The data check of every rule
        self.verify_per_label, self.min_precision = verify_per_label, min_precision
        # The search and its worked examples
        self.search, self.max_demos, self.n_demo_candidates = search, max_demos, n_demo_candidates
        # Checks, reporting and execution
        self.max_invalid_share, self.allow_overlap = max_invalid_share, allow_overlap
        self.evaluate_baseline, self.contribution = evaluate_baseline, contribution
        self.num_threads, self.student_threads = num_threads, student_threads
        self.adapter, self.out_dir, self.progress, self.seed = adapter, out_dir, progress, seed

    @classmethod
    def defaults(cls) -> dict:
        """Each parameter's default, from the one place it is stated: this class's signature."""
        return {n: p.default for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}

    def get_params(self) -> dict:
        return {name: getattr(self, name) for name in self.defaults()}

    def estimate_calls(self, n_train: int, n_dev: int, n_labels: int) -> dict[str, int]:
        """Upper bounds on LM calls per stage, before any money is spent (cache hits are free)."""
        return estimate_lm_calls(*self.validated(), n_train, n_dev, n_labels)

    def validated(self) -> tuple[PLDParams, SearchConfig | None]:
        """scikit-learn's way: the constructor stores, `compile` validates, against the schema YAML's `pld:`
        section uses too (pld_optim.params)."""
        params = validate(PLDParams.fields_of(self))
        if self.search is None or isinstance(self.search, SearchConfig):
            return params, self.search
        try:
            return params, SearchConfig.model_validate(self.search)
        except ValueError as exc:
            raise ValueError(f"PLD: search: {exc}") from None

    def prepare(self, student: dspy.Module, trainset, valset=None) -> CompilePlan:
        """Everything that can be checked before the first LM call, as a frozen plan: data, labels and their
        overlap, the parameters, the output folder, its cache and the search storage. `pld-optim compile
        --dry-run` runs only this."""
        params, search = self.validated()
        return plan_compile(student, params, search, trainset, valset, self.out_dir, student_adapter(self.adapter),
                            self.adapter or LabelAdapter())

    def compile(self, student: dspy.Module, *, trainset, valset=None, teacher=None, **kwargs) -> dspy.Module:
        """Distil rules into a copy of `student` and return it; `student` is never changed.

        `teacher`, as in DSPy, may be a program: PLD's teacher is the LM it runs on (an LM or a model string is
        accepted too); default the constructor's. With `out_dir`, the same call after an interruption resumes
        from the folder.
        """
        if kwargs:
            raise TypeError(f"PLD.compile() got unexpected arguments: {sorted(kwargs)}")
        plan = self.prepare(student, trainset, valset)
        return self._execute(plan, resolve_teacher(teacher if teacher is not None else self.teacher, self.seed))

    def _execute(self, plan: CompilePlan, teacher: dspy.BaseLM) -> dspy.Module:
        ctx = plan.context(teacher, self.progress)
        usage = UsageLog()
        with plan.folder.writing() if plan.folder else nullcontext():
            if plan.folder is not None:
                plan.folder.claim(fingerprint(plan, teacher, ctx.scorer.student_lm, self.embedder))
            with dspy.context(adapter=plan.teacher_adapter):  # the student's runs inside ctx.scorer
                baseline = self._baseline(plan, ctx, usage)
                mined = self._mine(plan, ctx, usage, baseline)
                clusters, merged = self._cluster(plan, ctx, usage, mined)
                refined = self._refine(plan, ctx, usage, merged)
                verified = self._verify(plan, ctx, usage, merged, refined)
                stages = (baseline, mined, clusters, merged, refined, verified)
                try:
                    choice = self._search(plan, ctx, usage, merged, refined, verified)
                except SearchFailed:
                    # Refinement's rules are kept (in the folder, or as `rules_`) before the error propagates.
                    unsearched = self._unsearched(plan, ctx, verified.passed(refined.rules), None)
                    self._finish(plan, plan.rule_set(ctx, usage, *stages, unsearched), mined, baseline,
                                 unsearched.score)
                    raise
                choice, earned = self._earn(plan, ctx, usage, choice)
                return self._finish(plan, plan.rule_set(ctx, usage, *stages, choice, earned), mined, baseline,
                                    choice.score)

    # -- the steps: each takes what it needs and returns what it made ---------------------------------

    def _baseline(self, plan: CompilePlan, ctx: StageContext, usage: UsageLog) -> Score | None:
        """Before the teacher is paid, the student must answer: on all of dev (the baseline), else on the
        train probe contrastive mining runs anyway (`_mine`), else on the first dev examples."""
        p, scorer = plan.params, ctx.scorer
        checked = plan.dev if p.evaluate_baseline else [] if p.mining == "contrastive" else plan.dev[:STUDENT_CHECK]
        with usage.stage("baseline" if p.evaluate_baseline else "input check", scorer):
            scorer.check_inputs_reach(plan.dev[:2])
            outcomes = scorer.outcomes(Prompt(), checked) if checked else []
        if not outcomes:
            return None
        where = "dev" if p.evaluate_baseline else f"the first {len(outcomes)} dev examples"
        score = check_valid(outcomes, plan.task.labels, f"PLD: the zero-shot student on {where}", p.max_invalid_share)
        return score if p.evaluate_baseline else None

    def _mine(self, plan: CompilePlan, ctx: StageContext, usage: UsageLog, baseline: Score | None) -> MineResult:
        p, rng, label_field = plan.params, plan.rng("mine"), plan.task.label_field
        mistakes = None
        if p.mining == "contrastive":
            probe = stratified(plan.train, label_field, p.probe_examples, rng)
            with usage.stage("probe", ctx.scorer):
                outcomes = ctx.scorer.outcomes(Prompt(), probe)
            if baseline is None:
                check_valid(outcomes, plan.task.labels, "PLD: the zero-shot student on the train probe",
                            p.max_invalid_share)
            examples, mistakes = contrastive_sample(probe, outcomes, plan.task.labels,
                                                    p.max_train_examples or len(probe), rng)
        else:
            examples = stratified(plan.train, label_field, p.max_train_examples, rng)
        with usage.stage("mine") as spent:
            mined = mine(ctx, examples, mistakes=mistakes, checkpoint=plan.folder.mined_log() if plan.folder else None)
            spent.failures = mined.failures
        return mined.usable(len(examples))

    def _cluster(self, plan: CompilePlan, ctx: StageContext, usage: UsageLog,
                 mined: MineResult) -> tuple[ClusterResult, MergeResult]:
        p = plan.params
        with usage.stage("cluster") as spent:
            clusters = cluster_rules(mined.good(), ctx.embed, by=p.cluster_by, method=p.cluster_method,
                                     n_clusters=p.n_clusters, max_clusters=p.max_clusters, eps=p.eps,
                                     min_samples=p.min_samples, min_cluster_size=p.min_cluster_size, seed=p.seed)
            merged = merge_clusters(ctx, clusters)
            spent.failures = merged.failures
        return clusters, merged

    def _refine(self, plan: CompilePlan, ctx: StageContext, usage: UsageLog, merged: MergeResult) -> RefineResult:
        sample = plan.rng("refine").sample(plan.train, min(plan.params.refine_examples, len(plan.train)))
        with usage.stage("refine", ctx.scorer) as spent:
            refined = refine(ctx, merged.rules, sample, plan.dev)
            spent.failures = refined.failures
        return refined

    def _verify(self, plan: CompilePlan, ctx: StageContext, usage: UsageLog, merged: MergeResult,
                refined: RefineResult) -> VerifyResult:
        """Every rule the search may choose, checked on train items as the student reads its condition."""
        kept = {r.id for r in refined.rules}
        pool = refined.rules + [r for r in merged.rules if r.id not in kept]
        if not plan.params.verify_per_label:
            return VerifyResult(rules=pool)
        with usage.stage("verify", ctx.scorer) as spent:
            verified = verify_rules(ctx, pool, plan.train, per_label=plan.params.verify_per_label,
                                    rng=plan.rng("verify"), min_precision=plan.params.min_precision)
            spent.failures = verified.failures
        return verified

    def _search(self, plan: CompilePlan, ctx: StageContext, usage: UsageLog, merged: MergeResult,
                refined: RefineResult, verified: VerifyResult) -> Choice:
        clustered, kept = verified.passed(merged.rules), verified.passed(refined.rules)
        if not clustered and not kept:
            logger.warning("PLD: the data refused every rule (%d; rules.json lists them with their figures); the "
                           "program ships without rules", len(verified.refusals))
            return self._unsearched(plan, ctx, [], None)
        if plan.search is None:
            return self._unsearched(plan, ctx, kept, refined.score if len(kept) == len(refined.rules) else None)
        pool = kept + [r for r in clustered if r.id not in {x.id for x in kept}]
        search = PromptSearch(ctx.scorer, pool, plan.dev, config=plan.search, max_demos=plan.params.max_demos,
                              label_field=plan.task.label_field, out_dir=plan.folder.path if plan.folder else None,
                              seed=plan.params.seed)
        with usage.stage("search", ctx.scorer):
            return search.choose(search.seeds(clustered, kept, plan.params.max_demos), kept_rules=len(kept),
                                 folder=plan.folder)

    def _unsearched(self, plan: CompilePlan, ctx: StageContext, rules: list[Rule], score: Score | None) -> Choice:
        """Refinement's list as it stands (less what the data refused), scored on dev unless `score` is known
        (a cache hit when refinement scored the same prompt)."""
        score = score or ctx.scorer.score(Prompt(rules=[r.text for r in rules]), plan.dev)
        return Choice(pool=rules, selection=None, search=None, score=score)

    def _earn(self, plan: CompilePlan, ctx: StageContext, usage: UsageLog,
              choice: Choice) -> tuple[Choice, Earned | None]:
        """The chosen prompt without the rules that add nothing on it, and what each rule that ships adds."""
        if not plan.params.contribution:
            return choice, None
        selection = choice.selection if choice.selection is not None else [Selection(rule_id=r.id)
                                                                            for r in choice.pool]
        with usage.stage("contribution", ctx.scorer):
            earned = earn_places(ctx.scorer, choice.pool, selection, plan.task.label_field, plan.dev, choice.score)
        if not earned.dropped:
            return choice, earned
        return replace(choice, selection=earned.selection, score=earned.score), earned

    def _finish(self, plan: CompilePlan, rules: RuleSet, mined: MineResult, baseline: Score | None,
                score: Score) -> dspy.Module:
        compiled = apply_rules(plan.student, rules)
        compiled.pld_rules = rules
        # Fitted attributes, scikit-learn style.
        self.rules_, self.usage_, self.mined_ = rules, rules.usage, mined.mined
        self.clusters_, self.history_ = rules.clustering, rules.history
        self.baseline_score_, self.score_ = baseline, score
        if plan.folder is not None:
            plan.folder.save(compiled, rules)
        logger.info("PLD: dev macro F1 %s -> %.4f with %d rules", f"{baseline.macro_f1:.4f}" if baseline else "?",
                    rules.dev_macro_f1, len(rules.active_rules()))
        return compiled
