"""Per-stage accounting of LM calls, cache hits, tokens and seconds, through DSPy's own hooks.

Not from `dspy.clients.base_lm.GLOBAL_HISTORY`: DSPy caps that list at 10,000 entries, so a paper-scale
compile (tens of thousands of student calls) was miscounted exactly when it mattered. Instead each stage
installs, for its duration:

- a DSPy callback (`on_lm_start`), which sees every LM call, cached or not, on every thread that
  `dspy.Evaluate` or an optimizer starts;
- a usage tracker (`settings.usage_tracker`), which DSPy hands the usage of every call that was not a
  cache hit.

Tallies nest, so whatever wraps a compile keeps counting: DSPy has one usage-tracker slot, and a stage that
took it from an outer tally (another stage, `pld-optim compare`'s, a user's `dspy.track_usage()` or
`dspy.settings.usage_tracker`) would hide every token from it. A stage therefore forwards each usage it is
handed to the tracker that held the slot when it began, at once, from whichever thread made the call (DSPy's
own nested `track_usage` rolls a child up into its parent at exit; a stage accepts that roll-up too). Its
callback is added to the ones already installed, so outer callbacks (MLflow's, an outer stage's) see every
call as well. Every tally only adds to counters, so memory does not grow with the number of calls.
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
ROLE = "pld_usage_role"  # the attribute `with_role` sets on an LM
# A tracker that is not a stage (DSPy's UsageTracker, a user's own) promises no thread safety; forwarded
# usage arrives from every worker thread at once.
_FOREIGN = threading.Lock()


def with_role(lm: dspy.BaseLM, role: str) -> dspy.BaseLM:
    """A copy of `lm` (same engine, settings and cache keys) whose calls every stage counts under
    "<model> (<role>)": a student and a teacher that are one model string are still told apart. The role
    survives the copies optimizers make (`lm.copy(...)` is a shallow copy)."""
    copy = lm.copy()
    setattr(copy, ROLE, role)
    return copy


def usage_key(lm) -> str:
    """The `StageUsage.by_model` key of an LM's calls."""
    model = str(getattr(lm, "model", type(lm).__name__))
    role = getattr(lm, ROLE, None)
    return f"{model} ({role})" if role else model


class _Tally(BaseCallback):
    """A callback and a usage tracker in one; thread-safe, constant memory. `parent` is the usage tracker
    that was installed when the stage began: every usage this tally is handed is handed on to it."""

    def __init__(self, parent=None):
        self._lock = threading.Lock()
        self.parent = parent
        self.calls: dict[str, int] = {}
        self.billed = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def on_lm_start(self, call_id, instance, inputs):
        key = usage_key(instance)
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1

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
        if isinstance(self.parent, _Tally):
            self.parent.add_usage(lm, usage)
        elif self.parent is not None:
            with _FOREIGN:
                self.parent.add_usage(lm, usage)

    @property
    def usage_data(self) -> _RollUp:
        """Where DSPy's `track_usage`, opened inside a stage, rolls its entries up at exit
        (`parent.usage_data[lm].extend(entries)`): each entry is counted as it arrives, none is kept."""
        return _RollUp(self)

    def __deepcopy__(self, memo):
        # dspy's parallel executor deep-copies the tracker into each worker thread (per-prediction usage);
        # one tally for the stage needs every thread to add to the same object.
        return self


class _RollUp:
    """`usage_data` (and `usage_data[lm]`) as far as DSPy's roll-up uses it: `append` and `extend`."""

    def __init__(self, tally: _Tally, lm: str = ""):
        self._tally, self._lm = tally, lm

    def __getitem__(self, lm: str) -> _RollUp:
        return _RollUp(self._tally, lm)

    def append(self, entry: dict) -> None:
        self._tally.add_usage(self._lm, entry)

    def extend(self, entries) -> None:
        for entry in entries:
            self.append(entry)


class UsageLog:
    def __init__(self):
        self.stages: list[StageUsage] = []

    @contextmanager
    def stage(self, name: str, scorer=None):
        """Count what the block spends; `failures` may be set on the yielded record. With the compile's
        scorer, the student answers it scored that were invalid (or failed) are counted too. Whatever tally
        was open around the block (an outer stage, DSPy's `track_usage`) counts the same calls and tokens."""
        tally = _Tally(parent=dspy.settings.usage_tracker)
        record = StageUsage(stage=name)
        invalid_before = scorer.invalid if scorer is not None else 0
        start = time.perf_counter()
        try:
            with dspy.context(callbacks=[*dspy.settings.callbacks, tally], usage_tracker=tally):
                yield record
        finally:
            record.seconds = round(time.perf_counter() - start, 3)
            _fill(record, tally)
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


def _fill(record: StageUsage, tally: _Tally) -> None:
    with tally._lock:  # a worker thread the block did not wait for may still be adding
        record.lm_calls = sum(tally.calls.values())
        record.cache_hits = max(0, record.lm_calls - tally.billed - tally.errors)
        record.prompt_tokens = tally.prompt_tokens
        record.completion_tokens = tally.completion_tokens
        record.by_model = dict(tally.calls)
