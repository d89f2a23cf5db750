"""What `PLD.prepare` decides before the first LM call, as one frozen record: the program's task, the checked
splits and their overlap, the validated parameters, the output folder and the adapters; and `apply_rules`,
the check of a rule set against the program it is applied to.

Everything here is checked before the teacher is paid, so a bad row, setting, folder, storage or adapter is
an error that costs nothing (`pld-optim compile --dry-run` runs only this). The user's program is never
changed without a word: its own demos are kept (a warning says so), and a program PLD already compiled is
compiled again from its base instructions (a warning names the rules stripped).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dspy

from pld_optim.datasets.sampling import split_off
from pld_optim.evaluation.coverage import warn_coverage
from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.scoring import Score
from pld_optim.evaluation.task import Task, content_key, example_id, refuse_overlap, resolve_task, validate_examples
from pld_optim.params import PLDParams
from pld_optim.program import base_program, own_demos, with_rule_set
from pld_optim.records import Selection
from pld_optim.rules import Prompt, RuleSet, prompt_of
from pld_optim.run.cache import check_cache
from pld_optim.run.folder import RunFolder
from pld_optim.search.config import SearchConfig
from pld_optim.search.storage import check_storage
from pld_optim.search.study import Choice, check_budget
from pld_optim.stages.cluster import make_embedder
from pld_optim.stages.context import StageContext, rule_text_verdict, screen_demo
from pld_optim.stages.contribution import with_contributions
from pld_optim.stages.refine import ATTEMPTS as CORRECTION_ATTEMPTS

if TYPE_CHECKING:
    from pld_optim.run.usage import UsageLog
    from pld_optim.stages.cluster import ClusterResult
    from pld_optim.stages.contribution import Earned
    from pld_optim.stages.feedback import RefineResult
    from pld_optim.stages.merge import MergeResult
    from pld_optim.stages.mine import MineResult
    from pld_optim.stages.verify import VerifyResult

logger = logging.getLogger("pld_optim")
DEV_SHARE = 0.25  # of the trainset, hashed off as dev when no valset is given
# Zero-shot dev answers that check the student when neither the baseline nor a contrastive probe scores it.
STUDENT_CHECK = 8


@dataclass(frozen=True)
class CompilePlan:
    student: dspy.Module
    task: Task
    train: list[dspy.Example]
    dev: list[dspy.Example]
    params: PLDParams
    search: SearchConfig | None
    folder: RunFolder | None
    adapter: dspy.Adapter  # the student's: PLD's `adapter`, else the configured one, else LabelAdapter
    teacher_adapter: dspy.Adapter  # the teacher's: PLD's `adapter`, else LabelAdapter
    overlap: dict[str, int]  # 'train/dev' and repeats inside a split ('train/train'), as rules.json reports them

    def context(self, teacher: dspy.BaseLM, progress: bool = False) -> StageContext:
        """What every stage of this compile shares: the student's Scorer, the gates, the embedder."""
        if self.task.predictor.lm is None and dspy.settings.lm is None:
            raise ValueError("PLD: the student program has no LM; dspy.configure(lm=...) or predictor.set_lm(...)")
        p = self.params
        scorer = Scorer(self.student, self.task, adapter=self.adapter, num_threads=p.student_threads or p.num_threads,
                        progress=progress)
        return StageContext.build(self.task, self.train, teacher, scorer, p, make_embedder(p.embedder, p.seed),
                                  progress)

    def rng(self, purpose: str) -> random.Random:
        """One seeded stream per purpose, so a change in one stage's sampling leaves the others' alone."""
        return random.Random(f"{self.params.seed}:{purpose}")

    def rule_set(self, ctx: StageContext, usage: UsageLog, baseline: Score | None, mined: MineResult,
                 clusters: ClusterResult, merged: MergeResult, refined: RefineResult, verified: VerifyResult,
                 choice: Choice, earned: Earned | None = None) -> RuleSet:
        """The compile's one rule set, built once and complete: what rules.json, report.md and review.html show."""
        task, score = self.task, choice.score
        rules = with_contributions(choice.pool, earned.contributions if earned else None)
        selection = choice.selection if choice.selection is not None else [Selection(rule_id=r.id) for r in rules]
        teacher, student = ctx.teacher, ctx.scorer.student_lm
        header = {"student": getattr(student, "model", str(student)),
                  "teacher": getattr(teacher, "model", str(teacher)), "adapter": type(self.adapter).__name__,
                  "seed": self.params.seed,
                  "train / dev examples": f"{len(self.train)} / {len(self.dev)}",
                  "wall time": f"{sum(u.seconds for u in usage.stages):.0f} s in the stages"}
        return RuleSet.measured(
            predictor=task.predictor_name, label_field=task.label_field, labels=task.labels,
            base_instructions=task.signature.instructions, rules=rules, selection=choice.selection,
            system_prompt=ctx.scorer.system_prompt(prompt_of(rules, selection, task.label_field)),
            clustering=clusters.report, history=refined.history,
            refusals=(ctx.screened + mined.refusals + merged.refusals + refined.refusals + verified.refusals
                      + (earned.dropped if earned else [])),
            rules_beside_demos=earned.rules_beside_demos if earned else None,
            demos_beside_rules=earned.demos_beside_rules if earned else None,
            baseline_dev_macro_f1=baseline.macro_f1 if baseline else None, dev_macro_f1=score.macro_f1,
            baseline_dev_confusion=baseline.confusion if baseline else None, dev_confusion=score.confusion,
            search=choice.search, usage=[*usage.stages, usage.total()], data_overlap=self.overlap,
            seed=self.params.seed, context={**(self.folder.context if self.folder else {}), **header})


