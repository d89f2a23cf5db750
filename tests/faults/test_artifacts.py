"""Artifacts are checked before they are trusted. A rules.json with duplicated ids, another task's
labels, an unknown format_version, an empty rule or a preamble with stray braces, `--rules` given a folder,
a program.json that is no program state, and a compare folder holding another setup's results: each a clear
error on every command that reads them. `pick` and `report` never present figures measured on other rules
than the ones in rules.json now."""

import json
import re

import dspy
import pytest
from conftest import Classify, Sentiment
from harness import cli, compile_pareto_run, cue_rows, scripted_cli, snapshot, write_config  # noqa: F401 - scripted_cli is a fixture

from pld_optim import RuleSet, apply_rules


@pytest.fixture
def compiled(tmp_path, scripted_cli):  # noqa: F811
    lms = scripted_cli()
    return (*compile_pareto_run(tmp_path, n_trials=8), lms)


def edit(out, change) -> dict:
    data = json.loads((out / "rules.json").read_text())
    change(data)
    (out / "rules.json").write_text(json.dumps(data, indent=2))
    return data


BROKEN = {
    "duplicated ids": (lambda d: d["rules"].append({**d["rules"][0]}), r"rule ids \['R1'\] occur more than once"),
    "another task's labels": (lambda d: d.update(labels=["pos", "neg"]),
                              r"rules carry labels .* that are not among labels \['pos', 'neg'\]"),
    "unknown format_version": (lambda d: d.update(format_version=9),
                               r"format_version 9 is not one this pld-optim reads"),
    "an empty rule": (lambda d: d["rules"][1].update(text="  \n"),
                      r"rule 'R2' \(text\) is empty or only whitespace"),
    "a preamble with braces": (lambda d: d.update(preamble="Apply {these} rules to {label_field}:"),
                               r"preamble .*only \{label_field\} may stand in braces"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_rules_json_is_refused_by_every_command_that_reads_it(compiled, case):
    config, out, lms = compiled
    change, message = BROKEN[case]
    edit(out, change)
    before, calls = snapshot(out), lms.calls("student")
    for argv in (["evaluate", str(config), "--program", str(out), "--split", "dev"],
                 ["evaluate", str(config), "--program", "none", "--rules", str(out / "rules.json")],
                 ["ablate", str(config), str(out)], ["pick", str(config), str(out), "--max-tokens", "9999"],
                 ["report", str(out)]):
        code, _, err = cli(*argv)
        assert code == 2 and "rules.json" in err and re.search(message, err), (argv, err)
        assert "Traceback" not in err
    assert snapshot(out) == before and lms.calls("student") == calls  # old main: a preamble's KeyError traceback


def test_rules_for_another_task_and_rules_given_as_a_folder(compiled):
    config, out, _ = compiled
    rules = RuleSet.load(out / "rules.json")
    with pytest.raises(ValueError, match=r"rules\.json is for labels .*: it was compiled for another task"):
        apply_rules(dspy.Predict(Sentiment), rules.model_copy(update={"predictor": "self"}))
    code, _, err = cli("evaluate", str(config), "--program", "none", "--rules", str(out))
    assert code == 2 and f"{out} is a folder; give its rules.json" in err, err
    assert apply_rules(dspy.Predict(Classify), rules).predictors()[0].signature.instructions.count("If the") >= 1


def test_pick_refuses_a_point_whose_rules_were_edited_after_the_search(compiled):
    config, out, _ = compiled
    data = json.loads((out / "rules.json").read_text())
    best = data["search"]["best"]["selection"]
    edited = best[0]["rule_id"]
    edit(out, lambda d: next(r for r in d["rules"] if r["id"] == edited).update(
        text="If the sentence mentions nothing at all, answer gender."))
    before = snapshot(out)
    code, _, err = cli("pick", str(config), str(out), "--max-tokens", "100000")
    assert code == 2 and f"rule(s) {edited} were edited after the search" in err, err
    assert snapshot(out) == before  # old main: "picked ... dev macro F1 1.0000" for rules it never scored
    # The smallest point (here: no rule at all) does not hold the edited rule: its figures are the search's own.
    smallest = min(data["search"]["pareto"], key=lambda c: c["prompt_tokens"])
    assert edited not in {s["rule_id"] for s in smallest["selection"]}
    code, stdout, err = cli("pick", str(config), str(out), "--max-tokens", str(smallest["prompt_tokens"]))
    assert code == 0 and f"{smallest['prompt_tokens']} prompt tokens" in stdout, err


def test_report_says_the_dev_f1_is_stale_after_an_edit_until_ablate_measures_it(compiled):
    config, out, _ = compiled
    edit(out, lambda d: d["rules"][0].update(text="If the sentence mentions nothing at all, answer gender."))
    code, stdout, err = cli("report", str(out))
    assert code == 0, err
    report = (out / "report.md").read_text()
    assert "rules.json was edited after its dev macro F1 was measured" in report and "(before the edit)" in report
    assert "nothing at all" in report and "edited after its dev macro F1 was measured" in stdout
    code, stdout, err = cli("ablate", str(config), str(out))
    assert code == 0, err
    rules = RuleSet.load(out / "rules.json")
    assert f"dev macro F1 of the rules as they are: {rules.dev_macro_f1:.4f}" in stdout
    assert "edited after its dev macro F1" not in cli("report", str(out))[1]  # measured again: no longer stale


def test_program_json_that_is_no_program_state(compiled):
    config, out, _ = compiled
    state = json.loads((out / "program.json").read_text())
    state.pop("metadata")  # a state written by hand or by another tool: DSPy's own load() raised KeyError
    (out / "program.json").write_text(json.dumps(state))
    code, _, err = cli("evaluate", str(config), "--program", str(out / "program.json"), "--split", "dev")
    assert code == 0, err
    state["demos"] = [1, 2]
    (out / "program.json").write_text(json.dumps(state))
    code, _, err = cli("evaluate", str(config), "--program", str(out / "program.json"), "--split", "dev")
    assert code == 2 and "program.json: not a program state DSPy can load (predictor" in err, err
    assert "Traceback" not in err


def test_compare_refuses_a_folder_that_holds_another_setups_results(tmp_path, scripted_cli):  # noqa: F811
    lms = scripted_cli()
    config, out = write_config(tmp_path), tmp_path / "cmp"
    assert cli("compare", str(config), "--out", str(out), "--optimizers", "zero-shot")[0] == 0
    (tmp_path / "other").mkdir()
    other = write_config(tmp_path / "other", cue_rows(60, offset=500))  # other data
    calls = lms.calls("student")
    for dry in (["--dry-run"], []):
        code, _, err = cli("compare", str(other), "--out", str(out), "--optimizers", "zero-shot", *dry)
        assert code == 2 and "holds another run (data.dev" in err and "--fresh" not in err, err
    assert lms.calls("student") == calls  # old main: printed the first data's zero-shot row as this data's
    code, stdout, err = cli("compare", str(config), "--out", str(out), "--optimizers", "zero-shot,cot")
    assert code == 0 and "| cot" in stdout, err  # the same setup with one more optimizer resumes
