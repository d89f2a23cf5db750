"""Experiment tracking in MLflow (the `[mlflow]` extra): DSPy users track every other optimizer there.

On when a tracking URI is configured: the YAML's `tracking:` section, or MLFLOW_TRACKING_URI. A compile logs
its parameters, per-stage spend and the dev macro F1 each stage reached as metrics, the run folder's files
(rules.json, system_prompt.txt, review.html, report.md, program.json) as artifacts, and the compiled
program through MLflow's DSPy flavour where it can be pickled (an in-process llama.cpp engine cannot; a
tag then says why, and program.json is there). `compare` logs one parent run with a child run per
optimizer. Nothing here is imported, and nothing changes, unless tracking is on.
"""

from __future__ import annotations

import logging
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pld_optim.rules import RuleSet
from pld_optim.run.folder import ARTIFACTS

logger = logging.getLogger(__name__)



class TrackingConfig(BaseModel):
    """The YAML `tracking:` section."""

    model_config = ConfigDict(extra="forbid")
    uri: str | None = Field(None, description="e.g. sqlite:///mlflow.db or http://host:5000; default: "
                                              "MLFLOW_TRACKING_URI")
    experiment: str = "pld-optim"
    log_model: bool = Field(True, description="also log the program with MLflow's DSPy flavour, where it can")


class Tracker:
    """One tracking destination; `from_config` returns None when tracking is off."""

    def __init__(self, uri: str, experiment: str = "pld-optim", log_model: bool = True):
        self.uri = uri
        self.experiment = experiment
        self.log_model = log_model

    @classmethod
    def from_config(cls, cfg: TrackingConfig | None) -> Tracker | None:
        """Checked before any LM call. An explicit `tracking:` section without MLflow is an error; a
        MLFLOW_TRACKING_URI left in the environment without the extra is only a warning."""
        env = os.environ.get("MLFLOW_TRACKING_URI")
        uri = (cfg.uri if cfg else None) or env
        if uri is None:
            if cfg is not None:
                raise ValueError("tracking: no uri; set tracking.uri (e.g. sqlite:///mlflow.db) or "
                                 "MLFLOW_TRACKING_URI, or delete the section")
            return None
        try:
            import mlflow  # noqa: F401
        except ImportError:
            if cfg is None:
                logger.warning("MLFLOW_TRACKING_URI is set but MLflow is not installed; not tracking "
                               "(pip install 'pld-optim[mlflow]')")
                return None
            raise ImportError("tracking: is configured but MLflow is not installed: "
                              "pip install 'pld-optim[mlflow]'") from None
        cfg = cfg or TrackingConfig()
        return cls(uri, cfg.experiment, cfg.log_model)

    def check(self, dry_run: bool = False) -> None:
        """Reach the store before any LM call: a dead tracking server is found now, not after the compile.
        A dry run creates nothing: a SQLite store that does not exist yet is only checked for a folder it
        can be created in."""
        if self.uri.startswith("sqlite:"):
            from sqlalchemy.engine import make_url

            path = Path(make_url(self.uri).database or "")
            if dry_run and not path.exists():
                # SQLite creates the file, never its folder: the folder itself must exist and be writable.
                parent = path.resolve().parent
                if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                    reason = "does not exist" if not parent.exists() else "is not a writable folder"
                    raise ValueError(f"tracking: the MLflow store {self.uri} cannot be created ({parent} {reason}); "
                                     "create the folder, or fix tracking.uri / MLFLOW_TRACKING_URI")
                return
        saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
        os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"})
        try:
            self._client().search_experiments(max_results=1)
        except Exception as exc:  # noqa: BLE001 - any failure to reach the store is the same error to the user
            raise ValueError(f"tracking: cannot reach the MLflow store {self.uri} ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); start the server, fix tracking.uri / MLFLOW_TRACKING_URI, "
                             "or remove them to run without tracking") from None
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def _run(self, client, run_name: str, parent: str | None = None) -> str:
        """The client API throughout, with explicit run ids: MLflow's fluent API keeps a process-wide active
        run and model that would tie this run's metrics to whatever was logged before."""
        exp = client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(self.experiment)
        tags = {"mlflow.parentRunId": parent} if parent else None
        return client.create_run(exp_id, run_name=run_name, tags=tags).info.run_id

    @staticmethod
    def _log(client, run_id: str, params: dict | None = None, metrics: dict | None = None,
             tags: dict | None = None, steps: list[tuple[str, float, int]] = ()) -> None:
        import time

        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        points = [Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()]
        points += [Metric(k, float(v), now, step) for k, v, step in steps]
        client.log_batch(run_id, metrics=points, params=[Param(k, v) for k, v in _flat(params or {}).items()],
                         tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()])

    def log_compile(self, rules: RuleSet, out: Path, *, run_name: str, params: dict[str, Any],
                    program=None, student_lm=None) -> str:
        client = self._client()
        run_id = self._run(client, run_name)
        with self._failing(client, run_id):
            self._log_compile(client, run_id, rules, out, params, program, student_lm)
        return run_id

    @contextmanager
    def _failing(self, client, run_id: str):
        """A run that fails mid-logging is marked FAILED (not left RUNNING) and the error names the store."""
        try:
            yield
        except Exception as exc:
            client.set_terminated(run_id, status="FAILED")
            raise RuntimeError(f"MLflow: logging run {run_id} to {self.uri} failed ({type(exc).__name__}: "
                               f"{str(exc)[:300]}); the output folder is complete") from exc
        client.set_terminated(run_id)

    def _log_compile(self, client, run_id, rules, out, params, program, student_lm) -> None:
        steps = [("refine.dev_macro_f1", h.dev_macro_f1, step) for step, h in enumerate(rules.history)
                 if h.dev_macro_f1 is not None]
        if rules.search:
            steps += [("search.trial_dev_macro_f1", f1, trial) for trial, f1, _ in rules.search.history
                      if f1 is not None]
        self._log(client, run_id, params, compile_metrics(rules), steps=steps,
                  tags={"pld.rules": len(rules.active_rules()), "pld.out_dir": out})
        for name in ARTIFACTS:
            if (out / name).exists():
                client.log_artifact(run_id, str(out / name))
        if self.log_model and program is not None:
            client.set_tag(run_id, "pld.dspy_flavour", self._log_program(run_id, program, student_lm))

    def _log_program(self, run_id: str, program, student_lm) -> str:
        """MLflow's DSPy flavour pickles the program with dspy.settings, so the student LM goes with it (an
        embedded llama.cpp engine pickles as its settings and loads its GGUF again when used)."""
        import dspy
        import mlflow

        requirements = [f"dspy=={dspy.__version__}", "pld-optim"]
        previous = mlflow.get_tracking_uri()
        try:
            mlflow.set_tracking_uri(self.uri)
            with mlflow.start_run(run_id=run_id), dspy.context(lm=student_lm or dspy.settings.lm):
                mlflow.dspy.log_model(program, name="program", pip_requirements=requirements,
                                      use_dspy_model_save=True)
        except Exception as exc:  # noqa: BLE001 - the artifacts are logged; the flavour is a convenience
            reason = f"{type(exc).__name__}: {exc}"[:300]
            logger.warning("MLflow: the program was not logged with the DSPy flavour (%s); program.json is "
                           "logged as an artifact", reason)
            return f"not logged: {reason}"
        finally:
            mlflow.set_tracking_uri(previous)
        return "logged as model 'program'"

    def log_compare(self, rows: list[dict], context: dict, out: Path, *, run_name: str) -> str:
        client = self._client()
        parent = self._run(client, run_name)
        with self._failing(client, parent):
            self._log(client, parent, context)
            for name in ("compare.md", "compare.html"):
                if (out / name).exists():
                    client.log_artifact(parent, str(out / name))
            for row in rows:
                child = self._run(client, row["optimizer"], parent=parent)
                with self._failing(client, child):
                    self._log(client, child, {"optimizer": row["optimizer"], "seeds": row["seeds"]},
                              compare_metrics(row),
                              tags={"error": str(row["errors"][0])[:500]} if row["errors"] else None)
        return parent