def plan_compile(student: dspy.Module, params: PLDParams, search: SearchConfig | None, trainset, valset,
                 out_dir, adapter: dspy.Adapter, teacher_adapter: dspy.Adapter) -> CompilePlan:
    """Every check that needs no LM call: the program (its own demos, an earlier compile's rule block), the
    data and its overlap, the folder and its cache, the study storage, that the student's adapter renders
    its prompt, and a token budget the prompt without rules already exceeds (the student's tokenizer)."""
    student = _base_of(student, params)
    task, train, dev, overlap = _splits(student, params, trainset, valset)
    folder = RunFolder.of(out_dir)
    if folder is not None:
        folder.check("out_dir")
        check_cache(folder.cache_dir)
    scorer = Scorer(student, task, adapter=adapter)
    try:
        scorer.prompt_text(Prompt(rules=["If the input says so, answer it."]))
    except Exception as exc:  # noqa: BLE001 - any adapter's failure is the same refusal, named
        raise ValueError(f"PLD: the adapter {type(adapter).__name__} cannot render the student's prompt "
                         f"({type(exc).__name__}: {exc}); configure one that renders a system message (ChatAdapter, "
                         "JSONAdapter, XMLAdapter, LabelAdapter) or pass PLD(adapter=...)") from None
    if search is not None:
        check_storage(search, folder.path if folder else None)
        if search.max_prompt_tokens and scorer.student_lm is not None:  # no LM: the compile names that first
            check_budget(scorer, search)
    return CompilePlan(student=student, task=task, train=train, dev=dev, params=params, search=search,
                       folder=folder, adapter=adapter, teacher_adapter=teacher_adapter, overlap=overlap)


def estimate_lm_calls(params: PLDParams, search: SearchConfig | None, n_train: int, n_dev: int,
                      n_labels: int) -> dict[str, int]:
    """Upper bounds on LM calls per stage, before any money is spent (cache hits are free)."""
    probe = min(n_train, params.probe_examples) if params.mining == "contrastive" else 0
    mined = min(params.max_train_examples or probe or n_train, probe or n_train)
    clusters = min((params.n_clusters or params.max_clusters) * (n_labels if params.cluster_by == "label" else 1),
                   mined)
    rounds, corrective = params.max_refine_iters, params.refinement == "corrective"
    return {
        "teacher: mine": mined,
        "teacher: merge clusters": clusters,
        "teacher: refine": rounds * (params.max_corrections * CORRECTION_ATTEMPTS if corrective else 1),
        # Without a baseline, two dev answers still check that the inputs reach the student.
        "student: baseline": (n_dev if params.evaluate_baseline else min(n_dev, 2) if probe
                              else min(n_dev, STUDENT_CHECK)),
        "student: probe": probe,
        "student: refine": n_dev + rounds * (min(params.refine_examples, n_train) + n_dev),
        "student: verify": (clusters + rounds * params.max_corrections) * params.verify_per_label * n_labels,
        "student: search": search.n_trials * n_dev + n_dev if search is not None else 0,
        "student: contribution": (clusters + rounds * params.max_corrections) * n_dev if params.contribution else 0,
    }


