"""Interrupted and resumed runs. kill -9, Ctrl-C or SIGTERM (what a scheduler or `kill` sends) during mining,
refining or search: the same command again resumes from saved state (mined.jsonl, DSPy's disk cache, the
Optuna study), loses at most the unit that was in flight, and counts the first process's spend (report.md
says how). One output folder holds one run: the same run resumes, another is refused with what differs. A
write cut off halfway keeps the previous file."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_examples
from harness import cli, compile_into, scripted_cli, write_config  # noqa: F401 - scripted_cli is a fixture

from pld_optim.files import atomic_write_text

DRIVER = Path(__file__).parent / "interrupt_driver.py"


def run(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), str(out)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})


def calls(out: Path) -> list[str]:
    path = out / "calls.log"
    return path.read_text().split() if path.exists() else []


def rules_json(out: Path) -> dict:
    return json.loads((out / "rules.json").read_text())


def rules_of(out: Path) -> dict:
    """What an interrupted run must end with exactly as a clean one does."""
    data = rules_json(out)
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
    ("probe", signal.SIGKILL), ("mine", signal.SIGKILL), ("mine", signal.SIGINT), ("mine", signal.SIGTERM),
    ("refine", signal.SIGKILL), ("search", signal.SIGKILL), ("search", signal.SIGINT),
])
def test_interrupted_compile_resumes_and_loses_at_most_one_unit(clean, tmp_path, phase, sig):
    # Student calls: 12 baseline, 30 probe (contrastive mining), then corrective refinement's train pass (30),
    # then the search trials.
    stage, nth = {"probe": ("student", 12 + 20),
                  "mine": ("teacher:mine", {signal.SIGKILL: 11, signal.SIGINT: 20, signal.SIGTERM: 12}[sig]),
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


def test_sigterm_in_the_search_then_a_rerun_counts_every_trial_and_call(clean, tmp_path):
    total = sum(c == "student:student" for c in calls(clean))
    interrupt_at(tmp_path, "student", total - 15, signal.SIGTERM)
    first = sum(c == "student:student" for c in calls(tmp_path))
    assert not (tmp_path / "rules.json").exists()  # the first process ended inside the search
    result = run(tmp_path)
    assert result.returncode == 0 and "DONE" in result.stdout, result.stderr[-2000:]
    search, before = rules_json(tmp_path)["search"], rules_json(clean)["search"]
    # Every trial of the study is in the record, those the first process ran included ...
    assert [t for t, _, _ in search["history"]] == list(range(search["n_trials"]))
    assert search["n_trials"] >= before["n_trials"]
    # ... and so are their student calls (old main: only the second process's, fewer than a clean run's).
    assert search["student_calls"] == sum(n for _, _, n in search["history"]) >= before["student_calls"]
    second = sum(c == "student:student" for c in calls(tmp_path)) - first
    assert second < total  # the rerun did not start the search over


def test_report_says_how_an_earlier_processs_spend_is_counted(clean):
    report = (clean / "report.md").read_text()
    search = rules_json(clean)["search"]
    assert "counts the calls of the process that wrote this report" in report
    assert "the rules it mined\n(mined.jsonl) are reused without a call" in report
    assert f"search's {search['student_calls']} student predictions count every trial, earlier runs included" in \
        " ".join(report.split())


def test_a_compare_rerun_keeps_the_first_processs_compile_cost(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    config, out = write_config(tmp_path), tmp_path / "cmp"
    code, first, err = cli("compare", str(config), "--out", str(out), "--optimizers", "zero-shot,pld")
    assert code == 0, err
    cost = json.loads((out / "pld-seed0.json").read_text())["compile_usage"]
    assert cost["lm_calls"] > 0
    lms = scripted_cli()
    code, again, err = cli("compare", str(config), "--out", str(out), "--optimizers", "zero-shot,pld")
    assert code == 0, err
    assert lms.calls("teacher") == 0  # nothing compiled again ...
    assert json.loads((out / "pld-seed0.json").read_text())["compile_usage"] == cost  # ... and nothing forgotten
    row = [line for line in again.splitlines() if line.startswith("| pld")]
    assert row and row == [line for line in first.splitlines() if line.startswith("| pld")]


# -- one output folder holds one run ------------------------------------------------------------------------

def test_same_run_resumes_and_a_different_run_is_refused_with_what_differs(tmp_path):
    first = compile_into(tmp_path)
    assert first > 0 and json.loads((tmp_path / "fingerprint.json").read_text())["teacher"]["model"]
    assert compile_into(tmp_path) == 3  # the same run: no mining (mined.jsonl), only the 3 uncached merges
    with pytest.raises(ValueError, match=r"teacher\.model.*--fresh"):
        compile_into(tmp_path, teacher_name="other-teacher")
    with pytest.raises(ValueError, match=r"seed: 0 -> 1"):
        compile_into(tmp_path, seed=1)
    relabelled = make_examples(30)
    relabelled[0] = relabelled[0].copy(label="religion" if relabelled[0].label != "religion" else "race")
    with pytest.raises(ValueError, match=r"data\.train"):
        compile_into(tmp_path, data=(relabelled, make_examples(12, offset=100)))
    with pytest.raises(ValueError, match=r"params\.max_clusters"):
        compile_into(tmp_path, max_clusters=3)
    # Nothing was mixed in: the folder still holds the first run's mined rules, one per example.
    assert len((tmp_path / "mined.jsonl").read_text().splitlines()) == 30


def test_a_folder_from_a_run_without_fingerprint_is_refused(tmp_path):
    (tmp_path / "mined.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="no fingerprint"):
        compile_into(tmp_path)


def test_an_interrupted_write_keeps_the_previous_rules(tmp_path, monkeypatch):
    path = tmp_path / "rules.json"
    atomic_write_text(path, '{"old": true}\n')

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, '{"new": tru')
    assert json.loads(path.read_text()) == {"old": True}
