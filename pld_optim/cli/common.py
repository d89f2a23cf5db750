"""What the commands share: models from a config, the run folder's DSPy cache, preflight checks."""

from __future__ import annotations

import argparse
from pathlib import Path

import dspy

from pld_optim.cli.config import ModelConfig, RunConfig
from pld_optim.evaluation.scoring import Outcome, Score, check_valid
from pld_optim.lm.factory import make_lm
from pld_optim.lm.ollama import preflight_all
from pld_optim.run.cache import check_cache


def lm_from_config(cfg: ModelConfig, *, max_tokens: int | None = None, **extra) -> dspy.BaseLM:
    """An LM from a config's `student:` / `teacher:` section; its `timeout:` and `retries:` bound a server's
    calls (make_lm's defaults when left out)."""
    engine = {"n_ctx": cfg.n_ctx} if cfg.n_ctx and cfg.model.startswith("local/") else {}
    return make_lm(cfg.model, max_tokens=max_tokens or cfg.max_tokens, temperature=cfg.temperature,
                   api_base=cfg.api_base, timeout=cfg.timeout, retries=cfg.retries, **engine, **extra)


def preflight(cfg: RunConfig, *, teacher: bool = True, pull: bool = False) -> None:
    """Ollama reachable and the models pulled, before any teacher call (a no-op for other models)."""
    models = [cfg.student] + ([cfg.teacher] if teacher else [])
    preflight_all([m.model for m in models], {m.model: m.api_base for m in models}, pull=pull)


def check_answers(outcomes: list[Outcome], labels: list[str], where: str, cfg: RunConfig) -> Score:
    """Every command that scores the student stops, with the cause, when most answers are no valid label
    (the config's pld.max_invalid_share, as compile uses it)."""
    return check_valid(outcomes, labels, where, cfg.pld_checked().max_invalid_share)


def use_disk_cache(folder: Path) -> None:
    """The cache lives with the run: rerunning the same command after an interruption replays finished LM
    calls for free and continues where it stopped."""
    check_cache(folder)
    dspy.configure_cache(enable_disk_cache=True, disk_cache_dir=str(folder))


def run_context(cfg: RunConfig, config: str, seed: int | None = None) -> dict:
    """The header of report.md and review.html: which config, models and seed made the folder."""
    return {"config": config, "student": cfg.student.model, "teacher": cfg.teacher.model,
            "seed": cfg.seed if seed is None else seed}


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2**32 - 1, got {value}")
    return value


def seeds(text: str) -> list[int]:
    return [seed(part.strip()) for part in text.split(",") if part.strip()] or [0]
