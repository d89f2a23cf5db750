"""The record of one compile while it runs: what `PLD.prepare` checked and built, and each stage's result.

Everything here is decided before the first LM call, so a bad row, setting, folder or storage is an error
that costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import random
from dataclasses import dataclass, field

import dspy

from pld_optim.evaluation.scorer import Scorer
from pld_optim.evaluation.scoring import Outcome, Score, check_valid
from pld_optim.evaluation.task import Task, content_key, example_id, overlap, resolve_task, validate_examples
from pld_optim.params import PLDParams
from pld_optim.run.folder import RunFolder, check_cache, data_digest
from pld_optim.run.usage import UsageLog
from pld_optim.search.config import SearchConfig
from pld_optim.search.storage import check_storage
from pld_optim.search.study import check_budget
from pld_optim.stages.context import StageContext
from pld_optim.stages.feedback import RefineResult
from pld_optim.stages.merge import MergeResult
from pld_optim.stages.mine import MineResult
from pld_optim.stages.refine import ATTEMPTS as CORRECTION_ATTEMPTS

logger = logging.getLogger("pld_optim")
# Zero-shot dev answers that check the student when neither the baseline nor a contrastive probe scores it.
STUDENT_CHECK = 8


@dataclass
class CompileRun:
    student: dspy.Module
    task: Task
    train: list[dspy.Example]
    dev: list[dspy.Example]
    params: PLDParams
    search: SearchConfig | None
    folder: RunFolder | None
    adapter: dspy.Adapter
    overlap: dict[str, int]
    ctx: StageContext | None = None  # built once the teacher is known
    usage: UsageLog = field(default_factory=UsageLog)
    baseline: Score | None = None
    mined: MineResult | None = None
    clusters: object | None = None
    merged: MergeResult | None = None
    refined: RefineResult | None = None
    score: Score | None = None  # the shipped prompt on dev

    def header(self, rules) -> dict:
        """What heads report.md and review.html, besides what the caller's RunFolder adds (its config)."""
        teacher, student = self.ctx.teacher, self.scorer.student_lm
        return {"student": getattr(student, "model", str(student)), "teacher": getattr(teacher, "model", str(teacher)),
                "seed": self.params.seed, "train / dev examples": f"{len(self.train)} / {len(self.dev)}",
                "wall time": f"{sum(u.seconds for u in self.usage.stages):.0f} s in the stages"}

    @property
    def scorer(self) -> Scorer:
        return self.ctx.scorer

    def rng(self, purpose: str) -> random.Random:
        """One seeded stream per purpose, so a change in one stage's sampling leaves the others' alone."""
        return random.Random(f"{self.params.seed}:{purpose}")


def split_dev(examples: list[dspy.Example], task: Task, share: float = 0.25) -> tuple[list, list]:
    """Deterministic hash split, so the same data always gives the same dev set."""
    def bucket(ex):
        # Salted: the loaders cut train/dev/test by sha1(id) too, and the same hash would carve nearly all or
        # none of a loader's split off as dev.
        key = f"pld-dev:{example_id(ex, task.input_fields)}"
        return int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    return [ex for ex in examples if bucket(ex) >= share], [ex for ex in examples if bucket(ex) < share]


def stratified(examples: list, label_field: str, n: int | None, rng: random.Random) -> list:
    """At most n examples, labels taken in turn from seeded shuffles: a small budget still reaches every
    label (each label's rules are clustered and merged on their own)."""
    if not n or len(examples) <= n:
        return list(examples)
    pools: dict[str, list] = {}
    for ex in rng.sample(examples, len(examples)):
        pools.setdefault(str(ex[label_field]), []).append(ex)
    out: list = []
    while len(out) < n:
        for pool in pools.values():
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


def check_data(student: dspy.Module, params: PLDParams, trainset, valset) -> tuple[Task, list, list, dict]:
    """The program's task, the validated splits and their overlap by content; no LM call."""
    task = resolve_task(student, params.labels, params.label_field)
    train = validate_examples(trainset, task, "train")
    classes = {str(ex[task.label_field]) for ex in train}
    if len(classes) < 2:
        raise ValueError(f"PLD: every train example has the label {classes.pop()!r}; rules that separate labels "
                         "need at least two classes in the trainset")
    if valset is None:
        train, dev = split_dev(train, task)
        logger.warning("PLD: no valset given; using a hashed 25%% of the trainset (%d examples) as dev", len(dev))
        if not dev or not train:
            raise ValueError("PLD: the trainset is too small to split off a dev set; pass valset=.")
    else:
        dev = validate_examples(valset, task, "dev")
    shared = overlap({"train": train, "dev": dev}, task.input_fields)
    if shared and not params.allow_overlap:
        raise ValueError(f"PLD: {shared['train/dev']} dev examples have the same inputs as train examples (compared "
                         "by content, not id): dev would score what the rules were mined from. Remove them from one "
                         "split, or pass allow_overlap=True (YAML: pld.allow_overlap: true) to go on anyway.")
    if shared:
        logger.warning("PLD: %d dev examples share their inputs with train examples (allow_overlap)",
                       shared["train/dev"])
    # Repeats inside one split are allowed (validate_examples warns), and reported next to the overlap.
    repeats = {f"{name}/{name}": len(rows) - len({content_key(ex, task.input_fields) for ex in rows})
               for name, rows in (("train", train), ("dev", dev))}
    return task, train, dev, {**shared, **{pair: n for pair, n in repeats.items() if n}}