def _base_of(student: dspy.Module, params: PLDParams) -> dspy.Module:
    """The program PLD mines for: a rule block an earlier compile left in its instructions is stripped (the
    teacher's rules would all read as copies of the task), PLD's old worked examples are dropped; the
    program's own demos are kept, before PLD's."""
    task = resolve_task(student, params.labels, params.label_field)
    base, stripped = base_program(student, task.predictor_name, task.label_field)
    if stripped:
        logger.warning("PLD: predictor %r already holds a rule block from an earlier PLD compile; its %d rules are "
                       "stripped from the instructions and the compile starts from its base instructions",
                       task.predictor_name, len(stripped))
    kept = own_demos(dict(base.named_predictors())[task.predictor_name])
    if kept:
        logger.warning("PLD: predictor %r carries %d demo%s of its own; kept, before the worked examples PLD adds "
                       "(rules.json lists only PLD's)", task.predictor_name, len(kept), "" if len(kept) == 1 else "s")
    return base


def apply_rules(program: dspy.Module, rules: RuleSet) -> dspy.Module:
    """A copy of `program` whose predictor carries the rule set (e.g. an edited rules.json); no LM call.

    An edited rules.json bypasses every gate teacher text passes, so it is checked here against the program's
    task first, for every entry point (PLD.compile, `evaluate`, `pick`, `ablate`): each rule wording against
    the gates that need no train data, each worked example's label, fields and text. An error names the rule
    id and the field."""
    compiled = with_rule_set(program, rules)  # the predictor, label field and labels first
    predictor = dict(program.named_predictors())[rules.predictor]
    check_rules(rules, list(predictor.signature.input_fields))
    return compiled


def check_rules(rules: RuleSet, input_fields: list[str]) -> None:
    for rule in rules.rules:
        for i, text in enumerate(rule.variants()):
            verdict = rule_text_verdict(text, rules.labels, rules.base_instructions)
            if verdict:
                where = "text" if i == 0 else f"phrasings[{i - 1}]"
                raise ValueError(f"rules.json: rule {rule.id!r} ({where}) {verdict.reason} (gate {verdict.gate}): "
                                 f"{text[:120]!r}; fix or delete it")
        for j, demo in enumerate(rule.examples):
            where = f"rules.json: rule {rule.id!r} (examples[{j}], id {demo.id!r})"
            if demo.label not in rules.labels:
                raise ValueError(f"{where}: label {demo.label!r} is not one of {rules.labels}")
            if sorted(demo.inputs) != sorted(input_fields):
                raise ValueError(f"{where}: its inputs are {sorted(demo.inputs)}, the task's input fields "
                                 f"{sorted(input_fields)}; the adapter would drop or mangle it")
            found = screen_demo(demo.inputs)
            if found:
                raise ValueError(f"{where}: input {found[0]!r} {found[1].reason}; a worked example is shown to "
                                 "the student as it is")


def _splits(student: dspy.Module, params: PLDParams, trainset, valset) -> tuple[Task, list, list, dict]:
    """The program's task, the validated splits and their overlap by content."""
    task = resolve_task(student, params.labels, params.label_field)
    train = validate_examples(trainset, task, "train")
    classes = {str(ex[task.label_field]) for ex in train}
    if len(classes) < 2:
        raise ValueError(f"PLD: every train example has the label {classes.pop()!r}; rules that separate labels "
                         "need at least two classes in the trainset")
    if valset is None:
        train, dev = split_off(train, [example_id(ex, task.input_fields) for ex in train], DEV_SHARE, "pld-dev")
        logger.warning("PLD: no valset given; using a hashed 25%% of the trainset (%d examples) as dev", len(dev))
        if not dev or not train:
            raise ValueError("PLD: the trainset is too small to split off a dev set; pass valset=.")
    else:
        dev = validate_examples(valset, task, "dev")
    warn_coverage(train, dev, task)
    shared = refuse_overlap({"train": train, "dev": dev}, task.input_fields, "dev", allow=params.allow_overlap,
                            where="PLD")
    # Repeats inside one split are allowed (validate_examples warns), and reported next to the overlap.
    repeats = {f"{name}/{name}": len(rows) - len({content_key(ex, task.input_fields) for ex in rows})
               for name, rows in (("train", train), ("dev", dev))}
    return task, train, dev, {**shared, **{pair: n for pair, n in repeats.items() if n}}
