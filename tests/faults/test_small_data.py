"""Figures that would read wrong on small or skewed data say what they stand on, and what cannot be computed
is refused before anything is spent, on every entry point: `PLD.prepare` / `PLD.compile`, `compile`,
`compile --test`, `compare` (CLI and `run_compare`) and `evaluate`.

A label no dev (or test) example has is left out of macro F1, so a student that answers every example right
reads 1.0 (old main: the absent label's F1 of 0 pulled it to 0.667), and a warning names the label; a one-item
dev split and a declared label with no train example are warned about before the first LM call; a test split
of one example, on which no bootstrap interval exists, is refused naming the split before any LM call (old
main: the whole compile, then scipy's message). The warnings about train and dev come from
`pld_optim.evaluation.coverage.warn_coverage`, which `PLD.prepare` (`plan_compile`) calls once the splits are
validated: logger "pld_optim", each warning starting "PLD: " (`pld-optim compare`'s own: "compare: ").
"""

import json
import logging

import dspy
import pytest
from conftest import CUES, LABELS, Classify, make_examples, student_respond, teacher_respond
from harness import cli, cue_rows, scripted_cli, write_config, write_rows  # noqa: F401 - scripted_cli is a fixture
from sklearn.metrics import f1_score

from pld_optim import PLD
from pld_optim.compare import Setup, run_compare, summarize
from pld_optim.datasets.common import split_of
from pld_optim.testing import field_value, scripted_lm

# One cluster, no refinement, no search, no contributions: a scripted compile of a few seconds.
FAST = {"n_clusters": 1, "max_refine_iters": 0, "contribution": False}


@pytest.fixture(autouse=True)
def restore_cache():
    """The CLI points DSPy's cache at each run folder; the tests after these get the cache they had."""
    shared = dspy.cache
    yield
    dspy.cache = shared


def oracle(system: str, user: str) -> dict:
    """A student that answers every example right (its cue word names the label): any macro F1 below 1.0
    is the scoring's doing, not the student's. PLD's data check is answered as the scripted student does."""
    if "Answer yes if the condition holds for the item" in " ".join(system.split()):
        return student_respond(system, user)
    text = f" {field_value(user, 'sentence')} "
    label = next(label for label, cues in CUES.items() if any(f" {c} " in text for c in cues))
    return {"reasoning": "Its cue word names it.", "label": label} if "## reasoning ##" in system else {"label": label}


def always_race(system: str, user: str) -> dict:
    return {"label": "race"}


def without(label: str, examples: list[dspy.Example]) -> list[dspy.Example]:
    return [ex for ex in examples if ex.label != label]


def rows_without(label: str, split: str, n: int = 96) -> list[dict]:
    """The harness's cue rows, less the `label` rows the loader hashes into `split`."""
    return [r for r in cue_rows(n) if not (r["label"] == label and split_of(r["id"]) == split)]


def warnings_from(caplog, prefix: str = "PLD: ") -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith("pld_optim") and r.getMessage().startswith(prefix)]


def coverage_warnings(caplog, prefix: str = "PLD: ") -> str:
    """The warnings warn_coverage logs (every one ends its list with what the dev figures stand on)."""
    found = [w for w in warnings_from(caplog, prefix)
             if "example has the label(s)" in w or "dev examples:" in w or "stand on" in w]
    return "\n".join(found)


# -- Python: PLD.prepare and PLD.compile ----------------------------------------------------------------

def test_python_prepare_warns_about_a_label_no_dev_example_has(caplog):
    teacher = scripted_lm(teacher_respond, "teacher")
    train, dev = make_examples(30), make_examples(12, offset=100)
    caplog.set_level(logging.WARNING, "pld_optim")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        PLD(teacher=teacher, **FAST).prepare(dspy.Predict(Classify), train, dev)
        assert coverage_warnings(caplog) == ""  # every label has 4 dev examples: nothing to say
        PLD(teacher=teacher, **FAST).prepare(dspy.Predict(Classify), train, without("religion", dev))
    said = coverage_warnings(caplog)
    assert "no dev example has the label(s) religion" in said and "over the other 2 labels" in said, said
    assert "stand on 8 dev (gender 4, race 4, religion 0)" in said, said
    assert teacher._engine_spec.calls == 0  # prepare calls no LM


