"""Where a search answer's time goes, against what `evaluate` pays for the same prompt and items.

    python benchmarks/search_profile.py out/quickstart [--limit 100] [--rounds 2]

For one compile folder, the quickstart's student answers the dev items with the folder's chosen prompt two
ways, alternated `--rounds` times, with DSPy's cache off (every answer is computed):

- evaluate's way: the compiled program (rules.json applied), all items in one `run_student` pass, as
  `pld-optim evaluate` runs it;
- the search's way: `Scorer.outcomes(prompt, chunk)` per minibatch of the config's `minibatch_size`, as
  `PromptSearch.objective` scores a trial (a fresh program copy per chunk, its running F1 after each).

Each answer's time is split by timers wrapped around the engine's parts (threads included, which cProfile
would miss: dspy.Evaluate answers in worker threads): llama.cpp's forward passes (prefill), tokenizing,
the chat template, the lock wait before the engine runs, and what is outside the engine (DSPy's adapter,
cache and Evaluate, threads, program copies, Python). Prints a table per way and the ratio search /
evaluate per answer.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import dspy

from pld_optim import RuleSet, Scorer
from pld_optim.cli.common import lm_from_config
from pld_optim.cli.config import load_config
from pld_optim.datasets.tasks import build_program, load_split
from pld_optim.evaluation.scoring import run_student
from pld_optim.evaluation.task import resolve_task
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.lm.engine import LlamaCppEngine
from pld_optim.plan import apply_rules

SPENT: dict[str, float] = defaultdict(float)


def timed(owner, name: str, bucket: str):
    """Wrap owner.name so its seconds add to SPENT[bucket] (inclusive of what it calls)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            SPENT[bucket] += time.perf_counter() - start

    setattr(owner, name, wrapper)


class TimedLock:
    """The engine's lock, timing how long a call waits for it."""

    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        start = time.perf_counter()
        self.lock.acquire()
        SPENT["lock wait"] += time.perf_counter() - start
        return self

    def __exit__(self, *exc):
        self.lock.release()


def instrument(engine: LlamaCppEngine) -> None:
    from llama_cpp import Llama

    timed(Llama, "eval", "prefill (llama.cpp forward passes)")
    timed(Llama, "tokenize", "tokenize")
    timed(Llama, "create_completion", "generate (grammar path)")
    timed(LlamaCppEngine, "render", "chat template")
    timed(LlamaCppEngine, "complete", "engine, in all")
    engine._lock = TimedLock(engine._lock)


@contextmanager
def measured(rows: dict, way: str, n: int):
    before = dict(SPENT)
    start = time.perf_counter()
    yield
    wall = time.perf_counter() - start
    row = rows.setdefault(way, defaultdict(float))
    row["wall"] += wall
    row["answers"] += n
    for key, value in SPENT.items():
        row[key] += value - before.get(key, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--config", default="quickstart")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    cfg = load_config(args.config)
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    student = lm_from_config(cfg.student)
    program = build_program(cfg.data)
    task = resolve_task(program)
    rules = RuleSet.load(args.folder / "rules.json")
    prompt = rules.prompt()
    dev = load_split(cfg.data, "dev")[: args.limit]
    size = cfg.search.minibatch_size if cfg.search else 16
    scorer = Scorer(program, task, lm=student, adapter=LabelAdapter())
    compiled = apply_rules(build_program(cfg.data), rules)
    engine = student._engine_spec
    engine.llama  # noqa: B018 - load the model before anything is timed
    instrument(engine)
    rows: dict = {}
    with dspy.context(lm=student, adapter=LabelAdapter()):
        for _ in range(args.rounds):
            with measured(rows, "evaluate", len(dev)):
                run_student(compiled, dev, task)
            with measured(rows, "search", len(dev)):
                for k in range(0, len(dev), size):
                    scorer.outcomes(prompt, dev[k:k + size])
    keys = ["prefill (llama.cpp forward passes)", "generate (grammar path)", "tokenize", "chat template",
            "lock wait"]
    print(f"{args.folder}: {len(prompt.rules)} rules, {len(prompt.demos or [])} worked examples, {len(dev)} dev "
          f"items x {args.rounds} rounds, minibatches of {size}\n")
    print("| ms per answer | " + " | ".join(rows) + " |\n|---|" + "---|" * len(rows))
    per = {way: {k: 1000 * v / row["answers"] for k, v in row.items() if k != "answers"} for way, row in rows.items()}
    for key in ["wall", *keys]:
        print(f"| {key} | " + " | ".join(f"{per[way].get(key, 0.0):.1f}" for way in rows) + " |")
    outside = {way: per[way]["wall"] - per[way].get("engine, in all", 0.0) for way in rows}
    print("| outside the engine (DSPy's adapter, cache and Evaluate, threads, copies) | "
          + " | ".join(f"{outside[w]:.1f}" for w in rows) + " |")
    print(f"\nsearch / evaluate per answer: {per['search']['wall'] / per['evaluate']['wall']:.2f}x")


if __name__ == "__main__":
    main()
