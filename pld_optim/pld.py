"""PLD: the teleprompter that runs mine -> cluster -> refine (-> search) and returns the compiled student."""

from __future__ import annotations

import hashlib
import logging
import os
import random
from pathlib import Path

import dspy
from dspy.teleprompt import Teleprompter
from pydantic import ValidationError

from pld_optim.ablate import rule_contributions, with_contributions
from pld_optim.adapter import LabelAdapter
from pld_optim.artifact import RuleSet, Selection, render_instructions, texts_of
from pld_optim.cluster import cluster_by_label, cluster_vectors, consolidate, make_embedder
from pld_optim.config import PLDConfig
from pld_optim.gates import Gate, common_words
from pld_optim.mine import mine_rules, refusals
from pld_optim.models import as_lm, token_counter
from pld_optim.refine import refine_rules
from pld_optim.review import write_review
from pld_optim.run_folder import FolderLock, atomic_write_text, check_writable, claim, data_digest
from pld_optim.scoring import Score, run_student, score_outcomes
from pld_optim.search import SearchConfig, check_storage, search_rules
from pld_optim.task import Task, example_id, format_inputs, resolve_task, validate_examples
from pld_optim.usage import UsageLog

logger = logging.getLogger("pld_optim")


def apply_rules(program: dspy.Module, rules: RuleSet) -> dspy.Module:
    """A copy of `program` whose predictor carries the rule set (e.g. an edited rules.json); no LM call."""
    predictors = dict(program.named_predictors())
    if rules.predictor not in predictors:
        raise ValueError(f"rules.json is for predictor {rules.predictor!r}; the program has {list(predictors)}")
    if rules.label_field not in predictors[rules.predictor].signature.output_fields:
        raise ValueError(f"rules.json labels field {rules.label_field!r}, which the program's signature lacks")
    return with_instructions(program, rules.predictor, rules.render_instructions())


def with_instructions(program: dspy.Module, predictor_name: str, instructions: str) -> dspy.Module:
    """The one way a program gets rules: a copy whose predictor carries `instructions`. with_instructions
    returns a new signature class; assigning `.instructions` would leak into every copy (it is shared)."""
    compiled = program.deepcopy()
    predictor = dict(compiled.named_predictors())[predictor_name]
    predictor.signature = predictor.signature.with_instructions(instructions)
    return compiled


def split_dev(examples: list[dspy.Example], task: Task, share: float = 0.25) -> tuple[list, list]:
    """Deterministic hash split, so the same data always gives the same dev set."""
    def bucket(ex):
        # Salted: the loaders cut train/dev/test by sha1(id) too, and the same hash would carve nearly all or
        # none of a loader's split off as dev.
        key = f"pld-dev:{example_id(ex, task.input_fields)}"
        return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    dev = [ex for ex in examples if bucket(ex) < share]
    train = [ex for ex in examples if bucket(ex) >= share]
    return train, dev


def stratified(examples: list, label_field: str, n: int | None, rng: random.Random) -> list:
    """At most n examples, labels taken in turn from seeded shuffles: a small mining budget still reaches
    every label (each label's rules are clustered and merged on their own)."""
    if not n or len(examples) <= n:
        return list(examples)
    pools: dict[str, list] = {}
    for ex in rng.sample(examples, len(examples)):
        pools.setdefault(str(ex[label_field]), []).append(ex)
    out = []
    while len(out) < n:
        for pool in pools.values():
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