def test_python_compile_scores_dev_over_the_labels_it_has_so_a_perfect_student_reads_1():
    teacher = scripted_lm(teacher_respond, "teacher")
    dev = without("religion", make_examples(12, offset=100))
    with dspy.context(lm=scripted_lm(oracle, "oracle")):
        rules = PLD(teacher=teacher, mining="label", **FAST).compile(
            dspy.Predict(Classify), trainset=make_examples(30), valset=dev).pld_rules
    assert rules.baseline_dev_macro_f1 == 1.0  # old main: 0.667, religion's F1 of 0 in the mean
    assert rules.dev_macro_f1 == 1.0


def test_python_prepare_warns_about_a_one_item_dev_set(caplog):
    teacher = scripted_lm(teacher_respond, "teacher")
    caplog.set_level(logging.WARNING, "pld_optim")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        PLD(teacher=teacher, **FAST).prepare(dspy.Predict(Classify), make_examples(30), make_examples(1, offset=100))
    said = coverage_warnings(caplog)
    assert "stand on 1 dev (gender 0, race 0, religion 1)" in said, said
    assert "the label(s) religion have fewer than 2 dev examples" in said, said
    assert "no dev example has the label(s) gender, race" in said and "over the other label only" in said, said


def test_python_prepare_warns_about_a_declared_label_with_no_train_example(caplog):
    teacher = scripted_lm(teacher_respond, "teacher")
    caplog.set_level(logging.WARNING, "pld_optim")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        PLD(teacher=teacher, **FAST).prepare(dspy.Predict(Classify), without("religion", make_examples(30)),
                                             make_examples(12, offset=100))
    said = coverage_warnings(caplog)
    assert "no train example has the label(s) religion: no rule can be mined for them" in said, said
    assert "no dev example" not in said  # dev has every label: only train is named


# -- CLI compile ----------------------------------------------------------------------------------------

def test_cli_compile_warns_about_a_label_no_dev_example_has_before_any_call(tmp_path, scripted_cli,  # noqa: F811
                                                                             caplog):
    lms = scripted_cli()
    caplog.set_level(logging.WARNING, "pld_optim")
    config = write_config(tmp_path, rows_without("religion", "dev"))
    code, stdout, err = cli("compile", str(config), "--out", str(tmp_path / "run"), "--dry-run")
    assert code == 0, err
    assert "19 dev (gender 12, race 7, religion 0)" in stdout  # the data line
    said = coverage_warnings(caplog)
    assert "no dev example has the label(s) religion" in said and "stand on 19 dev" in said, said
    assert lms.calls("student") == lms.calls("teacher") == 0


