"""YAML run configs, validated by pydantic: an unknown key, a duplicated key or a bad value is an error
that names it. The `pld:` section is checked against PLD's own parameter schema, with PLD's defaults."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path
from typing import Literal

import dspy
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pld_optim import datasets as D
from pld_optim.datasets.common import DEFAULT_FRACTIONS
from pld_optim.files import FileFormatError, read_text
from pld_optim.params import PLDParams, validate
from pld_optim.run.tracking import TrackingConfig
from pld_optim.search.config import SearchConfig
from pld_optim.teleprompter import PLD

# Set from elsewhere in the config (teacher:, student:, seed:) or only from Python.
NOT_IN_PLD_SECTION = {"teacher", "search", "adapter", "out_dir", "progress", "seed", "num_threads",
                      "student_threads"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
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


class ModelConfig(_Strict):
    model: str
    max_tokens: int = Field(512, gt=0)
    temperature: float = Field(0.0, ge=0)
    api_base: str | None = None
    threads: int = Field(2, gt=0)
    n_ctx: int | None = Field(None, gt=0, description="local/ models only: context window")


class RunConfig(_Strict):
    name: str = "pld"
    data: DataConfig
    student: ModelConfig = ModelConfig(model="ollama_chat/gemma3:4b", max_tokens=32)
    teacher: ModelConfig
    pld: dict = Field(default_factory=dict, description="PLD's parameters (pld_optim.params.PLDParams)")
    search: SearchConfig | None = Field(None, description="omit to skip the Optuna search stage")
    tracking: TrackingConfig | None = Field(None, description="MLflow tracking (the [mlflow] extra); "
                                                              "MLFLOW_TRACKING_URI also turns it on")
    seed: int = Field(0, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _pld_section(self) -> RunConfig:
        elsewhere = sorted(set(self.pld) & NOT_IN_PLD_SECTION)
        if elsewhere:
            raise ValueError(f"pld.{elsewhere[0]} is not set in the pld: section (teacher:, student:, search: and "
                             "seed: are sections of their own)")
        defaults = {k: v for k, v in PLD.defaults().items() if k in PLDParams.model_fields}
        validate({**defaults, **self.pld, "seed": self.seed}, where="pld")
        return self

    def pld_checked(self) -> PLDParams:
        """The `pld:` section validated, with PLD's defaults: its values as PLD reads them (`allow_overlap:
        "no"` is False here, though a non-empty string)."""
        defaults = {k: v for k, v in PLD.defaults().items() if k in PLDParams.model_fields}
        return validate({**defaults, **self.pld, "seed": self.seed}, where="pld")

    def pld_params(self) -> dict:
        """The `pld:` section with PLD's defaults for what it leaves out (the schema's view of it)."""
        return {**{k: v for k, v in PLD.defaults().items() if k not in NOT_IN_PLD_SECTION}, **self.pld}


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load (a config never runs code) that refuses a key given twice: YAML keeps the last silently,
    so the config would mean something other than it says. For the same reason it reads scalars as YAML
    1.2 does, not PyYAML's YAML 1.1: only true/false are booleans (`labels: [yes, no]` are two labels, not
    True and False), and 010 or 1:30 are not the octal 8 or the base-60 90."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"the key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


_BOOL, _INT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:int"
_UniqueKeyLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag not in (_BOOL, _INT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_UniqueKeyLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_UniqueKeyLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+|[-+]?0o[0-7_]+)$"), list("-+0123456789"))


def load_config(path: str | Path) -> RunConfig:
    path = Path(path)
    if str(path) == "quickstart":
        path = Path(str(files("pld_optim").joinpath("configs/quickstart.yaml")))
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        raw = yaml.load(read_text(path), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except FileFormatError as exc:
        raise ValueError(str(exc)) from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    empty = [key for key, value in raw.items() if value is None]
    if empty:
        # `search:` with nothing under it reads as null, which would silently skip the search stage.
        raise ValueError(f"{path}: {', '.join(map(str, empty))}: the section is empty; write `{empty[0]}: {{}}` for "
                         "its defaults, or delete the line")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        # A model validator's error (the pld: section's) has no location and reads "Value error, pld: ...".
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"]
                             else e["msg"].removeprefix("Value error, ") for e in exc.errors())
        raise ValueError(f"{path}: invalid config: {problems}") from None


# --- from config to data and program ----------------------------------------------------------------

TASKS = {
    ("stereoset", "bias_type"): (["context", "sentence"], D.stereoset.BIAS_TYPES,
                                 "Classify which kind of social stereotype (bias type) the sentence expresses "
                                 "about the target in the context."),
    ("stereoset", "stereotype"): (["context", "sentence"], D.stereoset.STEREOTYPE_LABELS,
                                  "Given the context, decide whether the sentence is a stereotype, an "
                                  "anti-stereotype, or unrelated to the context."),
    ("contract_nli", None): (["contract", "hypothesis"], D.contract_nli.LABELS,
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
        hashed = None if (cfg.train_file and not path and split == "train") else split
        return D.load_contract_nli(source, file=file, split=hashed, context=cfg.context,
                                   max_context_tokens=cfg.max_context_tokens, fractions=cfg.fractions, limit=limit)
    inputs, labels, _ = task_spec(cfg)
    return D.load_generic(source, inputs=cfg.inputs, label=cfg.label, id_field=cfg.id_field, labels=labels,
                          split=split, fractions=cfg.fractions, limit=limit)
