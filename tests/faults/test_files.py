"""Real files are read as the csv and json modules expect, by every reader: Excel's "CSV UTF-8" (a
byte-order mark), Unicode line separators inside JSON strings and CSV fields, files joined with `cat`, a
Windows .CSV, YAML configs, rules.json and program.json saved by an editor; inputs that only look empty
(whitespace, zero-width characters) are refused as empty ones are."""

import json

import dspy
import pytest
import yaml
from conftest import Classify, make_examples, student_respond, teacher_respond
from harness import cli, cue_rows, scripted_cli, write_config, write_rows  # noqa: F401 - scripted_cli is a fixture

from pld_optim import PLD
from pld_optim.datasets import DataError, load_contract_nli, load_generic
from pld_optim.testing import scripted_lm

SEPARATORS = "\u2028\u2029\x85\x1c\x0b\x0c"  # str.splitlines splits at each; csv and json do not


def evaluate_n(config, path) -> int:
    code, stdout, err = cli("evaluate", str(config), "--program", "none", "--data", str(path))
    assert code == 0, err
    return json.loads(stdout)["n"]


def test_excel_csv_utf8_with_separators_and_newlines_inside_fields(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    rows = [{"id": f"x{i}", "sentence": f"Held {i}: the she{SEPARATORS}and\nmore was mentioned.", "label": "gender"}
            for i in range(4)]
    path = write_rows(tmp_path / "held.csv", rows, encoding="utf-8-sig")  # what Excel's "CSV UTF-8" writes
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert evaluate_n(write_config(tmp_path), path) == 4
    read = load_generic(path, inputs=["sentence"], label="label", id_field="id")
    assert [ex.sentence for ex in read] == [r["sentence"] for r in rows] and read[0].id == "x0"  # not "\ufeffid"


def test_jsonl_with_separators_inside_strings_and_files_joined_with_cat(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    part = "".join(json.dumps({"id": f"j{i}", "sentence": f"Held {i}:{SEPARATORS}mosque", "label": "religion"},
                              ensure_ascii=False) + "\n" for i in range(3))
    other = "".join(json.dumps({"id": f"k{i}", "sentence": f"Other {i}: skin", "label": "race"}) + "\n"
                    for i in range(2))
    path = tmp_path / "held.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + part.encode() + b"\xef\xbb\xbf" + other.encode())  # cat a.jsonl b.jsonl
    assert evaluate_n(write_config(tmp_path), path) == 5
    assert load_generic(path, inputs=["sentence"], label="label")[0].sentence == f"Held 0:{SEPARATORS}mosque"


@pytest.mark.parametrize("value", ["   \t ", "\u200b", "\ufeff \u2060", "\u00a0\u00ad"])
def test_inputs_that_only_look_empty_are_refused_by_every_reader(tmp_path, value):
    rows = cue_rows(12)
    rows[5]["sentence"] = value
    path = write_rows(tmp_path / "d.csv", rows)
    with pytest.raises(DataError, match=r"d\.csv row 7: no value \(or only whitespace\) in column\(s\) \['sentence'\]"):
        load_generic(path, inputs=["sentence"], label="label", id_field="id")
    train = make_examples(30)
    train[3] = train[3].copy(sentence=value)
    with pytest.raises(ValueError, match=r"train row 3 has no value \(or only whitespace\) for field\(s\) "
                                         r"\['sentence'\]"):
        PLD(teacher=scripted_lm(teacher_respond)).prepare(dspy.Predict(Classify), train, make_examples(6, 100))


def test_contract_nli_with_a_blank_hypothesis_names_it(tmp_path):
    doc = {"labels": {"nda-1": {"hypothesis": "\u200b "}},
           "documents": [{"id": 7, "text": "The receiving party shall not disclose.", "spans": [[0, 20]],
                          "annotation_sets": [{"annotations": {"nda-1": {"choice": "Entailment", "spans": [0]}}}]}]}
    (tmp_path / "c.json").write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"document 0 \(id 7\) hypothesis nda-1: the hypothesis text is missing, empty"):
        load_contract_nli(tmp_path / "c.json")  # old main: sklearn's "empty vocabulary", naming nothing


def test_a_windows_csv_and_a_yaml_config_saved_with_a_bom(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    path = write_rows(tmp_path / "HELD.CSV", cue_rows(6, offset=300))
    config = write_config(tmp_path)
    config.write_bytes(b"\xef\xbb\xbf" + config.read_bytes())
    assert evaluate_n(config, path) == 6  # old main: "unsupported file type '.CSV'"


def test_yaml_scalars_mean_what_they_say(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    rows = [{"id": f"r{i}", "sentence": f"Item {i} {'mother' if i % 2 else 'country'}", "label": "yes" if i % 2 else
             "no"} for i in range(40)]
    config = write_config(tmp_path, rows, data={"labels": ["yes", "no"]})
    text = config.read_text().replace("- 'yes'", "- yes").replace("- 'no'", "- no").replace("seed: 0", "seed: 010")
    config.write_text(text)
    assert "- yes" in text and "seed: 010" in text
    from pld_optim.cli.config import load_config

    cfg = load_config(config)
    assert cfg.data.labels == ["yes", "no"] and cfg.seed == 10  # YAML 1.1: [True, False] and the octal 8
    code, stdout, err = cli("compile", str(config), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 0, err


def test_rules_json_and_program_json_saved_by_an_editor_with_a_bom(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    config, out = write_config(tmp_path), tmp_path / "run"
    assert cli("compile", str(config), "--out", str(out))[0] == 0
    for name in ("rules.json", "program.json"):
        (out / name).write_bytes(b"\xef\xbb\xbf" + (out / name).read_bytes())  # Notepad's "UTF-8 with BOM"
    code, stdout, err = cli("evaluate", str(config), "--program", str(out), "--split", "dev")
    assert code == 0, err  # old main: "UTF-8 byte order mark (BOM) is not supported", naming no file
    assert json.loads(stdout)["macro_f1"] == 1.0
    code, _, err = cli("evaluate", str(config), "--program", "none", "--rules", str(out / "rules.json"))
    assert code == 0, err


def test_mined_rules_with_line_separators_are_reused_on_resume(tmp_path):
    train = [ex.copy(sentence=ex.sentence.replace(" was ", " was\u2028\u2029 ")) for ex in make_examples(30)]

    def compile_once():
        lm = scripted_lm(teacher_respond, "teacher")
        with dspy.context(lm=scripted_lm(student_respond, "student")):
            PLD(teacher=lm, mining="label", n_clusters=1, max_refine_iters=0, out_dir=tmp_path).compile(
                dspy.Predict(Classify), trainset=train, valset=make_examples(12, offset=100))
        return lm._engine_spec.calls

    first = compile_once()
    text = (tmp_path / "mined.jsonl").read_text(encoding="utf-8")
    assert "\u2028\u2029" in text  # each record holds the example as the teacher saw it, separators and all
    mined = [json.loads(line) for line in text.split("\n") if line]
    assert len(mined) == 30
    assert compile_once() == first - len(mined)  # only the merges again: every mined rule was read back whole


def test_a_yaml_file_is_not_data(tmp_path):
    """A config is YAML, and the data a config names are CSV or JSON lines: a YAML data file is named."""
    path = tmp_path / "d.yaml"
    path.write_text(yaml.safe_dump([{"sentence": "a", "label": "gender"}]))
    with pytest.raises(DataError, match=r"d\.yaml: unsupported file type '\.yaml'; use \.csv or \.jsonl"):
        load_generic(path, inputs=["sentence"], label="label")
