"""What each stage hands on: plain pydantic records, also the parts of rules.json a reviewer reads.

Every stage returns one record with the items it made, the teacher texts the quality gates refused and
the count of calls that failed, so refusals and failures travel one way: up, inside the record.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Record(BaseModel):
    # An unknown key in an edited rules.json is a typo, not data to drop silently.
    model_config = ConfigDict(extra="forbid")


class Refusal(Record):
    """A teacher text a quality gate kept out of the prompt, with the gate and its reason
    (pld_optim/stages/gates.py)."""

    stage: str = Field(description="mine, merge or refine")
    source: str = Field(description="the example id, cluster or refine iteration it came from")
    text: str
    gate: str = Field("unknown", description="the gate that refused it (e.g. placeholder, fragment); 'unknown' in "
                                             "rules.json files written before gates were named (format 1 and 2)")
    reason: str


class StageResult(Record):
    """Common to every stage's record."""

    refusals: list[Refusal] = Field(default_factory=list)
    failures: int = Field(0, description="teacher calls that gave nothing usable (errors, unparseable answers)")


class MinedRule(Record):
    """Stage 1 output for one train example: a failed call sets `error`, a refused rule `refusal`, instead
    of failing the run."""

    example_id: str
    gold: str
    rationale: str = ""
    rule: str = ""
    error: str | None = Field(None, description="the teacher call gave nothing usable (an error, no rule)")
    refusal: Refusal | None = Field(None, description="the rule was written but a quality gate refused it")
    inputs: str = Field("", description="the example as the teacher saw it, so provenance reads without the data")
    predicted: str | None = Field(None, description="contrastive mining: the student's zero-shot answer it corrects")

    @property
    def ok(self) -> bool:
        """A rule to cluster and to keep on resume; a failed or refused example is mined again."""
        return self.error is None and self.refusal is None

    @model_validator(mode="before")
    @classmethod
    def _refused_flag(cls, data):
        """mined.jsonl is a resume checkpoint: lines written before refusals were records say `refused: true`
        with the gate's reason in `error`."""
        if not isinstance(data, dict) or "refused" not in data:
            return data
        data = dict(data)
        if data.pop("refused"):
            data["refusal"] = {"stage": "mine", "source": data.get("example_id", ""), "text": data.get("rule", ""),
                               "reason": data.pop("error", None) or "refused"}
        return data


class ClusterReport(Record):
    method: str
    params: dict = Field(default_factory=dict)
    n_rules: int
    n_clusters: int
    n_noise: int
    noise_share: float
    cluster_sizes: list[int] = Field(default_factory=list)
    per_label: dict[str, int] = Field(default_factory=dict, description="clusters per gold label")


class RefineIteration(Record):
    iteration: int
    rules: list[str]
    dev_macro_f1: float | None = Field(None, description="None: not scored on dev here (corrective refinement "
                                                         "leaves that to the search)")
    n_failures: int = 0
    n_successes: int = 0
    accepted: bool = True
    note: str = ""


class StageUsage(Record):
    stage: str
    lm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    failures: int = 0
    invalid: int = Field(0, description="student answers outside the label set (or failed calls) it scored")
    by_model: dict[str, int] = Field(default_factory=dict, description="LM calls per model string")


class Selection(Record):
    """One rule in the chosen prompt: which rule, which of its wordings, which of its examples as demos."""

    rule_id: str
    variant: int = 0
    demos: list[int] = Field(default_factory=list, description="indices into the rule's `examples` shown to the "
                                                               "student as worked examples")


class Candidate(Record):
    selection: list[Selection]
    macro_f1: float
    prompt_tokens: int
    trial: int


class SearchResult(Record):
    best: Candidate
    pareto: list[Candidate] = Field(default_factory=list, description="multi-objective: F1 vs prompt tokens")
    n_trials: int
    n_pruned: int
    n_repaired: int = Field(0, description="trials whose lowest-ranked rules were dropped to fit the budget")
    token_counter: str
    student_calls: int = Field(0, description="student calls of every trial in the study, earlier runs included")
    n_candidates: int = Field(0, description="rules the search chose from")
    n_wordings: int = Field(0, description="wordings of those rules, all together")
    n_demo_candidates: int = Field(0, description="train examples it could show as demos")
    sampler: str = ""
    history: list[tuple[int, float | None, int]] = Field(
        default_factory=list, description="per trial in order: number, dev macro F1 (None if pruned), student calls")