def compile_metrics(rules: RuleSet) -> dict[str, float]:
    """Dev macro F1 after each stage that has one, and each stage's spend."""
    metrics: dict[str, float] = {}
    if rules.baseline_dev_macro_f1 is not None:
        metrics["dev_macro_f1.baseline"] = rules.baseline_dev_macro_f1
    scored = [h for h in rules.history if h.dev_macro_f1 is not None]
    if scored:
        metrics["dev_macro_f1.cluster"] = scored[0].dev_macro_f1
        metrics["dev_macro_f1.refine"] = max(h.dev_macro_f1 for h in scored if h.accepted or h is scored[0])
    if rules.search:
        metrics["dev_macro_f1.search"] = rules.search.best.macro_f1
        metrics["prompt_tokens"] = rules.search.best.prompt_tokens
        metrics["search.trials"] = rules.search.n_trials
    if rules.dev_macro_f1 is not None:
        metrics["dev_macro_f1"] = rules.dev_macro_f1
    metrics["rules"] = len(rules.active_rules())
    for r in rules.rules:
        if r.contribution is not None:
            metrics[_key(f"contribution.{r.id}")] = r.contribution
    for u in rules.usage:
        for key in ("lm_calls", "cache_hits", "prompt_tokens", "completion_tokens", "seconds", "failures"):
            metrics[f"{u.stage}.{key}"] = float(getattr(u, key))
    return metrics


def compare_metrics(row: dict) -> dict[str, float]:
    metrics = {"test_macro_f1": row["macro_f1"], "test_macro_f1.ci_low": row["ci"][0],
               "test_macro_f1.ci_high": row["ci"][1], "accuracy": row["accuracy"], "latency_s": row["latency_s"],
               "output_tokens": row["output_tokens"], "prompt_tokens": row["prompt_tokens"],
               "compile.lm_calls": row["lm_calls"], "compile.billed_calls": row["billed_calls"],
               "compile.tokens": row["compile_tokens"],
               "compile.seconds": row["compile_seconds"]}
    metrics.update({_key(f"f1.{label}"): value for label, value in row["per_class_f1"].items()})
    return {k: float(v) for k, v in metrics.items()}


def _key(name: str) -> str:
    """MLflow keys allow letters, digits, _ - . / and space; a label may hold anything else."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", name)


def _flat(params: dict, prefix: str = "") -> dict[str, str]:
    """MLflow params are flat strings of at most 6,000 characters."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, f"{name}."))
        else:
            out[_key(name)] = str(value)[:6000]
    return out
