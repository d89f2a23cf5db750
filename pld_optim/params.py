"""What each PLD parameter may be: the one schema that Python (`PLD(...)`) and YAML (`pld:`) are checked
against, once, before any LM call.

The defaults live in one place, the signature of `PLD.__init__`, as in scikit-learn; this schema holds only
the constraints, so the two cannot drift apart (every field here is required, and `PLD.defaults()` fills
what a YAML section leaves out).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

Positive = Annotated[int, Field(gt=0)]
NonNegative = Annotated[int, Field(ge=0)]
# Field metadata, read by `neutral_names` and `set_elsewhere` instead of hand-kept lists of names:
# `neutral`: the value changes how a compile runs or reports, not what it finds, so a folder resumes with
# another value (the fingerprint leaves it out); `yaml`: where a YAML config sets it, if not in `pld:`.
NEUTRAL = {"neutral": True}


class PLDParams(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    labels: list[str] | None
    label_field: str | None
    mining: Literal["contrastive", "label"] = Field(description="contrastive: the student's mistakes; label: "
                                                                "the paper's label-conditioned examples")
    max_train_examples: Positive | None = Field(description="teacher calls for mining (None: every probed example)")
    probe_examples: Positive = Field(description="contrastive mining: train examples the student answers first")
    num_threads: Positive = Field(json_schema_extra={**NEUTRAL, "yaml": "teacher.threads"})
    student_threads: Positive | None = Field(json_schema_extra={**NEUTRAL, "yaml": "student.threads"})
    embedder: str | Callable
    cluster_method: Literal["kmeans", "dbscan"]
    cluster_by: Literal["label", "all"]
    n_clusters: Positive | None
    max_clusters: Positive
    eps: Annotated[float, Field(gt=0)]
    min_samples: Positive
    min_cluster_size: Positive
    n_phrasings: NonNegative
    refinement: Literal["corrective", "rewrite"] = Field(description="corrective: one rule per frequent "
                                                                     "confusion; rewrite: the paper's list rewrite")
    max_refine_iters: NonNegative
    refine_examples: Positive
    n_failures: Positive
    n_successes: NonNegative
    max_corrections: Positive
    min_delta: Annotated[float, Field(ge=0)]
    verify_per_label: NonNegative = Field(description="train items per label each rule's condition is checked on "
                                                      "(0: no data check)")
    min_precision: float = Field(ge=0, le=1, description="refuse a rule whose condition holds for fewer items of "
                                                         "its label than this share of the items it holds for")
    max_demos: NonNegative = Field(description="worked examples the search may show the student (0: rules only)")
    n_demo_candidates: NonNegative = Field(description="train examples per rule the search chooses demos from")
    max_invalid_share: Annotated[float, Field(gt=0, le=1)] = Field(
        description="stop when more of the zero-shot dev answers than this are invalid or failed",
        json_schema_extra=NEUTRAL)
    allow_overlap: bool = Field(description="go on (with a warning) when train and dev share examples",
                                json_schema_extra=NEUTRAL)
    evaluate_baseline: bool = Field(json_schema_extra=NEUTRAL)
    contribution: bool = Field(json_schema_extra=NEUTRAL)
    seed: Annotated[int, Field(ge=0, lt=2**32)] = Field(json_schema_extra={"yaml": "seed"})

    @staticmethod
    def fields_of(pld) -> dict:
        """PLD's stored constructor arguments, named one by one so a reader can follow each to its stage."""
        return dict(
            labels=pld.labels, label_field=pld.label_field, mining=pld.mining,
            max_train_examples=pld.max_train_examples, probe_examples=pld.probe_examples, num_threads=pld.num_threads,
            student_threads=pld.student_threads,
            embedder=pld.embedder, cluster_method=pld.cluster_method, cluster_by=pld.cluster_by,
            n_clusters=pld.n_clusters, max_clusters=pld.max_clusters, eps=pld.eps, min_samples=pld.min_samples,
            min_cluster_size=pld.min_cluster_size, n_phrasings=pld.n_phrasings, refinement=pld.refinement,
            max_refine_iters=pld.max_refine_iters, refine_examples=pld.refine_examples, n_failures=pld.n_failures,
            n_successes=pld.n_successes, max_corrections=pld.max_corrections, min_delta=pld.min_delta,
            verify_per_label=pld.verify_per_label, min_precision=pld.min_precision,
            max_demos=pld.max_demos, n_demo_candidates=pld.n_demo_candidates,
            max_invalid_share=pld.max_invalid_share, allow_overlap=pld.allow_overlap,
            evaluate_baseline=pld.evaluate_baseline, contribution=pld.contribution,
            seed=pld.seed)


def _meta(model: type[BaseModel], key: str) -> dict[str, object]:
    return {name: (f.json_schema_extra or {}).get(key) for name, f in model.model_fields.items()
            if (f.json_schema_extra or {}).get(key) is not None}


def neutral_names(model: type[BaseModel]) -> set[str]:
    """Fields of `model` (PLDParams, SearchConfig) marked `neutral`: left out of a run's fingerprint."""
    return set(_meta(model, "neutral"))


def set_elsewhere() -> dict[str, str]:
    """PLD parameters a YAML config sets outside its `pld:` section, with where."""
    return {name: str(where) for name, where in _meta(PLDParams, "yaml").items()}


def validate(params: dict, where: str = "PLD") -> PLDParams:
    """Every problem at once, each naming the parameter and the value given."""
    try:
        return PLDParams.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}"
                             + ("" if e["type"] == "missing" else f"={e.get('input')!r}") + f": {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"{where}: {problems}") from None