def test_cli_compile_scores_dev_over_the_labels_it_has_and_says_so(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli(student=oracle)
    config = write_config(tmp_path, rows_without("religion", "dev"), pld={"mining": "label"})
    out = tmp_path / "run"
    code, stdout, err = cli("compile", str(config), "--out", str(out))
    assert code == 0, err
    line = next(line for line in stdout.splitlines() if line.startswith("dev  macro F1"))
    assert "zero-shot 1.000 | PLD 1.000" in line, line  # old main: 0.667 for a student with no wrong answer
    assert "19 examples, macro over 2 of 3 labels (no example of religion)" in line, line
    assert json.loads((out / "rules.json").read_text())["dev_macro_f1"] == 1.0


def test_cli_compile_warns_about_a_one_item_dev_split(tmp_path, scripted_cli, caplog):  # noqa: F811
    lms = scripted_cli()
    caplog.set_level(logging.WARNING, "pld_optim")
    code, _, err = cli("compile", str(write_config(tmp_path, data={"dev_limit": 1})), "--out", str(tmp_path / "run"),
                       "--dry-run")
    assert code == 0, err
    said = coverage_warnings(caplog)
    assert "stand on 1 dev" in said and "fewer than 2 dev examples" in said, said
    assert lms.calls("student") == lms.calls("teacher") == 0


def test_cli_compile_warns_about_a_declared_label_with_no_train_example(tmp_path, scripted_cli,  # noqa: F811
                                                                        caplog):
    scripted_cli()
    caplog.set_level(logging.WARNING, "pld_optim")
    config = write_config(tmp_path, rows_without("religion", "train"))
    code, stdout, err = cli("compile", str(config), "--out", str(tmp_path / "run"), "--dry-run")
    assert code == 0, err
    assert "35 train (gender 17, race 18, religion 0)" in stdout
    assert "no train example has the label(s) religion" in coverage_warnings(caplog), coverage_warnings(caplog)


@pytest.mark.parametrize("dry", [(), ("--dry-run",)])
def test_cli_compile_test_refuses_a_one_item_test_split_before_any_call(tmp_path, scripted_cli, dry):  # noqa: F811
    lms = scripted_cli()
    out = tmp_path / "run"
    code, _, err = cli("compile", str(write_config(tmp_path, data={"test_limit": 1})), "--out", str(out), "--test",
                       *dry)
    assert code == 2 and "--test: the test split has 1 example" in err and "data.test_limit" in err, err
    assert lms.calls("student") == lms.calls("teacher") == 0  # old main: the whole compile, then scipy's message
    assert not (out / "rules.json").exists()


# -- CLI compare ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dry", [(), ("--dry-run",)])
def test_cli_compare_refuses_a_one_item_test_split_before_any_call(tmp_path, scripted_cli, dry):  # noqa: F811
    lms = scripted_cli()
    out = tmp_path / "cmp"
    code, _, err = cli("compare", str(write_config(tmp_path, data={"test_limit": 1})), "--out", str(out),
                       "--optimizers", "zero-shot,pld", *dry)
    assert code == 2 and "compare: the test split has 1 example" in err and "data.test_limit" in err, err
    assert lms.calls("student") == lms.calls("teacher") == 0  # old main: dev check, PLD's compile, then scipy
    assert not (out / "pld-seed0.json").exists() and not (out / "zero-shot-seed0.json").exists()


def test_cli_compare_scores_test_over_the_labels_it_has_and_says_so(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli(student=oracle)
    out = tmp_path / "cmp"
    code, _, err = cli("compare", str(write_config(tmp_path, rows_without("religion", "test"))), "--out", str(out),
                       "--optimizers", "zero-shot,cot")
    assert code == 0, err  # current main: KeyError 'religion' in the summary, after every optimizer ran
    markdown = (out / "compare.md").read_text()
    assert "**test figures stand on**: 10 examples, macro over 2 of 3 labels (no example of religion)" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| zero-shot |"))
    assert row.split("|")[2].strip() == "1.000", row  # a student with no wrong answer
    assert "| optimizer | gender | race |" in markdown  # per-class F1 of the labels measured; none for religion
    assert json.loads((out / "zero-shot-seed0.json").read_text())["per_class_f1"] == {"gender": 1.0, "race": 1.0}


def test_cli_compare_warns_about_dev_and_train_before_any_call(tmp_path, scripted_cli, caplog):  # noqa: F811
    lms = scripted_cli()
    caplog.set_level(logging.WARNING, "pld_optim")
    rows = [r for r in rows_without("religion", "dev") if not (r["label"] == "gender" and split_of(r["id"]) == "train")]
    code, _, err = cli("compare", str(write_config(tmp_path, rows)), "--out", str(tmp_path / "cmp"), "--dry-run")
    assert code == 0, err
    said = coverage_warnings(caplog, "compare: ")
    assert "no train example has the label(s) gender" in said and "no dev example has the label(s) religion" in said
    assert "stand on 19 dev (gender 12, race 7, religion 0)" in said, said
    assert lms.calls("student") == lms.calls("teacher") == 0


# -- Python compare: run_compare and summarize ----------------------------------------------------------

def test_python_run_compare_refuses_a_one_item_test_split_before_any_call(tmp_path):
    student, teacher = scripted_lm(student_respond, "student"), scripted_lm(teacher_respond, "teacher")
    setup = Setup(program=dspy.Predict(Classify), train=make_examples(24), dev=make_examples(9, 100),
                  test=make_examples(1, 200), student=student, teacher=teacher, threads=1, pld_kwargs=FAST)
    with pytest.raises(ValueError, match=r"compare: the test split has 1 example; the paired bootstrap interval "
                                         r"needs at least 2"):
        run_compare(setup, ["zero-shot", "pld"], tmp_path / "cmp")
    assert student._engine_spec.calls == teacher._engine_spec.calls == 0
    assert not (tmp_path / "cmp").exists()


def test_python_summarize_shows_a_label_no_test_example_has_as_absent(tmp_path):
    setup = Setup(program=dspy.Predict(Classify), train=make_examples(24), dev=make_examples(9, 100),
                  test=without("gender", make_examples(9, 200)), student=scripted_lm(oracle, "oracle"),
                  teacher=scripted_lm(teacher_respond, "teacher"), threads=1)
    out = tmp_path / "cmp"
    rows = summarize(run_compare(setup, ["zero-shot", "cot"], out), out, LABELS)
    for row in rows:
        assert row["labels_absent"] == ["gender"] and list(row["per_class_f1"]) == ["race", "religion"], row
    assert rows[0]["macro_f1"] == 1.0  # zero-shot, a student with no wrong answer


# -- evaluate -------------------------------------------------------------------------------------------

def test_evaluate_scores_a_split_over_the_labels_it_has(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli(student=oracle)
    config = write_config(tmp_path, rows_without("religion", "test"))
    code, stdout, err = cli("evaluate", str(config), "--program", "none", "--split", "test")
    assert code == 0, err
    score = json.loads(stdout)
    assert score["macro_f1"] == 1.0 and score["accuracy"] == 1.0  # old main: 0.667
    assert score["labels_absent"] == ["religion"] and score["support"]["religion"] == 0
    assert set(score["per_class_f1"]) == {"gender", "race"}


def test_evaluate_a_file_of_one_label_reads_that_labels_f1(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli(student=oracle)
    data = write_rows(tmp_path / "held_out.csv", [r for r in cue_rows(12, offset=500) if r["label"] == "gender"])
    code, stdout, err = cli("evaluate", str(write_config(tmp_path)), "--program", "none", "--data", str(data))
    assert code == 0, err
    score = json.loads(stdout)
    assert score["n"] == 4 and score["macro_f1"] == 1.0, score  # old main: 0.333
    assert score["labels_scored"] == ["gender"] and score["labels_absent"] == ["race", "religion"]


def test_evaluate_averages_a_wrong_student_over_the_labels_present_only(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli(student=always_race)
    rows = rows_without("religion", "test")
    code, stdout, err = cli("evaluate", str(write_config(tmp_path, rows)), "--program", "none", "--split", "test")
    assert code == 0, err
    score = json.loads(stdout)
    gold = [r["label"] for r in rows if split_of(r["id"]) == "test"]
    expected = f1_score(gold, ["race"] * len(gold), labels=["gender", "race"], average="macro", zero_division=0)
    assert score["macro_f1"] == pytest.approx(expected)  # old main divided by 3, religion's 0 included
    assert score["per_class_f1"] == {"gender": 0.0, "race": pytest.approx(2 * 7 / (7 + 10))}
