"""One search worker process for test_workers.py: the scripted search of test_search.py on a shared study."""

import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
logging.disable(logging.WARNING)

import optuna  # noqa: E402
from test_search import RULES, harness  # noqa: E402

from pld_optim.search import search_rules  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
storage, seed, n_trials = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
engine, kwargs = harness(None, n_trials=n_trials, storage=storage, plots=False, pruner="none")
kwargs["seed"] = seed  # each worker samples differently; the study is shared
result = search_rules(RULES, **kwargs)
print(json.dumps({"best": result.best.macro_f1, "calls": engine.calls}))
