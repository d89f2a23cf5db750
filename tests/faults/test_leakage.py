"""The same input in two splits (under other ids, so no id check finds it) is found by content before any LM
call, on every entry point that reads two splits: `PLD.compile`, `compile`, `compile --test`, `compare` and
`evaluate`. It is an error naming pld.allow_overlap; with it, a warning, and the counts are reported
(rules.json, report.md, compare.md, evaluate's JSON). PLD's own dev split, carved from train when no valset
is given, takes a share of any loader split, not all of one."""

import json
import logging
from pathlib import Path

import dspy
import pytest
from conftest import Classify, Sentiment, make_examples, student_respond, teacher_respond
from harness import cli, copies, cue_rows, scripted_cli, write_config, write_rows  # noqa: F401 - a fixture

from pld_optim import PLD
from pld_optim.testing import scripted_lm

CONFIG = Path(__file__).parents[2] / "pld_optim" / "configs" / "quickstart.yaml"
ALLOW = {"pld": {"n_clusters": 1, "max_refine_iters": 0, "contribution": False, "allow_overlap": True}}


def renamed(examples, prefix="copy"):
    return [ex.copy(id=f"{prefix}-{ex.id}") for ex in examples]


def test_python_valset_inside_the_trainset_is_refused_before_any_call_and_counted_when_allowed(caplog):
    train = make_examples(30)
    teacher, student = scripted_lm(teacher_respond, "teacher"), scripted_lm(student_respond, "student")
    with dspy.context(lm=student):
        with pytest.raises(ValueError, match=r"10 dev examples have the same inputs as train examples.*allow_overlap"):
            PLD(teacher=teacher).compile(dspy.Predict(Classify), trainset=train, valset=renamed(train[:10]))
        assert teacher._engine_spec.calls == student._engine_spec.calls == 0  # old main: dev F1 1.0, no word
        caplog.set_level(logging.WARNING, "pld_optim")
        compiled = PLD(teacher=teacher, n_clusters=1, max_refine_iters=0, allow_overlap=True).compile(
            dspy.Predict(Classify), trainset=train, valset=renamed(train[:10]))
    assert compiled.pld_rules.data_overlap == {"train/dev": 10}
    assert "10 dev examples share their inputs with train examples" in caplog.text


def test_cli_compile_finds_train_items_in_dev_and_reports_them_when_allowed(tmp_path, scripted_cli):  # noqa: F811
    lms = scripted_cli()
    rows = cue_rows()
    rows += copies(rows, "dev", 4)
    code, _, err = cli("compile", str(write_config(tmp_path, rows)), "--out", str(tmp_path / "a"), "--dry-run")
    assert code == 2 and "4 dev examples have the same inputs as train examples" in err, err
    assert lms.calls("teacher") == lms.calls("student") == 0
    out = tmp_path / "b"
    code, stdout, err = cli("compile", str(write_config(tmp_path, rows, **ALLOW)), "--out", str(out))
    assert code == 0, err
    assert "data overlap (allowed by pld.allow_overlap): {'train/dev': 4}" in stdout
    assert json.loads((out / "rules.json").read_text())["data_overlap"] == {"train/dev": 4}
    assert "**Overlap between splits** (examples whose inputs occur in both): train/dev 4." in \
        (out / "report.md").read_text()


def test_cli_compile_test_finds_train_items_in_test(tmp_path, scripted_cli):  # noqa: F811
    lms = scripted_cli()
    rows = cue_rows()
    code, _, err = cli("compile", str(write_config(tmp_path, rows + copies(rows, "test", 2))), "--out",
                       str(tmp_path / "o"), "--test", "--dry-run")
    assert code == 2 and "--test: 2 test examples have the same inputs as train examples ({'train/test': 2}" in err, err
    assert lms.calls("student") == 0


