"""The search's settings: the YAML `search:` section and `PLD(search=...)`, checked by one schema."""

from __future__ import annotations

from typing import Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field

from pld_optim.params import NEUTRAL


class SearchConfig(BaseModel):
    """`neutral` fields change how trials are proposed, stopped or shown, not what a trial scores: a study
    may go on with another sampler, as Optuna allows (the fingerprint leaves them out)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    n_trials: int = Field(30, ge=1, description="total trials in the study, counting earlier runs",
                          json_schema_extra=NEUTRAL)
    timeout: float | None = Field(None, gt=0, description="seconds for this run", json_schema_extra=NEUTRAL)
    max_student_calls: int | None = Field(None, gt=0, description="stop starting trials past this many calls",
                                          json_schema_extra=NEUTRAL)
    minibatch_size: int = Field(16, gt=0)
    max_prompt_tokens: int | None = Field(None, gt=0, description="hard cap on the system prompt and demos")
    multi_objective: bool = False
    sampler: Literal["local", "tpe", "random"] | optuna.samplers.BaseSampler = Field(
        "tpe", description="tpe (measured best on real compiles: docs/results.md); local: edits of the best prompt "
                           "so far; random; or any Optuna sampler object (Python). multi_objective with a name uses "
                           "NSGA-II", json_schema_extra=NEUTRAL)
    pruner: Literal["incumbent", "median", "none"] | optuna.pruners.BasePruner = Field(
        "incumbent", description="incumbent: stop a trial the best one so far beats on the dev examples both "
                                 "answered (a paired bootstrap, pld_optim.search.pruner); median: Optuna's; or any "
                                 "Optuna pruner object (Python)", json_schema_extra=NEUTRAL)
    prune_confidence: float = Field(0.9, ge=0.5, lt=1, description="incumbent pruner: how sure it must be",
                                    json_schema_extra=NEUTRAL)
    n_startup_trials: int = Field(8, ge=0, json_schema_extra=NEUTRAL)
    storage: str | optuna.storages.BaseStorage | None = Field(
        None, description="Optuna storage URL or object; default sqlite in out_dir, else memory",
        json_schema_extra=NEUTRAL)
    study_name: str | None = Field(None, json_schema_extra=NEUTRAL)
    pick_max_tokens: int | None = Field(None, gt=0, description="multi-objective: best F1 within this many tokens",
                                        json_schema_extra=NEUTRAL)
    plots: bool = Field(True, json_schema_extra=NEUTRAL)

    def sampler_name(self) -> str:
        return self.sampler if isinstance(self.sampler, str) else type(self.sampler).__name__
