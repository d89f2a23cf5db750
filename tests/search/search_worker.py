"""One search worker process for test_workers.py: the scripted search of test_search.py on a shared study.
Run as a script, so it puts this folder (test_search) and tests/ (conftest, which test_search imports) on
sys.path itself."""

import json
import logging
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).parent), str(Path(__file__).parents[1])]
logging.disable(logging.WARNING)

import optuna  # noqa: E402
from test_search import BAD_START, harness  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
storage, seed, n_trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Each worker samples differently (its own seed); the study is shared.
engine, _, search = harness(None, seed=seed, n_trials=n_trials, storage=storage, plots=False, pruner="none")
result, _ = search().run([BAD_START])
print(json.dumps({"best": result.best.macro_f1, "calls": engine.calls, "study_calls": result.student_calls}))
