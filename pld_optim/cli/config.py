"""YAML run configs, validated by pydantic: an unknown key, a duplicated key or a bad value is an error
that names it. The `pld:` section is checked against PLD's own parameter schema, with PLD's defaults."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from pld_optim.datasets.tasks import DataConfig, build_program, load_split, task_spec  # noqa: F401 - re-exported
from pld_optim.files import FileFormatError, read_text
from pld_optim.params import PLDParams, set_elsewhere, validate
from pld_optim.run.tracking import TrackingConfig
from pld_optim.search.config import SearchConfig
from pld_optim.teleprompter import PLD

# PLD's arguments a `pld:` section may not set: those outside its schema (teacher, search, adapter, out_dir,
# progress: sections of their own or Python only) and those the config sets elsewhere (threads, seed).
NOT_IN_PLD_SECTION = (set(PLD.defaults()) - set(PLDParams.model_fields)) | set(set_elsewhere())


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelConfig(_Strict):
    model: str
    max_tokens: int = Field(512, gt=0)
    temperature: float = Field(0.0, ge=0)
    api_base: str | None = None
    threads: int = Field(2, gt=0)
    n_ctx: int | None = Field(None, gt=0, description="local/ models only: context window")
    timeout: float | None = Field(None, gt=0, allow_inf_nan=False,
                                  description="server models: seconds a call waits for the server to send anything "
                                              "(default: pld_optim.lm.factory.DEFAULT_TIMEOUT)")
    retries: int | None = Field(None, ge=0, le=10,
                                description="server models: tries after the first, on a timeout or another "
                                            "transient error (default: pld_optim.lm.factory.DEFAULT_RETRIES)")

    @model_validator(mode="after")
    def _server_settings(self) -> ModelConfig:
        """A local/ model runs in-process: there is no server to wait for, so a timeout would be a promise that
        nothing keeps (its calls end after max_tokens)."""
        given = [name for name in ("timeout", "retries") if getattr(self, name) is not None]
        if given and self.model.startswith("local/"):
            raise ValueError(f"{given[0]}: only for server models; {self.model} runs in-process, with no server to "
                             "wait for (remove the line)")
        return self


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

    _pld: PLDParams | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _pld_section(self) -> RunConfig:
        """The `pld:` section validated once, with PLD's defaults, when the config is read."""
        elsewhere = sorted(set(self.pld) & NOT_IN_PLD_SECTION)
        if elsewhere:
            raise ValueError(f"pld.{elsewhere[0]} is not set in the pld: section (teacher:, student:, search: and "
                             "seed: are sections of their own)")
        defaults = {k: v for k, v in PLD.defaults().items() if k in PLDParams.model_fields}
        self._pld = validate({**defaults, **self.pld, "seed": self.seed}, where="pld")
        return self

    def pld_checked(self) -> PLDParams:
        """The `pld:` section as PLD reads it (`allow_overlap: "no"` is False here, though a non-empty string)."""
        return self._pld

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
