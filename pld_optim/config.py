"""YAML run configs, validated by pydantic: an unknown key or a bad value is an error that names it."""

from __future__ import annotations

from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from typing import Literal

import dspy
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from pld_optim import data as D
from pld_optim.search import SearchConfig
from pld_optim.tracking import TrackingConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    dataset: Literal["stereoset", "contract_nli", "generic"]
    path: str | None = Field(None, description="file, folder or Hub name; 'package:quickstart' is the shipped slice")
    framing: Literal["bias_type", "stereotype"] = "bias_type"
    part: Literal["intrasentence", "intersentence", "both"] = "intrasentence"
    file: str = "dev.json"
    train_file: str | None = Field(None, description="contract_nli: a separate file for train (else hashed split)")
    context: Literal["full", "window"] = "window"
    max_context_tokens: int = Field(1024, gt=0)
    inputs: dict[str, str] | list[str] | None = None
    label: str = "label"
    labels: list[str] | None = None
    id_field: str | None = None
    instructions: str | None = None
    fractions: tuple[float, float, float] = D.DEFAULT_FRACTIONS
    train_limit: int | None = Field(None, gt=0)
    dev_limit: int | None = Field(None, gt=0)
    test_limit: int | None = Field(None, gt=0)

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, v):
        if abs(sum(v) - 1) > 1e-6 or min(v) < 0:
            raise ValueError(f"train/dev/test fractions must be non-negative and sum to 1, got {v}")
        return v


class ModelConfig(_Strict):
    model: str
    max_tokens: int = Field(512, gt=0)
    temperature: float = Field(0.0, ge=0)
    api_base: str | None = None
    threads: int = Field(2, gt=0)
    n_ctx: int | None = Field(None, gt=0, description="local/ models only: context window")


class PLDConfig(_Strict):
    """PLD's parameters, the one schema for YAML (`pld:`) and Python (`PLD(...)`, validated in `compile`)."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    max_train_examples: int | None = Field(None, gt=0)
    embedder: str | Callable = Field("tfidf", description="'tfidf', 'tfidf:<sentence-transformers model>' "
                                     "or (Python) a callable texts -> vectors")
    cluster_method: Literal["kmeans", "dbscan"] = "kmeans"
    n_clusters: int | None = Field(None, gt=0)
    cluster_by: Literal["label", "all"] = "label"
    max_clusters: int = Field(6, gt=0)
    eps: float = Field(0.4, gt=0)
    min_samples: int = Field(6, gt=0)
    min_cluster_size: int = Field(2, gt=0)
    n_phrasings: int = Field(2, ge=0)
    max_refine_iters: int = Field(2, ge=0)
    refine_examples: int = Field(64, gt=0)
    n_failures: int = Field(20, gt=0)
    n_successes: int = Field(20, ge=0)
    min_delta: float = Field(0.0, ge=0, description="refinement keeps a revision only if dev F1 rises by more")
    evaluate_baseline: bool = True
    contribution: bool = Field(True, description="after compile, score the final prompt with each rule left out "
                                                 "(one dev pass per active rule)")


class RunConfig(_Strict):
    name: str = "pld"
    data: DataConfig
    student: ModelConfig = ModelConfig(model="ollama_chat/gemma3:4b", max_tokens=32)
    teacher: ModelConfig
    pld: PLDConfig = PLDConfig()
    search: SearchConfig | None = Field(None, description="omit to skip the Optuna search stage")
    tracking: TrackingConfig | None = Field(None, description="MLflow tracking (the [mlflow] extra); "
                                                              "MLFLOW_TRACKING_URI also turns it on")
    seed: int = 0


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if str(path) == "quickstart":
        path = Path(str(files("pld_optim").joinpath("configs/quickstart.yaml")))
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))  # safe_load: a config never runs code
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    empty = [key for key, value in raw.items() if value is None]
    if empty:
        # `search:` with nothing under it reads as null, which would silently skip the search stage.
        raise ValueError(f"{path}: {', '.join(empty)}: the section is empty; write `{empty[0]}: {{}}` for its "
                         "defaults, or delete the line")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"{path}: invalid config: {problems}") from None


# --- from config to data and program ----------------------------------------------------------------

TASKS = {
    ("stereoset", "bias_type"): (["context", "sentence"], D.STEREOSET_BIAS_TYPES,
                                 "Classify which kind of social stereotype (bias type) the sentence expresses "
                                 "about the target in the context."),
    ("stereoset", "stereotype"): (["context", "sentence"], D.STEREOSET_STEREOTYPE,
                                  "Given the context, decide whether the sentence is a stereotype, an "
                                  "anti-stereotype, or unrelated to the context."),
    ("contract_nli", None): (["contract", "hypothesis"], D.CONTRACT_NLI_LABELS,
                             "Decide whether the non-disclosure agreement entails the hypothesis, contradicts "
                             "it, or does not mention it."),
}


def task_spec(cfg: DataConfig) -> tuple[list[str], list[str], str]:
    if cfg.dataset == "generic":
        if not cfg.inputs or not cfg.labels:
            raise ValueError("data.inputs and data.labels are required for dataset: generic")
        inputs = list(cfg.inputs) if isinstance(cfg.inputs, dict) else cfg.inputs
        return inputs, cfg.labels, cfg.instructions or f"Classify the input into one of: {', '.join(cfg.labels)}."
    inputs, labels, text = TASKS[(cfg.dataset, cfg.framing if cfg.dataset == "stereoset" else None)]
    return inputs, cfg.labels or labels, cfg.instructions or text


def build_program(cfg: DataConfig) -> dspy.Predict:
    inputs, labels, instructions = task_spec(cfg)
    fields = {name: (str, dspy.InputField()) for name in inputs}
    fields["label"] = (Literal[tuple(labels)], dspy.OutputField())
    return dspy.Predict(dspy.Signature(fields, instructions))


def load_split(cfg: DataConfig, split: str, path: str | None = None) -> list[dspy.Example]:
    """One split of the configured dataset; `path` overrides the config (e.g. a user's held-out file)."""
    limit = {"train": cfg.train_limit, "dev": cfg.dev_limit, "test": cfg.test_limit}.get(split)
    source = path or cfg.path  # each loader resolves `package:` itself
    if cfg.dataset == "stereoset":
        return D.load_stereoset(source, framing=cfg.framing, part=cfg.part, split=split,
                                fractions=cfg.fractions, limit=limit)
    if cfg.dataset == "contract_nli":
        file = cfg.train_file if (split == "train" and cfg.train_file and not path) else cfg.file
        hashed = None if (cfg.train_file and not path and split in ("train",)) else split
        return D.load_contract_nli(source, file=file, split=hashed, context=cfg.context,
                                   max_context_tokens=cfg.max_context_tokens, fractions=cfg.fractions, limit=limit)
    inputs, labels, _ = task_spec(cfg)
    return D.load_generic(source, inputs=cfg.inputs, label=cfg.label, id_field=cfg.id_field, labels=labels,
                          split=split, fractions=cfg.fractions, limit=limit)