def test_compare_finds_train_items_in_test_before_any_call(tmp_path, scripted_cli):  # noqa: F811
    lms = scripted_cli()
    rows = cue_rows()
    rows += copies(rows, "test", 3)
    out = tmp_path / "cmp"
    code, _, err = cli("compare", str(write_config(tmp_path, rows)), "--out", str(out), "--optimizers", "zero-shot")
    assert code == 2 and "compare: the splits share inputs ({'train/test': 3}" in err, err
    assert lms.calls("student") == 0 and not out.exists()  # old main: scored test items it trained on, exit 0
    code, _, err = cli("compare", str(write_config(tmp_path, rows, **ALLOW)), "--out", str(out), "--optimizers",
                       "zero-shot")
    assert code == 0, err
    assert "split overlap (pld.allow_overlap)" in (out / "compare.md").read_text()


def test_evaluate_finds_train_items_in_a_held_out_file(tmp_path, scripted_cli):  # noqa: F811
    lms = scripted_cli()
    rows = cue_rows()
    config = write_config(tmp_path, rows)
    from pld_optim.datasets.common import split_of

    held = [{**r, "id": f"held-{r['id']}"} for r in rows if split_of(r["id"]) == "train"][:5]
    held += [{"id": f"new{i}", "sentence": f"Fresh item {i}: the wife was mentioned.", "label": "gender"}
             for i in range(3)]
    path = write_rows(tmp_path / "held.csv", held)
    code, _, err = cli("evaluate", str(config), "--program", "none", "--data", str(path))
    assert code == 2 and "--data" in err and "{'train/data': 5}" in err and "pld.allow_overlap" in err, err
    assert lms.calls("student") == 0  # old main: a score inflated by train items, exit 0
    code, stdout, err = cli("evaluate", str(write_config(tmp_path, rows, name="allow.yaml", **ALLOW)), "--program",
                            "none", "--data", str(path))
    assert code == 0, err
    assert json.loads(stdout)["data_overlap"] == {"train/data": 5}


def test_evaluate_finds_train_items_in_the_configs_own_test_split(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    rows = cue_rows()
    code, _, err = cli("evaluate", str(write_config(tmp_path, rows + copies(rows, "test", 2))), "--program", "none")
    assert code == 2, err
    assert "the test split: 2 test examples have the same inputs as train examples" in err, err
    assert "'train/test': 2" in err, err
    code, stdout, err = cli("evaluate", str(write_config(tmp_path, rows + copies(rows, "test", 2))), "--program",
                            "none", "--split", "train")
    assert code == 0, err  # scoring the train split itself is what was asked for


def test_duplicates_within_one_split_are_reported(caplog):
    train = make_examples(30)
    train += [train[0].copy(id="again-0"), train[1].copy(id="again-1", label="race")]  # train[1] is religion
    caplog.set_level(logging.WARNING, "pld_optim")
    PLD().prepare(dspy.Predict(Classify), train, make_examples(12, offset=100))
    assert "2 train rows repeat the inputs of an earlier row under another id" in caplog.text
    assert "first: rows 0 and 30" in caplog.text and "1 of them with another label" in caplog.text


def test_duplicates_within_one_split_are_counted_in_rules_json():
    train = make_examples(30)
    train += [train[0].copy(id="again-0")]
    run = PLD().prepare(dspy.Predict(Classify), train, make_examples(12, offset=100))
    assert run.overlap == {"train/train": 1}


def test_allow_overlap_goes_on_and_records_the_overlap():
    train = [dspy.Example(id="1", text="a b", label="pos"), dspy.Example(id="2", text="c", label="neg")]
    dev = [dspy.Example(id="9", text="a b", label="pos")]
    run = PLD(allow_overlap=True).prepare(dspy.Predict(Sentiment), train, dev)
    assert run.overlap == {"train/dev": 1} and len(run.dev) == 1


def test_no_valset_carves_a_quarter_of_any_loader_split():
    from pld_optim.cli.config import build_program, load_config, load_split

    cfg = load_config(str(CONFIG))
    for split in ("train", "dev", "test"):
        rows = load_split(cfg.data, split)
        run = PLD().prepare(build_program(cfg.data), rows)  # no valset: PLD carves its own dev
        share = len(run.dev) / len(rows)
        assert 0.1 < share < 0.4, (split, len(run.dev), len(rows))  # was 48% of train and 0 of dev and test
        assert len(run.train) + len(run.dev) == len(rows)
