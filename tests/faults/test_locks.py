"""Every writer of a run folder holds its lock. While another process holds it, each command that writes the
folder (compile, compile --fresh, pick, ablate, report, compare) and each Python writer (`PLD(out_dir=...)`,
`RunFolder.save`, `RunFolder.clear`) is refused and changes nothing; readers (`evaluate`) still work. The
lock goes with its process, and one process may take it twice (the CLI around PLD.compile)."""

import json

import dspy
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond
from harness import (  # noqa: F401 - compiled_pareto, lock_holder and scripted_cli are fixtures
    cli,
    compile_into,
    compiled_pareto,
    lock_holder,
    scripted_cli,
    snapshot,
    write_config,
)

from pld_optim import PLD, RuleSet, RunFolder, apply_rules
from pld_optim.run.folder import FINGERPRINT, LOCK
from pld_optim.testing import scripted_lm

IN_USE = "is in use by another pld-optim command"


@pytest.mark.parametrize("command", ["compile", "compile --fresh", "pick", "ablate", "report"])
def test_cli_writers_are_refused_while_another_process_holds_the_folder(compiled_pareto, lock_holder,  # noqa: F811
                                                                        command):
    config, out, lms = compiled_pareto
    before, calls = snapshot(out), lms.calls("student")
    lock_holder(out)
    argv = {"compile": ["compile", str(config), "--out", str(out)],
            "compile --fresh": ["compile", str(config), "--out", str(out), "--fresh"],
            "pick": ["pick", str(config), str(out), "--max-tokens", "100000"],
            "ablate": ["ablate", str(config), str(out)],
            "report": ["report", str(out)]}[command]
    code, _, err = cli(*argv)
    assert code == 2 and IN_USE in err, err
    assert snapshot(out) == before and lms.calls("student") == calls  # old main: pick/ablate/report rewrote it


def test_compare_is_refused_while_another_process_holds_its_folder(tmp_path, scripted_cli, lock_holder):  # noqa: F811
    lms = scripted_cli()
    out = tmp_path / "cmp"
    lock_holder(out)
    code, _, err = cli("compare", str(write_config(tmp_path)), "--out", str(out), "--optimizers", "zero-shot")
    assert code == 2 and IN_USE in err, err
    assert sorted(p.name for p in out.iterdir()) == [".pld.lock"] and lms.calls("student") == 0


def test_evaluate_reads_a_folder_another_process_holds(compiled_pareto, lock_holder):  # noqa: F811
    config, out, _ = compiled_pareto
    lock_holder(out)
    code, stdout, err = cli("evaluate", str(config), "--program", str(out), "--split", "dev")
    assert code == 0, err
    assert json.loads(stdout)["n"] > 0


def test_python_writers_are_refused_while_another_process_holds_the_folder(compiled_pareto, lock_holder):  # noqa: F811
    _, out, _ = compiled_pareto
    before = snapshot(out)
    lock_holder(out)
    with pytest.raises(ValueError, match=IN_USE):
        RunFolder(out).clear()  # old main's clear_run took no lock: it emptied a folder a compile was writing
    rules = RuleSet.load(out / "rules.json")
    with pytest.raises(ValueError, match=IN_USE):
        RunFolder(out).save(apply_rules(dspy.Predict(Classify), rules), rules)
    teacher = scripted_lm(teacher_respond, "teacher")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        with pytest.raises(ValueError, match=IN_USE):
            PLD(teacher=teacher, out_dir=out).compile(dspy.Predict(Classify), trainset=make_examples(30),
                                                      valset=make_examples(12, offset=100))
    assert snapshot(out) == before and teacher._engine_spec.calls == 0


def test_commands_on_a_folder_that_is_not_a_compiles_create_nothing(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    config, missing = write_config(tmp_path), tmp_path / "typo"
    for argv in (["report", str(missing)], ["pick", str(config), str(missing), "--max-tokens", "9"],
                 ["ablate", str(config), str(missing)]):
        code, _, err = cli(*argv)
        assert code == 2 and "is not a folder" in err, (argv, err)
    assert not missing.exists()  # old and new main before this round: `report` made the folder (and its lock)
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("report", str(empty))
    assert code == 2 and "holds no rules.json, so it is not the output folder of a compile" in err, err
    assert list(empty.iterdir()) == []


def test_a_folder_in_use_is_refused_and_its_lock_goes_with_its_process(tmp_path, lock_holder):  # noqa: F811
    holder = lock_holder(tmp_path)
    with pytest.raises(ValueError, match=IN_USE):
        compile_into(tmp_path)
    assert not (tmp_path / "mined.jsonl").exists() and not (tmp_path / FINGERPRINT).exists()
    holder.kill()
    holder.wait()
    assert (tmp_path / LOCK).exists()  # the lock file a killed process leaves is no lock: the OS released it
    compile_into(tmp_path)
    assert (tmp_path / "rules.json").exists()


def test_the_folder_lock_is_reentrant_within_one_process(tmp_path):
    # The CLI holds the lock around PLD.compile, which takes it again through its own RunFolder.
    with RunFolder(tmp_path).writing():
        assert compile_into(tmp_path) > 0
    assert RuleSet.load(tmp_path / "rules.json").rules
