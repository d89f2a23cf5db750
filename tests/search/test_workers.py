"""Several search workers share one study through a real PostgreSQL server on loopback."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest

PG_BIN = Path("/usr/lib/postgresql")
pytestmark = pytest.mark.skipif(
    not PG_BIN.exists() or shutil.which("runuser") is None or os.geteuid() != 0,
    reason="needs Debian's postgresql package and root (to run it as the postgres user); .ci/run installs it")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    pytest.importorskip("psycopg2")
    bindir = sorted(PG_BIN.glob("*/bin"))[-1]
    root = Path(tempfile.mkdtemp(prefix="pld-pg-"))  # pytest's tmp tree is root-only; postgres must enter
    data = root / "data"
    shutil.chown(root, "postgres")
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_pg, str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres"],
                   check=True, capture_output=True)
    port = _port()
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start",
                    "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1"], check=True, capture_output=True)
    yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True)
    shutil.rmtree(root, ignore_errors=True)


def test_three_workers_share_one_study_without_losing_or_duplicating_trials(postgres):
    n_trials, workers = 24, 3
    worker = Path(__file__).parent / "search_worker.py"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    procs = [subprocess.Popen([sys.executable, str(worker), postgres, str(seed), str(n_trials)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for seed in range(workers)]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    (name,) = optuna.get_all_study_names(postgres)
    study = optuna.load_study(study_name=name, storage=postgres)
    trials = study.trials
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))  # no trial duplicated
    finished = [t for t in trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in trials)  # none left hanging
    assert n_trials <= len(finished) <= n_trials + workers - 1  # stop together; at most the in-flight overshoot
    by_worker = {t.user_attrs["worker"] for t in finished}
    assert len(by_worker) == workers  # every process did real work on the one study
    # Every trial a worker evaluated is in the study: student calls add up to the finished trials' (no pruner:
    # each scored all of dev), and the study records every one of them.
    dev = 24
    assert sum(o["calls"] for o in outputs) == len(finished) * dev
    assert sum(int(t.user_attrs["student_calls"]) for t in trials) == len(finished) * dev
    assert max(o["study_calls"] for o in outputs) <= len(finished) * dev