class PLD(Teleprompter):
    """Prompt-Level Distillation (arXiv 2602.21103) as a DSPy optimizer.

    Parameters follow the pipeline: mining (`teacher`, `max_train_examples`, `num_threads`), clustering
    (`embedder`, `cluster_method`, `cluster_by` ("label": within each gold label, the default; "all"),
    `n_clusters` and `max_clusters` (per label when clustering by label), `eps`, `min_samples`,
    `n_phrasings`), refinement
    (`max_refine_iters`, `refine_examples`, `n_failures`, `n_successes`). The student is the program's
    own LM (or `dspy.settings.lm`); the objective is macro F1 over the whole dev split.
    """

    def __init__(
        self,
        teacher: str | dspy.LM | None = None,
        *,
        labels: list[str] | None = None,
        label_field: str | None = None,
        max_train_examples: int | None = None,
        num_threads: int = 4,
        student_threads: int | None = None,
        embedder="tfidf",
        cluster_method: str = "kmeans",
        cluster_by: str = "label",
        n_clusters: int | None = None,
        max_clusters: int = 6,
        eps: float = 0.4,
        min_samples: int = 6,
        min_cluster_size: int = 2,
        n_phrasings: int = 2,
        max_refine_iters: int = 2,
        refine_examples: int = 64,
        n_failures: int = 20,
        n_successes: int = 20,
        min_delta: float = 0.0,
        search: SearchConfig | dict | None = None,
        adapter: dspy.Adapter | None = None,
        out_dir: str | Path | None = None,
        evaluate_baseline: bool = True,
        contribution: bool = True,
        progress: bool = False,
        seed: int = 0,
    ):
        self.teacher = teacher
        self.labels = labels
        self.label_field = label_field
        self.max_train_examples = max_train_examples
        self.num_threads = num_threads
        self.student_threads = student_threads
        self.embedder = embedder
        self.cluster_method = cluster_method
        self.cluster_by = cluster_by
        self.n_clusters = n_clusters
        self.max_clusters = max_clusters
        self.eps = eps
        self.min_samples = min_samples
        self.min_cluster_size = min_cluster_size
        self.n_phrasings = n_phrasings
        self.max_refine_iters = max_refine_iters
        self.refine_examples = refine_examples
        self.n_failures = n_failures
        self.n_successes = n_successes
        self.min_delta = min_delta
        self.search = search
        self.adapter = adapter
        self.out_dir = out_dir
        self.evaluate_baseline = evaluate_baseline
        self.contribution = contribution
        self.progress = progress
        self.seed = seed

    def estimate_calls(self, n_train: int, n_dev: int, n_labels: int | None = None) -> dict[str, int]:
        """Upper bounds on LM calls per stage, printed before any money is spent (cache hits are free)."""
        mine = min(n_train, self.max_train_examples or n_train)
        refine_train = min(self.refine_examples, n_train)
        return {
            "teacher: mine": mine,
            "teacher: merge clusters": min((self.n_clusters or self.max_clusters) * (n_labels or 1), mine),
            "teacher: refine": self.max_refine_iters,
            "student: baseline": n_dev if self.evaluate_baseline else 0,
            "student: refine": n_dev + self.max_refine_iters * (refine_train + n_dev),
            "student: search": self._search_config().n_trials * n_dev + n_dev if self.search is not None else 0,
            "student: contribution": (self.n_clusters or self.max_clusters) * (n_labels or 1) * n_dev
            if self.contribution else 0,
        }

    def _search_config(self) -> SearchConfig:
        return self.search if isinstance(self.search, SearchConfig) else SearchConfig.model_validate(self.search)

    def validate_params(self) -> PLDConfig:
        """scikit-learn's way: the constructor stores, compile validates, against the same schema YAML's
        `pld:` section uses (config.PLDConfig), so both accept the same values with the same checks."""
        try:
            params = PLDConfig.model_validate({name: getattr(self, name) for name in PLDConfig.model_fields})
            if self.search is not None:
                self._search_config()
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}: {e['msg']}"
                                 for e in exc.errors())
            raise ValueError(f"PLD: {problems}") from None
        return params

    def check(self, student: dspy.Module, trainset, valset=None) -> tuple[Task, list, list]:
        """Everything that can be checked before the first LM call: data and labels, parameters, the output
        folder and the search storage. `compile` runs it first; `pld-optim compile --dry-run` runs only it."""
        task = resolve_task(student, self.labels, self.label_field)
        train = validate_examples(trainset, task, "train")
        classes = {str(ex[task.label_field]) for ex in train}
        if len(classes) < 2:
            raise ValueError(f"PLD: every train example has the label {classes.pop()!r}; rules that separate labels "
                             "need at least two classes in the trainset")
        if valset is None:
            train, dev = split_dev(train, task)
            logger.warning("PLD: no valset given; using a hashed 25%% of the trainset (%d examples) as dev", len(dev))
            if not dev:
                raise ValueError("PLD: the trainset is too small to split off a dev set; pass valset=.")
        else:
            dev = validate_examples(valset, task, "dev")
        self.validate_params()
        if self.out_dir:
            check_writable(Path(self.out_dir), "out_dir")
            if self.search is not None:
                check_storage(self._search_config(), Path(self.out_dir))
        return task, train, dev

    def compile(self, student: dspy.Module, *, trainset, valset=None, teacher=None, **kwargs) -> dspy.Module:
        if kwargs:
            raise TypeError(f"PLD.compile() got unexpected arguments: {sorted(kwargs)}")
        task, train, dev = self.check(student, trainset, valset)
        teacher_lm = as_lm(teacher if teacher is not None else self.teacher) or dspy.settings.lm
        if teacher_lm is None:
            raise ValueError("PLD: no teacher; pass teacher='provider/model' or a dspy.LM, or dspy.configure(lm=...)")
        if (teacher_lm.kwargs.get("temperature") or 0) > 0:
            teacher_lm = teacher_lm.copy(rollout_id=self.seed)  # seeded samples that still hit the cache
        if task.predictor.lm is None and dspy.settings.lm is None:
            raise ValueError("PLD: the student program has no LM; dspy.configure(lm=...) or predictor.set_lm(...)")
        out = Path(self.out_dir) if self.out_dir else None
        # Every stage runs under one adapter: the teacher's structured outputs get the same grammar
        # and forgiving parsing as the student's labels.
        adapter = self.adapter or LabelAdapter()
        if out is None:
            with dspy.context(adapter=adapter):
                return self._run(student, task, train, dev, teacher_lm, adapter, None)
        with FolderLock(out):
            claim(out, self.fingerprint(task, train, dev, teacher_lm, task.predictor.lm or dspy.settings.lm))
            with dspy.context(adapter=adapter):
                return self._run(student, task, train, dev, teacher_lm, adapter, out)

    def fingerprint(self, task: Task, train: list, dev: list, teacher: dspy.BaseLM, student) -> dict:
        """What an output folder's results depend on (pld_optim.run_folder): resuming requires the same."""
        # Every schema parameter changes results except whether the baseline is scored.
        reporting_only = {"evaluate_baseline", "contribution"}
        names = ["labels", "label_field", *(n for n in PLDConfig.model_fields if n not in reporting_only)]
        params = {name: getattr(self, name) for name in names}
        params["embedder"] = self.embedder if isinstance(self.embedder, str) else type(self.embedder).__name__
        if self.search is not None:
            params["search"] = self._search_config().model_dump(
                # How trials are proposed or stopped does not change what a trial scores: a study may go on
                # with another sampler, as Optuna allows.
                exclude={"n_trials", "timeout", "max_student_calls", "storage", "plots", "study_name", "sampler",
                         "pruner", "n_startup_trials", "pick_max_tokens"})
        ids = lambda xs: [example_id(ex, task.input_fields) for ex in xs]  # noqa: E731

        def lm(x) -> dict:
            kwargs = getattr(x, "kwargs", {}) or {}
            return {"model": getattr(x, "model", str(x)), "temperature": kwargs.get("temperature"),
                    "max_tokens": kwargs.get("max_tokens") or kwargs.get("max_completion_tokens")}

        return {"data": {"train": data_digest(train, ids(train), task.label_field),
                         "dev": data_digest(dev, ids(dev), task.label_field)},
                "teacher": lm(teacher), "student": lm(student), "params": params, "seed": self.seed}

    def _run(self, student: dspy.Module, task: Task, train: list, dev: list, teacher_lm: dspy.BaseLM,
             adapter: dspy.Adapter, out: Path | None) -> dspy.Module:
        rng = random.Random(self.seed)
        mine_set = stratified(train, task.label_field, self.max_train_examples, rng)
        refine_set = rng.sample(train, min(self.refine_examples, len(train)))
        embed = make_embedder(self.embedder, self.seed)
        usage = UsageLog()
        inputs = {example_id(ex, task.input_fields): format_inputs(ex, task.input_fields) for ex in train}
        gate = Gate(labels=task.labels, task_text=task.signature.instructions,
                    common_words=common_words(list(inputs.values())))
        base = task.signature.instructions

        def program_with(rules: list[str]) -> dspy.Module:
            return with_instructions(student, task.predictor_name, render_instructions(base, rules, task.label_field))

        def outcomes(rules, examples):
            return run_student(program_with(rules), examples, task,
                               num_threads=self.student_threads or self.num_threads, progress=self.progress)

        def dev_score(rules) -> Score:
            return score_outcomes(outcomes(rules, dev), task.labels)

        with usage.stage("mine") as st:
            mined = mine_rules(mine_set, task, teacher_lm, gate=gate, num_threads=self.num_threads,
                               checkpoint=out / "mined.jsonl" if out else None, progress=self.progress)
            st.failures = sum(m.error is not None for m in mined)
        refused = refusals(mined)
        good = [m for m in mined if m.error is None]
        if len(good) < 2:
            reasons = sorted({r.reason for r in refused})[:5]
            raise RuntimeError(
                f"PLD: only {len(good)} of {len(mined)} teacher calls returned a usable rule "
                f"({len(refused)} refused by the quality gates: {reasons}); first error: "
                f"{next((m.error for m in mined if m.error), 'none')}. Use a stronger teacher or more examples.")

        with usage.stage("cluster") as st:
            vectors = embed([m.rule for m in good])
            options = dict(n_clusters=self.n_clusters, max_clusters=self.max_clusters, eps=self.eps,
                           min_samples=self.min_samples, min_cluster_size=self.min_cluster_size, seed=self.seed)
            if self.cluster_by == "label":
                cluster_ids, report = cluster_by_label(vectors, [m.gold for m in good], self.cluster_method, **options)
            else:
                cluster_ids, report = cluster_vectors(vectors, self.cluster_method, **options)
            if report.n_clusters == 0:
                raise RuntimeError(
                    f"PLD: clustering ({report.method}, {report.params}) labelled all {report.n_rules} rules "
                    "as noise; lower min_samples / min_cluster_size, raise eps, or use cluster_method='kmeans'.")
            rules, st.failures, merge_refused = consolidate(
                good, cluster_ids, vectors, task, teacher_lm, gate=gate, inputs=inputs,
                n_phrasings=self.n_phrasings, num_threads=self.num_threads, progress=self.progress)
            refused += merge_refused

        baseline = None
        if self.evaluate_baseline:
            with usage.stage("baseline"):
                baseline = dev_score([])

        clustered = list(rules)
        with usage.stage("refine") as st:
            rules, history, best = refine_rules(
                rules, task, teacher=teacher_lm, train=refine_set,
                evaluate_train=lambda r: outcomes(r, refine_set), evaluate_dev=dev_score, embed=embed,
                gate=gate, inputs=inputs, max_iters=self.max_refine_iters, n_failures=self.n_failures,
                n_successes=self.n_successes, min_delta=self.min_delta, seed=self.seed, refusals=refused)
            st.failures = sum(h.note.startswith("teacher call failed") for h in history)

        def ruleset_of(rules, selection, searched) -> RuleSet:
            return RuleSet(
                predictor=task.predictor_name, label_field=task.label_field, labels=task.labels,
                base_instructions=base, rules=rules, selection=selection, clustering=report, history=history,
                refusals=refused, baseline_dev_macro_f1=baseline.macro_f1 if baseline else None,
                dev_macro_f1=best.macro_f1, baseline_dev_confusion=baseline.confusion if baseline else None,
                dev_confusion=best.confusion, search=searched, usage=[*usage.stages, usage.total()], seed=self.seed)

        selection, searched = None, None
        if self.search is not None:
            config = self._search_config()
            refined_ids = {r.id for r in rules}
            # The space holds the refined rules and any clustered rule that refinement replaced, seeded
            # with both known points: the clustered list in canonical order and refine's best.
            pool = rules + [r for r in clustered if r.id not in refined_ids]
            # The empty selection (zero-shot, already scored as the baseline) is a known point too: rules that
            # do not beat it on dev are not shipped.
            seeds = [[Selection(rule_id=r.id) for r in clustered], [Selection(rule_id=r.id) for r in rules], []]
            student_lm = task.predictor.lm or dspy.settings.lm
            count, how = token_counter(student_lm)
            calls = [0]

            def evaluate(active, examples):
                calls[0] += len(examples)
                return outcomes(active, examples)

            def render_system(active):
                sig = task.signature.with_instructions(render_instructions(base, active, task.label_field))
                return adapter.format_system_message(sig)

            with usage.stage("search"):
                try:
                    searched = search_rules(pool, dev=dev, labels=task.labels, evaluate=evaluate,
                                            render=render_system, count_tokens=count, token_counter=how,
                                            config=config, seeds=seeds, out_dir=out, seed=self.seed,
                                            call_counter=lambda: calls[0])
                except Exception as exc:
                    # Refinement's rules are paid for: keep them before reporting the failure.
                    kept = self._finish(student, task, adapter, out, ruleset_of(rules, None, None), mined, report,
                                        history, best, baseline)
                    where = f"{out / 'rules.json'}" if out else "PLD.rules_"
                    raise RuntimeError(
                        f"PLD: the search failed ({type(exc).__name__}: {exc}). Refinement's "
                        f"{len(kept.pld_rules.active_rules())} rules are kept in {where}. Fix the search settings "
                        "and rerun the same command: mining, clustering and refinement replay from the folder's "
                        "cache, so only the search runs again.") from exc
                # A fresh score of the chosen prompt (a cache hit), so accuracy and per-class F1 describe the
                # same prompt as macro F1 (a patched copy of refine's score did not).
                best = dev_score(texts_of(pool, searched.best.selection))
            rules, selection = pool, searched.best.selection

        final = ruleset_of(rules, selection, searched)
        if self.contribution:
            with usage.stage("contribution"):
                final = with_contributions(final, rule_contributions(
                    final, lambda texts: dev_score(texts).macro_f1, full=best.macro_f1))
            final.usage = [*usage.stages, usage.total()]
        return self._finish(student, task, adapter, out, final, mined, report, history, best, baseline)

    def _finish(self, student, task, adapter, out, ruleset, mined, report, history, best, baseline) -> dspy.Module:
        compiled = apply_rules(student, ruleset)
        predictor = dict(compiled.named_predictors())[task.predictor_name]
        ruleset.system_prompt = adapter.format_system_message(predictor.signature)

        self.mined_ = mined
        self.clusters_ = report
        self.history_ = history
        self.usage_ = ruleset.usage
        self.score_ = best
        self.baseline_score_ = baseline
        self.rules_ = ruleset
        compiled.pld_rules = ruleset
        if out:
            save_artifacts(compiled, ruleset, out)
        logger.info("PLD: dev macro F1 %s -> %.4f with %d rules",
                    f"{baseline.macro_f1:.4f}" if baseline else "?", best.macro_f1, len(ruleset.active_rules()))
        return compiled


def save_artifacts(program: dspy.Module, rules: RuleSet, out: Path, *, context: dict | None = None,
                   title: str = "PLD rule review") -> None:
    """Each file is written beside its target and moved into place: an interruption keeps the old one."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".program.{os.getpid()}.tmp.json"  # dspy picks the format from the suffix
    program.save(str(tmp))
    os.replace(tmp, out / "program.json")
    rules.save(out / "rules.json")
    atomic_write_text(out / "system_prompt.txt", rules.system_prompt + "\n")
    write_review(out, rules, context=context, title=title)
