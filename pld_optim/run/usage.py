"""Per-stage accounting of LM calls, cache hits, tokens and seconds, through DSPy's own hooks.

Not from `dspy.clients.base_lm.GLOBAL_HISTORY`: DSPy caps that list at 10,000 entries, so a paper-scale
compile (tens of thousands of student calls) was miscounted exactly when it mattered. Instead each stage
installs, for its duration:

- a DSPy callback (`on_lm_start`), which sees every LM call, cached or not, on every thread that
  `dspy.Evaluate` or an optimizer starts;
- a usage tracker (`settings.usage_tracker`), which DSPy hands the usage of every call that was not a
  cache hit.

Both only add to counters, so memory does not grow with the number of calls.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager

import dspy
from dspy.utils.callback import BaseCallback

from pld_optim.records import StageUsage

logger = logging.getLogger("pld_optim")


class _Tally(BaseCallback):
    """A callback and a usage tracker in one; thread-safe, constant memory."""

    def __init__(self):
        self._lock = threading.Lock()
        self.calls: dict[str, int] = {}
        self.billed = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def on_lm_start(self, call_id, instance, inputs):
        model = str(getattr(instance, "model", type(instance).__name__))
        with self._lock:
            self.calls[model] = self.calls.get(model, 0) + 1

    def on_lm_end(self, call_id, outputs, exception=None):
        if exception is not None:
            with self._lock:
                self.errors += 1

    # The usage-tracker protocol DSPy calls for every call that was not served from its cache.
    def add_usage(self, lm: str, usage: dict) -> None:
        with self._lock:
            self.billed += 1
            self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.completion_tokens += int(usage.get("completion_tokens") or 0)

    def __deepcopy__(self, memo):
        # dspy's parallel executor deep-copies the tracker into each worker thread (per-prediction usage);
        # one tally for the stage needs every thread to add to the same object.
        return self


class UsageLog:
    def __init__(self):
        self.stages: list[StageUsage] = []

    @contextmanager
    def stage(self, name: str, scorer=None):
        """Count what the block spends; `failures` may be set on the yielded record. With the compile's
        scorer, the student answers it scored that were invalid (or failed) are counted too."""
        tally = _Tally()
        record = StageUsage(stage=name)
        invalid_before = scorer.invalid if scorer is not None else 0
        start = time.perf_counter()
        try:
            with dspy.context(callbacks=[*dspy.settings.callbacks, tally], usage_tracker=tally):
                yield record
        finally:
            record.seconds = round(time.perf_counter() - start, 3)
            record.lm_calls = sum(tally.calls.values())
            record.cache_hits = max(0, record.lm_calls - tally.billed - tally.errors)
            record.prompt_tokens = tally.prompt_tokens
            record.completion_tokens = tally.completion_tokens
            record.by_model = dict(tally.calls)
            if scorer is not None:
                record.invalid = scorer.invalid - invalid_before
            self.stages.append(record)
            logger.info(
                "stage %-12s %4d LM calls (%d cached), %d prompt + %d completion tokens, %.1fs, %d failures, "
                "%d invalid answers", name, record.lm_calls, record.cache_hits, record.prompt_tokens,
                record.completion_tokens, record.seconds, record.failures, record.invalid)

    def total(self) -> StageUsage:
        total = StageUsage(stage="total")
        for s in self.stages:
            for key in ("lm_calls", "cache_hits", "prompt_tokens", "completion_tokens", "seconds", "failures",
                        "invalid"):
                setattr(total, key, getattr(total, key) + getattr(s, key))
            for model, n in s.by_model.items():
                total.by_model[model] = total.by_model.get(model, 0) + n
        total.seconds = round(total.seconds, 3)
        return total
