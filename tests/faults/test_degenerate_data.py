"""A run whose student gives no valid answer (every call fails, most answers are outside the labels, or the
program never hands it its inputs) stops with an error that names the cause, before the teacher is paid, on
every command that scores the student: `PLD.compile`, `compile`, `evaluate`, `ablate`, `compare`; and every
stage line reports its invalid answers."""

import json
import logging

import dspy
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond
from harness import cli, scripted_cli, write_config  # noqa: F401 - scripted_cli is a fixture

from pld_optim import PLD
from pld_optim.testing import scripted_lm


def refused(system, user):
    raise RuntimeError("401 Unauthorized: invalid API key")


def nonsense(system, user):
    return {"label": "I cannot decide"}


def test_python_a_student_whose_every_call_fails_stops_before_the_teacher():
    teacher = scripted_lm(teacher_respond, "teacher")
    with dspy.context(lm=scripted_lm(refused, "student")):
        with pytest.raises(RuntimeError, match=r"the zero-shot student on dev: no valid label for 12 of "
                                               r"12 examples \(12 calls failed.*max_invalid_share") as err:
            PLD(teacher=teacher).compile(dspy.Predict(Classify), trainset=make_examples(30),
                                         valset=make_examples(12, offset=100))
    assert "401 Unauthorized: invalid API key" in str(err.value)  # why they failed, not only how many
    assert teacher._engine_spec.calls == 0


def test_python_a_program_that_drops_its_inputs_stops_before_the_teacher():
    class Drops(dspy.Module):
        def __init__(self):
            super().__init__()
            self.classify = dspy.Predict(Classify)

        def forward(self, sentence):
            return self.classify(sentence="(no input)")  # a bug: the input never reaches the student

    teacher = scripted_lm(teacher_respond, "teacher")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        with pytest.raises(RuntimeError, match=r"do not contain the examples' \['sentence'\]"):
            PLD(teacher=teacher).compile(Drops(), trainset=make_examples(30), valset=make_examples(12, offset=100))
    assert teacher._engine_spec.calls == 0  # old main: F1 of a constant answer, exit 0


def test_cli_compile_with_a_student_that_answers_outside_the_labels_stops(tmp_path, scripted_cli):  # noqa: F811
    lms = scripted_cli(student=nonsense)
    out = tmp_path / "run"
    code, _, err = cli("compile", str(write_config(tmp_path)), "--out", str(out))
    assert code == 2 and "answers outside the labels" in err and "max_invalid_share" in err, err
    assert lms.calls("teacher") == 0 and not (out / "mined.jsonl").exists()


def test_every_stage_line_reports_invalid_answers(tmp_path, scripted_cli, caplog):  # noqa: F811
    def sometimes(system, user):
        answer = student_respond(system, user)
        return {"label": "unsure"} if "Item 1" in user else answer  # ids 1, 10-19, 100-119: invalid

    scripted_cli(student=sometimes)
    caplog.set_level(logging.INFO, "pld_optim")
    out = tmp_path / "run"
    code, _, err = cli("compile", str(write_config(tmp_path, search={"n_trials": 3, "minibatch_size": 8})), "--out",
                       str(out))
    assert code == 0, err
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("stage ")]
    assert {line.split()[1] for line in lines} >= {"baseline", "probe", "mine", "cluster", "refine", "search"}
    assert all(line.endswith("invalid answers") for line in lines), lines
    usage = {u["stage"]: u for u in json.loads((out / "rules.json").read_text())["usage"]}
    assert usage["baseline"]["invalid"] > 0 and usage["total"]["invalid"] >= usage["baseline"]["invalid"]
    assert "| invalid answers |" in (out / "report.md").read_text()


def test_evaluate_with_a_student_whose_calls_fail_is_an_error(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli(student=refused)
    code, stdout, err = cli("evaluate", str(write_config(tmp_path)), "--program", "none", "--split", "dev")
    assert code == 2 and stdout == "", (code, stdout)  # old main: {"macro_f1": 0.0, ...} and exit 0
    assert "calls failed, the first with LMUnexpectedError: [local/student] 401 Unauthorized" in err, err
    assert "max_invalid_share" in err


def test_ablate_with_a_student_whose_calls_fail_changes_nothing(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    config, out = write_config(tmp_path), tmp_path / "run"
    assert cli("compile", str(config), "--out", str(out))[0] == 0
    before = (out / "rules.json").read_bytes()
    scripted_cli(student=refused)
    code, stdout, err = cli("ablate", str(config), str(out))
    assert code == 2 and "ablate: the full prompt on dev" in err and "401 Unauthorized" in err, err
    assert (out / "rules.json").read_bytes() == before  # old main: every contribution +0.0000, exit 0


def test_compare_with_a_student_that_answers_nothing_valid_stops_before_the_optimizers(tmp_path,
                                                                                       scripted_cli):  # noqa: F811
    lms = scripted_cli(student=nonsense)
    out = tmp_path / "cmp"
    code, _, err = cli("compare", str(write_config(tmp_path)), "--out", str(out), "--optimizers", "zero-shot,pld")
    assert code == 2 and "compare: the zero-shot student on dev" in err and "I cannot decide" in err, err
    assert lms.calls("teacher") == 0 and not (out / "zero-shot-seed0.json").exists()


def test_compare_with_a_failed_optimizer_exits_nonzero_and_retries_it(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli(teacher=refused)  # PLD's teacher fails on every call; zero-shot needs no teacher
    config, out = write_config(tmp_path), tmp_path / "cmp"
    code, stdout, err = cli("compare", str(config), "--out", str(out), "--optimizers", "zero-shot,pld")
    assert code == 2 and "1 optimizer run(s) failed: pld seed 0: RuntimeError" in err, err
    assert (out / "compare.md").exists() and "pld" in stdout  # the table is written all the same
    lms = scripted_cli()
    code, _, err = cli("compare", str(config), "--out", str(out), "--optimizers", "zero-shot,pld")
    assert code == 0, err
    assert lms.calls("teacher") > 0  # the failed run ran again; old main reused its saved error forever
    assert json.loads((out / "pld-seed0.json").read_text())["error"] is None


def test_label_mining_without_a_baseline_still_checks_the_student():
    teacher = scripted_lm(teacher_respond, "teacher")
    with dspy.context(lm=scripted_lm(nonsense, "student")):
        with pytest.raises(RuntimeError, match="max_invalid_share"):
            PLD(teacher=teacher, mining="label", evaluate_baseline=False, n_clusters=1, max_refine_iters=0).compile(
                dspy.Predict(Classify), trainset=make_examples(30), valset=make_examples(12, offset=100))


def test_a_student_with_mostly_invalid_answers_stops_before_mining():
    teacher = scripted_lm(teacher_respond, "teacher")
    answers = iter(["race", "perhaps", "no idea", "unclear"] * 20)
    student = scripted_lm(lambda s, u: {"label": next(answers)}, "student")  # 3 of 4 outside the labels
    with dspy.context(lm=student):
        with pytest.raises(RuntimeError, match=r"on dev: no valid label for 9 of 12 examples.*max_invalid_share"):
            PLD(teacher=teacher).compile(dspy.Predict(Classify), trainset=make_examples(30),
                                         valset=make_examples(12, offset=100))
    assert teacher._engine_spec.calls == 0
