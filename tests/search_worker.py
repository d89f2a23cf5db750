"""One search worker process for test_workers.py: the scripted search of test_search.py on a shared study."""

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
logging.disable(logging.WARNING)

import optuna  # noqa: E402
from test_search import BAD_START, harness  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
storage, seed, n_trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
# Each worker samples differently (its own seed); the study is shared.
engine, _, search = harness(None, seed=seed, n_trials=n_trials, storage=storage, plots=False, pruner="none")
result, _ = search().run([BAD_START])
print(json.dumps({"best": result.best.macro_f1, "calls": engine.calls, "study_calls": result.student_calls}))
