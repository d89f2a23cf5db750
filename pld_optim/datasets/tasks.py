"""The tasks pld-optim knows, from a config's `data:` section to a program and its splits: the one home of
each benchmark's input fields, labels and task text (the CLI, the benchmarks and the tests read them here)."""

from __future__ import annotations

from typing import Literal

import dspy
from pydantic import BaseModel, ConfigDict, Field, field_validator

from pld_optim.datasets import contract_nli, stereoset
from pld_optim.datasets.common import DEFAULT_FRACTIONS
from pld_optim.datasets.contract_nli import load_contract_nli
from pld_optim.datasets.generic import load_generic
from pld_optim.datasets.stereoset import load_stereoset


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: Literal["stereoset", "contract_nli", "generic"]
    path: str | None = Field(None, description="file, folder or Hub name; 'package:NAME' is a file shipped in "
                                               "pld_optim/data")
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
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    train_limit: int | None = Field(None, gt=0)
    dev_limit: int | None = Field(None, gt=0)
    test_limit: int | None = Field(None, gt=0)

    @field_validator("fractions")
    @classmethod
    def _sum_to_one(cls, v):
        if abs(sum(v) - 1) > 1e-6 or min(v) < 0:
            raise ValueError(f"train/dev/test fractions must be non-negative and sum to 1, got {v}")
        return v


TASKS = {
    ("stereoset", "bias_type"): (["context", "sentence"], stereoset.BIAS_TYPES,
                                 "Classify which kind of social stereotype (bias type) the sentence expresses "
                                 "about the target in the context."),
    ("stereoset", "stereotype"): (["context", "sentence"], stereoset.STEREOTYPE_LABELS,
                                  "Given the context, decide whether the sentence is a stereotype, an "
                                  "anti-stereotype, or unrelated to the context."),
    ("contract_nli", None): (["contract", "hypothesis"], contract_nli.LABELS,
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
        return load_stereoset(source, framing=cfg.framing, part=cfg.part, split=split,
                                fractions=cfg.fractions, limit=limit)
    if cfg.dataset == "contract_nli":
        file = cfg.train_file if (split == "train" and cfg.train_file and not path) else cfg.file
        hashed = None if (cfg.train_file and not path and split == "train") else split
        return load_contract_nli(source, file=file, split=hashed, context=cfg.context,
                                   max_context_tokens=cfg.max_context_tokens, fractions=cfg.fractions, limit=limit)
    inputs, labels, _ = task_spec(cfg)
    return load_generic(source, inputs=cfg.inputs, label=cfg.label, id_field=cfg.id_field, labels=labels,
                          split=split, fractions=cfg.fractions, limit=limit)
