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


class PLDParams(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    labels: list[str] | None
    label_field: str | None
    mining: Literal["contrastive", "label"] = Field(description="contrastive: the student's mistakes; label: "
                                                                "the paper's label-conditioned examples")
    max_train_examples: Positive | None = Field(description="teacher calls for mining (None: every probed example)")
    probe_examples: Positive = Field(description="contrastive mining: train examples the student answers first")
    num_threads: Positive
    student_threads: Positive | None
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
    max_demos: NonNegative = Field(description="worked examples the search may show the student (0: rules only)")
    n_demo_candidates: NonNegative = Field(description="train examples per rule the search chooses demos from")
    max_invalid_share: Annotated[float, Field(gt=0, le=1)] = Field(
        description="stop when more of the zero-shot dev answers than this are invalid or failed")
    allow_overlap: bool = Field(description="go on (with a warning) when train and dev share examples")
    evaluate_baseline: bool
    contribution: bool
    seed: Annotated[int, Field(ge=0, lt=2**32)]


def validate(params: dict, where: str = "PLD") -> PLDParams:
    """Every problem at once, each naming the parameter and the value given."""
    try:
        return PLDParams.model_validate(params)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}"
                             + ("" if e["type"] == "missing" else f"={e.get('input')!r}") + f": {e['msg']}"
                             for e in exc.errors())
        raise ValueError(f"{where}: {problems}") from None
