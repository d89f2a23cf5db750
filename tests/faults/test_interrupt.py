"""kill -9 or Ctrl-C during mining, refining or search; the same command again resumes from saved state
(mined.jsonl, DSPy's disk cache, the Optuna study) and loses at most the unit that was in flight."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DRIVER = Path(__file__).parent / "interrupt_driver.py"


def run(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})


def calls(out: Path) -> list[str]:
    path = out / "calls.log"
    return path.read_text().split() if path.exists() else []


def rules_of(out: Path) -> dict:
    data = json.loads((out / "rules.json").read_text())
    return {"rules": [(r["id"], r["text"]) for r in data["rules"]], "history": [
        (h["iteration"], h["rules"], h["dev_macro_f1"]) for h in data["history"]], "prompt": data["system_prompt"]}


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    out = tmp_path_factory.mktemp("clean")
    result = run(out)
    assert result.returncode == 0 and "DONE" in result.stdout, result.stderr[-2000:]
    return out


def interrupt_at(out: Path, stage: str, nth: int, sig: int) -> None:
    """Start the driver and send `sig` once the nth call of `stage` has been logged."""
    proc = subprocess.Popen([sys.executable, str(DRIVER), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if sum(line.endswith(stage) for line in calls(out)) >= nth:
            proc.send_signal(sig)
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert proc.returncode != 0, "the run finished before it could be interrupted"


@pytest.mark.parametrize("phase, sig", [
    ("probe", signal.SIGKILL), ("mine", signal.SIGKILL), ("mine", signal.SIGINT), ("refine", signal.SIGKILL),
    ("search", signal.SIGKILL), ("search", signal.SIGINT),
])
def test_interrupted_compile_resumes_and_loses_at_most_one_unit(clean, tmp_path, phase, sig):
    # Student calls: 12 baseline, 30 probe (contrastive mining), then corrective refinement's train pass (30),
    # then the search trials.
    stage, nth = {"probe": ("student", 12 + 20),
                  "mine": ("teacher:mine", 11 if sig == signal.SIGKILL else 20),
                  "refine": ("student", 12 + 30 + 20),
                  "search": ("student", sum(c == "student:student" for c in calls(clean)) - 15)}[phase]
    interrupt_at(tmp_path, stage, nth, sig)
    first = calls(tmp_path)
    result = run(tmp_path)
    assert result.returncode == 0 and "DONE" in result.stdout, result.stderr[-2000:]
    total = calls(tmp_path)
    if phase != "search":
        # Same rules, same refine history, same prompt as a run that was never interrupted ...
        assert rules_of(tmp_path) == rules_of(clean)
        # ... and every call the first run paid for was reused, but at most the one in flight.
        lost = len(total) - len(calls(clean))
        assert 0 <= lost <= 1, (lost, len(first))
    else:
        # Search resumes its study: finished trials are kept; only the trial in flight is redone.
        import optuna

        url = f"sqlite:///{tmp_path}/study.db"
        study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
        done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert len(done) == 6 and len([t for t in study.trials if t.state.name == "RUNNING"]) <= 1
        assert (tmp_path / "rules.json").exists()
        dev = 12
        assert len(total) - len(calls(clean)) <= dev  # at most one trial's evaluation repeated


def test_same_seed_gives_identical_rules_and_prompt(clean, tmp_path):
    result = run(tmp_path)
    assert result.returncode == 0
    mine, theirs = json.loads((tmp_path / "rules.json").read_text()), json.loads((clean / "rules.json").read_text())
    for volatile in ("usage",):
        mine.pop(volatile), theirs.pop(volatile)
    for data in (mine, theirs):  # the run's header: seconds spent differ from run to run, nothing else may
        assert data["context"].pop("wall time").endswith("s in the stages")
    assert mine == theirs
