"""A person's or another command's work is never overwritten or removed without a word. The README invites
editing rules.json: rerunning compile on that folder (say, to add --test), `--fresh`, pick, ablate and report
each tell an edited artifact from the one pld-optim wrote (the folder records what it wrote), and refuse
before any LM call, naming the file and how to keep or discard it. A folder `pld-optim compare` wrote is not
a compile's, nor is any optimizer's sub-run in it (`<optimizer>-seed<N>/`): a compile there is refused, and
`--fresh` and `RunFolder.clear` remove nothing there."""

import json
import re

import dspy
import pytest
from conftest import Classify
from harness import (  # noqa: F401 - compiled and scripted_cli are fixtures
    cli,
    compile_into,
    compile_pareto_run,
    compiled,
    scripted_cli,
    snapshot,
    write_config,
)

from pld_optim import RuleSet, RunFolder, apply_rules
from pld_optim.run.written import Written

EDITED_TEXT = "If the sentence mentions a hymn, answer religion."


def edit_rules(out) -> None:
    """What a reviewer does: rewrite the first rule's text in rules.json by hand."""
    data = json.loads((out / "rules.json").read_text())
    data["rules"][0]["text"] = EDITED_TEXT
    (out / "rules.json").write_text(json.dumps(data, indent=2))


def spent(lms) -> tuple[int, int]:
    return lms.calls("teacher"), lms.calls("student")


@pytest.mark.parametrize("extra", [["--test"], ["--test", "--dry-run"], ["--fresh"]])
def test_compile_again_on_an_edited_rules_json_refuses_and_says_how_to_keep_it(compiled, extra):  # noqa: F811
    """Old main: the rerun replayed the cache and wrote the compile's rules over the edit, exit 0, no word."""
    config, out, lms = compiled
    edit_rules(out)
    before, calls = snapshot(out), spent(lms)
    code, _, err = cli("compile", str(config), "--out", str(out), *extra)
    assert code == 2, err
    assert f"{out / 'rules.json'} was edited after pld-optim wrote it" in err, err
    assert "--rules" in err and "pld-optim evaluate" in err and f"rm {out / 'rules.json'}" in err, err
    assert snapshot(out) == before and spent(lms) == calls  # the edit is whole; no LM call was made
    assert EDITED_TEXT in (out / "rules.json").read_text()


def test_python_compile_and_save_refuse_an_edited_rules_json(tmp_path):
    out = tmp_path / "run"
    assert compile_into(out) > 0
    edit_rules(out)
    before = snapshot(out)
    with pytest.raises(ValueError, match=r"rules\.json was edited after pld-optim wrote it"):
        compile_into(out)  # old main: replayed and replaced the edit
    rules = RuleSet.load(out / "rules.json")
    with pytest.raises(ValueError, match=r"rules\.json was edited after pld-optim wrote it"):
        RunFolder(out).save(apply_rules(dspy.Predict(Classify), rules), rules)
    with pytest.raises(ValueError, match=r"rules\.json was edited after pld-optim wrote it"):
        RunFolder(out).clear()  # old main: removed it with the run
    assert snapshot(out) == before
    (out / "rules.json").unlink()  # discarded by the reviewer: the compile may write it again
    assert compile_into(out) < 10 and (out / "rules.json").exists()


def test_fresh_and_compile_refuse_a_folder_compare_wrote(tmp_path, scripted_cli):  # noqa: F811
    """Old main: the compile's refusal ("holds another run") suggested --fresh, which deleted compare's
    fingerprint and LM cache; RunFolder.clear() did the same from Python."""
    lms = scripted_cli()
    config, out = write_config(tmp_path), tmp_path / "cmp"
    code, _, err = cli("compare", str(config), "--out", str(out), "--optimizers", "zero-shot")
    assert code == 0, err
    before, calls = snapshot(out), spent(lms)
    for extra in (["--fresh", "--dry-run"], ["--fresh"], []):
        code, _, err = cli("compile", str(config), "--out", str(out), *extra)
        assert code == 2 and "`pld-optim compare` wrote it" in err, (extra, err)
        assert "--fresh" not in err.split("wrote it", 1)[1], err  # no advice that would remove compare's run
    with pytest.raises(ValueError, match="`pld-optim compare` wrote it"):
        RunFolder(out).clear()
    assert snapshot(out) == before and spent(lms) == calls


@pytest.mark.parametrize("name", ["pld-seed0", "pld-rules-only-seed0", "pld-rules-only-seed12", "bootstrap-rs-seed1"])
def test_fresh_refuses_a_compile_folder_inside_a_compare_folder(tmp_path, name):
    """compare keeps each seed's run of each PLD optimizer in <optimizer>-seed<N>/: that run is compare's, not
    the user's to clear (old main: only pld-seed<N>/ was told apart, so pld-rules-only-seed0/ was cleared)."""
    out = tmp_path / "cmp"
    (out / name).mkdir(parents=True)
    (out / "fingerprint.json").write_text(json.dumps({"command": "compare", "data": {}, "params": {}}))
    (out / name / "fingerprint.json").write_text(json.dumps({"data": {}, "params": {}}))
    (out / name / "mined.jsonl").write_text("{}\n")
    before = snapshot(out)
    with pytest.raises(ValueError, match=re.escape(f"`pld-optim compare` wrote it (it is part of the run in {out},")):
        RunFolder(out / name).clear()
    with pytest.raises(ValueError, match="`pld-optim compare` wrote it"):
        RunFolder(out / name).check()
    assert snapshot(out) == before


