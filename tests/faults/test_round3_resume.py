"""Kind 10: spend is not lost on resume. After SIGTERM (what a scheduler or `kill` sends) and a rerun of the
same command, the search's recorded student calls and trials include those of the interrupted process, the
mined rules it paid for are reused, and report.md says how the first process's spend is counted."""

import json
import signal

import test_interrupt
from harness import cli, scripted_cli, write_config  # noqa: F401 - scripted_cli is a fixture
from test_interrupt import calls, interrupt_at, run

clean = test_interrupt.clean  # the interrupt tests' uninterrupted run (a module-scoped fixture)


def rules_of(out):
    return json.loads((out / "rules.json").read_text())


def test_sigterm_in_the_search_then_a_rerun_counts_every_trial_and_call(clean, tmp_path):
    total = sum(c == "student:student" for c in calls(clean))
    interrupt_at(tmp_path, "student", total - 15, signal.SIGTERM)
    first = sum(c == "student:student" for c in calls(tmp_path))
    assert not (tmp_path / "rules.json").exists()  # the first process ended inside the search
    result = run(tmp_path)
    assert result.returncode == 0 and "DONE" in result.stdout, result.stderr[-2000:]
    search, before = rules_of(tmp_path)["search"], rules_of(clean)["search"]
    # Every trial of the study is in the record, those the first process ran included ...
    assert [t for t, _, _ in search["history"]] == list(range(search["n_trials"]))
    assert search["n_trials"] >= before["n_trials"]
    # ... and so are their student calls (old main: only the second process's, fewer than a clean run's).
    assert search["student_calls"] == sum(n for _, _, n in search["history"]) >= before["student_calls"]
    second = sum(c == "student:student" for c in calls(tmp_path)) - first
    assert second < total  # the rerun did not start the search over


def test_sigterm_in_mining_then_a_rerun_pays_for_no_mined_rule_twice(clean, tmp_path):
    interrupt_at(tmp_path, "teacher:mine", 12, signal.SIGTERM)
    result = run(tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    mined = sum(c == "teacher:mine" for c in calls(tmp_path))
    assert mined - sum(c == "teacher:mine" for c in calls(clean)) <= 1  # at most the call in flight
    assert [(r["id"], r["text"]) for r in rules_of(tmp_path)["rules"]] == \
        [(r["id"], r["text"]) for r in rules_of(clean)["rules"]]


def test_report_says_how_an_earlier_processs_spend_is_counted(clean):
    report = (clean / "report.md").read_text()
    search = rules_of(clean)["search"]
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
