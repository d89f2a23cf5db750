"""Per-stage accounting of LM calls, cache hits, tokens and seconds, read from DSPy's own history.

DSPy records every LM call (cached or not) in `dspy.clients.base_lm.GLOBAL_HISTORY`; a cache hit is
recorded with empty usage. Reading that list, rather than wrapping LMs, keeps every path (rollout copies,
adapters' fallbacks, optimizers we compare against) counted the same way.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager

from dspy.clients import base_lm

from pld_optim.artifact import StageUsage

logger = logging.getLogger("pld_optim")


class UsageLog:
    def __init__(self):
        self.stages: list[StageUsage] = []

    @contextmanager
    def stage(self, name: str):
        """Count what the block spends; `failures` may be set on the yielded record."""
        history = base_lm.GLOBAL_HISTORY
        marker = history[-1] if history else None
        record = StageUsage(stage=name)
        start = time.perf_counter()
        try:
            yield record
        finally:
            record.seconds = round(time.perf_counter() - start, 3)
            _tally(record, _entries_after(history, marker))
            self.stages.append(record)
            logger.info(
                "stage %-11s %4d LM calls (%d cached), %d prompt + %d completion tokens, %.1fs, %d failures",
                name, record.lm_calls, record.cache_hits, record.prompt_tokens,
                record.completion_tokens, record.seconds, record.failures,
            )

    def total(self) -> StageUsage:
        total = StageUsage(stage="total")
        for s in self.stages:
            for key in ("lm_calls", "cache_hits", "prompt_tokens", "completion_tokens", "seconds", "failures"):
                setattr(total, key, getattr(total, key) + getattr(s, key))
            for model, n in s.by_model.items():
                total.by_model[model] = total.by_model.get(model, 0) + n
        total.seconds = round(total.seconds, 3)
        return total


def _entries_after(history: list, marker) -> list:
    if marker is None:
        return list(history)
    for i in range(len(history) - 1, -1, -1):
        if history[i] is marker:
            return history[i + 1:]
    return list(history)  # the marker was trimmed away by DSPy's history cap: everything left is new


def _tally(record: StageUsage, entries: list) -> None:
    for entry in entries:
        usage = entry.get("usage") or {}
        response = entry.get("response")
        cached = getattr(response, "cache_hit", False) or not usage
        record.lm_calls += 1
        record.cache_hits += int(cached)
        if not cached:
            record.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            record.completion_tokens += int(usage.get("completion_tokens") or 0)
        model = str(entry.get("model"))
        record.by_model[model] = record.by_model.get(model, 0) + 1