def test_compile_and_fresh_refuse_every_sub_run_of_a_compare(tmp_path, scripted_cli):  # noqa: F811
    """compare compiles pld-rules-only into pld-rules-only-seed0/ (its own compile there is let through, as it
    holds the compare folder); old main: a user's `compile --fresh` into it removed compare's run and compiled
    its own, and a plain compile into pld-seed0/ resumed compare's run and rewrote its artifacts."""
    lms = scripted_cli()
    config, out = write_config(tmp_path), tmp_path / "cmp"
    code, _, err = cli("compare", str(config), "--out", str(out), "--optimizers", "pld-rules-only")
    assert code == 0, err
    assert (out / "pld-rules-only-seed0" / "rules.json").is_file()  # compare's own compile was not refused
    (out / "pld-seed0").mkdir()  # as compare leaves it when interrupted before the compile's first write
    before, calls = snapshot(out), spent(lms)
    for sub in ("pld-rules-only-seed0", "pld-seed0", "pld-rules-only-seed1"):  # the last: a seed not run yet
        for extra in ([], ["--fresh"], ["--fresh", "--dry-run"], ["--dry-run"]):
            code, _, err = cli("compile", str(config), "--out", str(out / sub), *extra)
            assert code == 2 and f"--out {out / sub}: `pld-optim compare` wrote it" in err, (sub, extra, err)
            assert f"part of the run in {out}" in err and "choose another folder" in err, err
        if (out / sub).exists():  # clear() of a folder that is not there removes nothing and says so: []
            with pytest.raises(ValueError, match="`pld-optim compare` wrote it"):
                RunFolder(out / sub).clear()
    assert snapshot(out) == before and spent(lms) == calls
    assert not (out / "pld-rules-only-seed1").exists()


def test_ablate_and_pick_refuse_to_replace_a_hand_edited_program_json(tmp_path, scripted_cli):  # noqa: F811
    """pick and ablate carry an edited rules.json forward, but program.json they write from it: a hand edit
    there was overwritten without a word."""
    lms = scripted_cli()
    config, out = compile_pareto_run(tmp_path, n_trials=6)
    state = json.loads((out / "program.json").read_text())
    state["signature"]["instructions"] += "\nAnswer in lower case."  # edited by hand
    (out / "program.json").write_text(json.dumps(state, indent=2))
    before, calls = snapshot(out), spent(lms)
    for argv in (["ablate", str(config), str(out)], ["pick", str(config), str(out), "--max-tokens", "100000"]):
        code, _, err = cli(*argv)
        assert code == 2 and f"{out / 'program.json'} was edited after pld-optim wrote it" in err, (argv, err)
    assert snapshot(out) == before and spent(lms) == calls  # ablate refused before its first student call


def test_report_keeps_a_hand_edited_report_md_and_its_own_rewrite_is_no_edit(compiled):  # noqa: F811
    config, out, lms = compiled
    code, _, err = cli("report", str(out))  # report's own rewrite: a later compile must not call it an edit
    assert code == 0 and Written(out).writer("report.md") == "report", err
    (teacher, student), mined = spent(lms), len(RunFolder(out).read_mined())
    code, _, err = cli("compile", str(config), "--out", str(out))
    assert code == 0, err
    # The compile ran to its end: it scored again (the scripted LMs have no cache) and wrote report.md again,
    # and it resumed the mined rules instead of paying the teacher to mine them again.
    assert lms.calls("student") > student and lms.calls("teacher") - teacher < mined, (spent(lms), mined)
    assert Written(out).writer("report.md") == "compile"
    (out / "report.md").write_text((out / "report.md").read_text() + "\nReviewed by A. Person: R2 is wrong.\n")
    before = snapshot(out)
    code, _, err = cli("report", str(out))
    assert code == 2 and f"{out / 'report.md'} was edited after pld-optim wrote it" in err, err
    assert snapshot(out) == before


def test_compile_again_after_pick_does_not_undo_the_pick(tmp_path, scripted_cli):  # noqa: F811
    """pick's choice is another command's work: a rerun of compile (e.g. for --test) wrote the search's best
    point back over it."""
    lms = scripted_cli()
    config, out = compile_pareto_run(tmp_path, n_trials=6)
    front = json.loads((out / "rules.json").read_text())["search"]["pareto"]
    smallest = min(front, key=lambda c: c["prompt_tokens"])
    code, _, err = cli("pick", str(config), str(out), "--max-tokens", str(smallest["prompt_tokens"]))
    assert code == 0, err
    picked, calls = (out / "rules.json").read_bytes(), spent(lms)
    code, _, err = cli("compile", str(config), "--out", str(out), "--test")
    assert code == 2 and "rules.json was written by `pld-optim pick`" in err and "--split test" in err, err
    assert (out / "rules.json").read_bytes() == picked and spent(lms) == calls