def prepare_run(student: dspy.Module, params: PLDParams, search: SearchConfig | None, trainset, valset,
                out_dir, adapter: dspy.Adapter) -> CompileRun:
    """`PLD.prepare`: every check that needs no LM call, so a setting a dry run passes cannot fail after the
    teacher was paid: the data and its overlap, the folder and its cache, the study storage, and a token
    budget the prompt without rules already exceeds (counted with the student's tokenizer, when it has one)."""
    task, train, dev, shared = check_data(student, params, trainset, valset)
    folder = out_folder(out_dir)
    if folder is not None:
        folder.check("out_dir")
        check_cache(folder.cache_dir)
    if search is not None:
        check_storage(search, folder.path if folder else None)
        scorer = Scorer(student, task, adapter=adapter)
        if search.max_prompt_tokens and scorer.student_lm is not None:  # no LM: the compile names that first
            check_budget(scorer, search)
    return CompileRun(student=student, task=task, train=train, dev=dev, params=params, search=search,
                      folder=folder, adapter=adapter, overlap=shared)


def fingerprint(run: CompileRun, teacher: dspy.BaseLM, student_lm, names: list[str], embedder) -> dict:
    """What an output folder's results depend on: resuming requires the same."""
    params = {name: getattr(run.params, name) for name in names}
    params["embedder"] = embedder if isinstance(embedder, str) else type(embedder).__name__
    if run.search is not None:
        params["search"] = run.search.model_dump(
            # How trials are proposed or stopped does not change what a trial scores: a study may go on with
            # another sampler, as Optuna allows.
            exclude={"n_trials", "timeout", "max_student_calls", "storage", "plots", "study_name", "sampler",
                     "pruner", "n_startup_trials", "pick_max_tokens"})
    ids = [example_id(ex, run.task.input_fields) for ex in run.train], [
        example_id(ex, run.task.input_fields) for ex in run.dev]
    return {"data": {"train": data_digest(run.train, ids[0], run.task.label_field),
                     "dev": data_digest(run.dev, ids[1], run.task.label_field)},
            "teacher": _lm_identity(teacher), "student": _lm_identity(student_lm), "params": params,
            "seed": run.params.seed}


def _lm_identity(lm) -> dict:
    kwargs = getattr(lm, "kwargs", {}) or {}
    return {"model": getattr(lm, "model", str(lm)), "temperature": kwargs.get("temperature"),
            "max_tokens": kwargs.get("max_tokens") or kwargs.get("max_completion_tokens")}


def out_folder(out_dir) -> RunFolder | None:
    """The folder `out_dir` names, given as it came: Path('') is '.', so an empty string must reach
    RunFolder's own check (the one the CLI's --out meets) before any conversion."""
    if out_dir is None:
        return None
    return out_dir if isinstance(out_dir, RunFolder) else RunFolder(out_dir)


def estimate_calls(params: PLDParams, search: SearchConfig | None, n_train: int, n_dev: int,
                   n_labels: int) -> dict[str, int]:
    """Upper bounds on LM calls per stage, printed before any money is spent (cache hits are free)."""
    probe = min(n_train, params.probe_examples) if params.mining == "contrastive" else 0
    mine = min(params.max_train_examples or probe or n_train, probe or n_train)
    clusters = min((params.n_clusters or params.max_clusters) * (n_labels if params.cluster_by == "label" else 1), mine)
    refine_train = min(params.refine_examples, n_train)
    corrective = params.refinement == "corrective"
    rounds = params.max_refine_iters
    return {
        "teacher: mine": mine,
        "teacher: merge clusters": clusters,
        "teacher: refine": rounds * (params.max_corrections * CORRECTION_ATTEMPTS if corrective else 1),
        "student: baseline": n_dev if params.evaluate_baseline else 0 if probe else min(n_dev, STUDENT_CHECK),
        "student: probe": probe,
        "student: refine": n_dev + rounds * (refine_train + n_dev),
        "student: search": search.n_trials * n_dev + n_dev if search is not None else 0,
        "student: contribution": (clusters + rounds * params.max_corrections) * n_dev if params.contribution else 0,
    }


def check_student(outcomes: list[Outcome], labels: list[str], split: str, max_invalid_share: float) -> Score:
    """A student that rarely gives a valid answer makes every later number meaningless: stop now, with the
    first failed call's own error (a missing key, an unknown model), as every command does."""
    return check_valid(outcomes, labels, f"PLD: the zero-shot student on {split}", max_invalid_share)


def search_failed(folder: RunFolder | None, exc: Exception, kept_rules: int) -> RuntimeError:
    """What a failed search leaves and what a rerun costs: only a folder's cache replays the earlier stages."""
    where = folder.path / "rules.json" if folder else "PLD.rules_"
    rerun = ("rerun the same command: mining, clustering and refinement replay from the folder's cache, so only "
             "the search runs again" if folder else "compile again; with no out_dir there is no folder to resume "
             "from, so mining, clustering and refinement run again (free only where DSPy's own disk cache still "
             "holds their calls): pass out_dir= to resume instead")
    return RuntimeError(f"PLD: the search failed ({type(exc).__name__}: {exc}). Refinement's {kept_rules} rules are "
                        f"kept in {where}. Fix the search settings and {rerun}.")
