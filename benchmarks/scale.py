"""A full compile at the paper's scale with scripted teacher and student: what the pipeline itself costs.

StereoSet's paper run mines 7,190 train examples and scores 1,037 dev examples per evaluation. Here a
synthetic 4-label task of that size (each example carries one cue word, 40 per label) runs mine ->
cluster -> refine -> search with scripted LMs that answer in microseconds, so what remains is PLD's and
DSPy's own overhead. The search runs enough trials for more than 20,000 student calls. Printed:

- per stage: wall seconds, seconds inside the LMs, the overhead (the rest), LM calls;
- the number of clusters found on 7,190 mined rules (per label);
- whether the usage PLD records equals the scripted LMs' own call counts (DSPy's history keeps only
  the last 10,000 calls, so this used to be wrong past that);
- peak memory (max RSS) of this run and of a run with twice the search trials, which must stay flat;
  with --trace-memory also the Python memory still allocated after the compile (tracemalloc).

    python benchmarks/scale.py [--trials 20] [--train 7190] [--dev 1037] [--trace-memory]

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import resource
import subprocess
import sys
import time
import tracemalloc
from contextlib import contextmanager
from typing import Literal

import dspy
import optuna

from pld_optim import PLD
from pld_optim.run.usage import UsageLog
from pld_optim.testing import ScriptedEngine, cue_teacher, rule_follower

LABELS = ("gender", "profession", "race", "religion")
CUES = {label: [f"{label[:3]}{k}" for k in range(40)] for label in LABELS}


class Classify(dspy.Signature):
    """Classify the bias type of the sentence."""

    sentence: str = dspy.InputField()
    label: Literal[LABELS] = dspy.OutputField()


teacher = cue_teacher(CUES, phrasing=lambda cues, label: f"If the sentence mentions {' or '.join(cues[:3])}, "
                                                           f"answer {label}.")
student = rule_follower(default="race")


class TimedEngine(ScriptedEngine):
    """Counts the seconds spent inside the LM, so the rest is the pipeline's own overhead."""

    def __init__(self, respond):
        super().__init__(respond, keep_requests=False)
        self.inside = 0.0

    def complete(self, request):
        start = time.perf_counter()
        try:
            return super().complete(request)
        finally:
            self.inside += time.perf_counter() - start


def examples(n: int, offset: int) -> list[dspy.Example]:
    out = []
    for i in range(offset, offset + n):
        label = LABELS[i % 4]
        cue = CUES[label][(i // 4) % 40]
        out.append(dspy.Example(id=f"s{i}", sentence=f"Item {i}: the {cue} was mentioned here.", label=label)
                   .with_inputs("sentence"))
    return out


def run(n_train: int, n_dev: int, trials: int, trace: bool = False) -> dict:
    engines = {"teacher": TimedEngine(teacher), "student": TimedEngine(student)}
    lms = {k: dspy.LM(f"local/{k}", engine=e, cache=False) for k, e in engines.items()}
    inside: dict[str, float] = {}
    original = UsageLog.stage

    @contextmanager
    def timed(self, name, scorer=None):
        before = sum(e.inside for e in engines.values())
        with original(self, name, scorer) as record:
            yield record
        inside[name] = sum(e.inside for e in engines.values()) - before

    UsageLog.stage = timed
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    with dspy.context(lm=lms["student"]):
        # The paper's pipeline, whose scale this measures: every train example mined label-conditioned (PLD's
        # default contrastive mining would mine at most `probe_examples`), the whole-list rewrite, rules only.
        pld = PLD(teacher=lms["teacher"], num_threads=1, student_threads=1, max_refine_iters=1, refine_examples=64,
                  mining="label", refinement="rewrite", max_demos=0,
                  search={"n_trials": trials, "pruner": "none", "minibatch_size": n_dev, "plots": False}, seed=0)
        pld.compile(dspy.Predict(Classify), trainset=examples(n_train, 0), valset=examples(n_dev, 10_000_000))
    wall = time.perf_counter() - start
    UsageLog.stage = original
    retained = peak = None
    if trace:  # what stays allocated after the compile (caches and histories), and the traced high-water mark
        gc.collect()
        retained, peak = (round(x / 2**20, 1) for x in tracemalloc.get_traced_memory())
        tracemalloc.stop()
    usage = {u.stage: u for u in pld.usage_}
    stages = {name: {"seconds": round(u.seconds, 1), "inside_lm_s": round(inside.get(name, 0.0), 1),
                     "overhead_s": round(u.seconds - inside.get(name, 0.0), 1), "lm_calls": u.lm_calls}
              for name, u in usage.items() if name != "total"}
    actual = sum(e.calls for e in engines.values())
    return {"train": n_train, "dev": n_dev, "search_trials": trials, "wall_s": round(wall, 1), "stages": stages,
            "lm_calls_recorded": usage["total"].lm_calls, "lm_calls_actual": actual,
            "usage_exact": usage["total"].lm_calls == actual,
            "student_calls": engines["student"].calls, "teacher_calls": engines["teacher"].calls,
            "clusters": pld.clusters_.n_clusters, "clusters_per_label": pld.clusters_.per_label,
            "dev_macro_f1": round(pld.score_.macro_f1, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "traced_retained_mb": retained, "traced_peak_mb": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=7190)
    parser.add_argument("--dev", type=int, default=1037)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--one", action="store_true", help="a single run (the doubled run is started this way)")
    parser.add_argument("--trace-memory", action="store_true",
                        help="also measure Python allocations with tracemalloc (about 2x slower)")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.one:
        print(json.dumps(run(args.train, args.dev, args.trials, args.trace_memory)))
        return
    runs = []
    for trials in (args.trials, 2 * args.trials):  # separate processes: peak RSS is per process
        out = subprocess.run([sys.executable, __file__, "--one", "--train", str(args.train), "--dev", str(args.dev),
                              "--trials", str(trials), *(["--trace-memory"] if args.trace_memory else [])],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in runs:
        print(f"\n{r['train']} train, {r['dev']} dev, {r['search_trials']} search trials: {r['student_calls']} student "
              f"+ {r['teacher_calls']} teacher calls in {r['wall_s']} s; peak RSS {r['peak_rss_mb']} MB; "
              f"{r['clusters']} clusters {r['clusters_per_label']}; usage recorded {r['lm_calls_recorded']} = "
              f"actual {r['lm_calls_actual']}: {r['usage_exact']}; dev macro F1 {r['dev_macro_f1']}"
              + (f"; traced Python memory retained {r['traced_retained_mb']} MB, peak {r['traced_peak_mb']} MB"
                 if r["traced_retained_mb"] is not None else ""))
        print("| stage | seconds | inside the LMs | overhead | LM calls | overhead per call (ms) |")
        print("|---|---|---|---|---|---|")
        for name, s in r["stages"].items():
            per = 1000 * s["overhead_s"] / s["lm_calls"] if s["lm_calls"] else 0
            print(f"| {name} | {s['seconds']} | {s['inside_lm_s']} | {s['overhead_s']} | {s['lm_calls']} | {per:.2f} |")
    growth = runs[1]["peak_rss_mb"] / runs[0]["peak_rss_mb"]
    print(f"\npeak RSS with {runs[1]['student_calls']} vs {runs[0]['student_calls']} student calls: x{growth:.2f}")
    print(json.dumps({"runs": runs, "rss_growth_when_calls_double": round(growth, 3)}))


if __name__ == "__main__":
    main()
