"""Bad input ends in a clear error naming the file, row, field or setting, before any LM call: data files,
configs (an empty section is not read as absent), rules.json, model strings and hosts, splits, and CLI
arguments that meant something else."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import dspy
import pytest
import yaml
from conftest import Sentiment

from pld_optim import PLD, RuleSet
from pld_optim.cli import main
from pld_optim.cli.config import DataConfig, load_config, load_split
from pld_optim.datasets import DataError, load_contract_nli, load_generic, load_stereoset
from pld_optim.lm.factory import make_lm
from pld_optim.lm.gguf import resolve_gguf
from pld_optim.lm.ollama import ollama_host

QUICKSTART = Path(__file__).parents[2] / "pld_optim" / "configs" / "quickstart.yaml"


def write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


GENERIC = dict(inputs=["text"], label="label", labels=["pos", "neg"])
RULES_JSON = {"predictor": "p", "label_field": "label", "labels": ["a", "b"], "base_instructions": "x", "rules": []}


def _seed_lines() -> tuple[int, int]:
    """Where the quickstart config sets seed:, and the line a second seed: appended after it lands on."""
    lines = QUICKSTART.read_text().splitlines()
    return next(n for n, line in enumerate(lines, 1) if line.startswith("seed:")), len(lines) + 1


def rules_file(t, **fields):
    return write(t, "rules.json", json.dumps({**RULES_JSON, **fields}))


def stereoset_item(**fields):
    item = {"id": "x1", "bias_type": "race", "context": "c", "sentences": [
        {"sentence": "s", "gold_label": "stereotype"}]}
    return json.dumps({"data": {"intrasentence": [{**item, **fields}]}})

CASES = {
    "json: malformed": (lambda t: load_stereoset(write(t, "s.json", '{"data": {"intrasentence": [}')),
                        r"s\.json: not valid JSON \(line 1, column 29\)"),
    "json: wrong layout": (lambda t: load_stereoset(write(t, "s.json", '{"items": []}')),
                           r"s\.json: expected \{'data'"),
    "jsonl: malformed row": (lambda t: load_generic(write(t, "d.jsonl", '{"text": "a", "label": "pos"}\n{"text": \n'),
                                                    **GENERIC), r"d\.jsonl line 2: malformed JSON"),
    "jsonl: row not an object": (lambda t: load_generic(write(t, "d.jsonl", '["a", "pos"]\n'), **GENERIC),
                                 r"d\.jsonl line 1: expected a JSON object, got list"),
    "csv: extra column": (lambda t: load_generic(write(t, "d.csv", "text,label\na,pos\nb,neg,oops\n"), **GENERIC),
                          r"d\.csv line 3: 2 columns expected"),
    "csv: short row": (lambda t: load_generic(write(t, "d.csv", "text,label\na,pos\nb\n"), **GENERIC),
                       r"d\.csv line 3: 2 columns expected"),
    "non-UTF-8 bytes": (lambda t: load_generic(write(t, "d.csv", b"text,label\ncaf\xe9,pos\n"), **GENERIC),
                        r"d\.csv: not UTF-8 text \(byte 14"),
    "missing input field": (lambda t: load_generic(write(t, "d.csv", "text,label\n,pos\n"), **GENERIC),
                            r"d\.csv row 2: no value \(or only whitespace\) in column\(s\) \['text'\]"),
    "whitespace-only input field": (lambda t: load_generic(write(t, "d.csv", 'text,label\n" \t ",pos\n'), **GENERIC),
                                    r"d\.csv row 2: no value \(or only whitespace\) in column\(s\) \['text'\]"),
    "missing label": (lambda t: load_generic(write(t, "d.jsonl", '{"text": "a"}\n'), **GENERIC),
                      r"d\.jsonl row 1: no value \(or only whitespace\) in column\(s\) \['label'\]"),
    "unknown label": (lambda t: load_generic(write(t, "d.csv", "text,label\na,pos\nb,meh\n"), **GENERIC),
                      r"d\.csv row 3: label 'meh' in column 'label' is not one of \['pos', 'neg'\]"),
    "duplicate ids": (lambda t: load_generic(write(t, "d.csv", "id,text,label\n1,a,pos\n1,b,neg\n"), id_field="id",
                                             **GENERIC), r"d\.csv: rows 2 and 3 have the same id '1'"),
    "unsupported file type": (lambda t: load_generic(write(t, "d.xlsx", "x"), **GENERIC),
                              r"d\.xlsx: unsupported file type '\.xlsx'"),
    "data file not found": (lambda t: load_generic(t / "nope.csv", **GENERIC), r"data file not found: .*nope\.csv"),
    "stereoset: unknown bias type": (lambda t: load_stereoset(write(t, "s.json", json.dumps({"data": {
        "intrasentence": [{"id": "x1", "bias_type": "age", "context": "c", "sentences": []}]}}))),
        r"intrasentence item 0 \(id x1\): unknown bias_type 'age'"),
    "stereoset: missing field": (lambda t: load_stereoset(write(t, "s.json", json.dumps({"data": {
        "intrasentence": [{"id": "x1", "bias_type": "race", "sentences": []}]}}))),
        r"item 0 \(id x1\): missing field 'context'"),
    "stereoset: whitespace-only context": (lambda t: load_stereoset(write(t, "s.json", stereoset_item(context="  "))),
                                           r"item 0 \(id x1\): the context is empty or only whitespace"),
    "stereoset: unknown split": (lambda t: load_stereoset(write(t, "s.json", stereoset_item(split="validation"))),
                                 r"item 0 \(id x1\): split 'validation' is not one of \('train', 'dev', 'test'\)"),
    "contract_nli: unknown label": (lambda t: load_contract_nli(write(t, "c.json", json.dumps({
        "labels": {"nda-1": {"hypothesis": "h"}},
        "documents": [{"id": 7, "text": "t", "spans": [[0, 1]],
                       "annotation_sets": [{"annotations": {"nda-1": {"choice": "Maybe", "spans": []}}}]}]}))),
        r"document 0 \(id 7\) hypothesis nda-1: label 'Maybe' is not one of"),
    "split name typo": (lambda t: load_split(DataConfig(dataset="stereoset", path=str(write(t, "s.json", json.dumps(
        {"data": {"intrasentence": []}})))), "valid"), r"unknown split 'valid'"),
    "split name typo, generic": (lambda t: load_generic(write(t, "d.csv", "text,label\n"), split="valid", **GENERIC),
                                 r"unknown split 'valid'"),
    "split name typo, stereoset rows": (lambda t: load_stereoset(write(t, "s.json", stereoset_item()), split="tst"),
                                        r"unknown split 'tst'"),
    "config: unknown key": (lambda t: load_config(write(t, "c.yaml", QUICKSTART.read_text() + "\nsaerch: {}\n")),
                            r"c\.yaml: invalid config: saerch: Extra inputs are not permitted"),
    "config: bad value": (lambda t: load_config(write(t, "c.yaml", QUICKSTART.read_text().replace(
        "max_refine_iters: 1", "max_refine_iters: -1"))),
        r"invalid config: pld: max_refine_iters=-1: Input should be greater"),
    "config: duplicated key": (lambda t: load_config(write(t, "c.yaml", QUICKSTART.read_text() + "seed: 1\n")),
                               r"c\.yaml: not valid YAML: [\s\S]*the key 'seed' is given twice \(lines "
                               + r"{} and {}\)".format(*_seed_lines())),
    "config: duplicated nested key": (lambda t: load_config(write(t, "c.yaml", re.sub(
        r"^(  max_clusters: .*)$", r"\1\n  max_clusters: 3", QUICKSTART.read_text(), count=1, flags=re.M))),
        r"the key 'max_clusters' is given twice"),  # YAML would silently keep the second value
    "config: not YAML": (lambda t: load_config(write(t, "c.yaml", "data: [unclosed\n")), r"c\.yaml: not valid YAML"),
    "config: fractions": (lambda t: load_config(write(t, "c.yaml", QUICKSTART.read_text().replace(
        "framing: bias_type", "framing: bias_type\n  fractions: [0.5, 0.5, 0.5]"))), r"data\.fractions: .*sum to 1"),
    "model string without provider": (lambda t: make_lm("gpt4"), r"invalid model string 'gpt4': use provider/model"),
    "unknown local model": (lambda t: resolve_gguf("llama-9000"), r"unknown local model 'llama-9000'"),
    "ollama api_base: bad port": (lambda t: ollama_host("http://host:abc"),
                                  r"api_base='http://host:abc' is not a host\[:port\] or URL"),
    "ollama api_base: a space": (lambda t: ollama_host("my host"), r"api_base='my host' is not a host\[:port\]"),
    "rules.json: unknown key": (lambda t: RuleSet.load(rules_file(t, usage=[], colour="red")),
                                r"colour\n  Extra inputs are not permitted"),
    "rules.json: selection names a missing rule": (lambda t: RuleSet.load(rules_file(
        t, selection=[{"rule_id": "R9"}], usage=[])), r"selection names rule 'R9'"),
    "rules.json: not JSON": (lambda t: RuleSet.load(write(t, "rules.json", "{oops")), r"rules\.json: not valid JSON"),
    "rules.json: unknown format_version": (lambda t: RuleSet.load(rules_file(t, format_version=3)),
                                           r"format_version 3 is not one this pld-optim reads \(1, 2\)"),
    "rules.json: duplicated rule ids": (lambda t: RuleSet.load(rules_file(
        t, rules=[{"id": "R1", "text": "t"}, {"id": "R1", "text": "u"}])), r"rule ids \['R1'\] occur more than once"),
    "rules.json: a label not in labels": (lambda t: RuleSet.load(rules_file(
        t, rules=[{"id": "R1", "text": "t", "label": "c"}])), r"rules carry labels \['c'\] that are not among labels"),
    "rules.json: a folder": (lambda t: RuleSet.load(t), r"is a folder; give its rules\.json"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_named(name, tmp_path):
    build, message = CASES[name]
    with pytest.raises((ValueError, DataError, FileNotFoundError)) as err:
        build(tmp_path)
    assert re.search(message, str(err.value)), f"{name}: {err.value}"


def test_ollama_host_names_the_environment_variable_it_read(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "bad host:x")
    with pytest.raises(ValueError, match=r"OLLAMA_HOST='bad host:x' is not a host\[:port\] or URL"):
        ollama_host()
    monkeypatch.setenv("OLLAMA_HOST", "gpu-box:11434")
    assert ollama_host() == "http://gpu-box:11434" and ollama_host("http://x:1/v1/") == "http://x:1"


def test_rules_json_format_version_1_still_loads(tmp_path):
    assert RuleSet.load(rules_file(tmp_path, format_version=1)).format_version == 1


def test_cli_arguments_that_meant_something_else(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(QUICKSTART), "--program", "none", "--limit", "0"])
    assert exit_.value.code == 2 and "must be at least 1" in capsys.readouterr().err

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["compile", str(QUICKSTART), "--out", str(blocker / "run"), "--dry-run"]) == 2
    assert f"{blocker} is a file, not a folder" in capsys.readouterr().err

    other = dspy.Predict("premise, hypothesis -> answer")
    other.save(str(tmp_path / "other.json"))
    assert main(["evaluate", str(QUICKSTART), "--program", str(tmp_path / "other.json")]) == 2
    assert "compiled for another task" in capsys.readouterr().err

    for argv, message in ((["compare", str(QUICKSTART), "--out", str(tmp_path / "c"), "--seeds", "0,a"],
                           "expected a whole number, got 'a'"),
                          (["compare", str(QUICKSTART), "--out", str(tmp_path / "c"), "--optimizers", "pld,textgrad"],
                           "unknown optimizer(s) ['textgrad']")):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--dry-run"])
        assert exit_.value.code == 2 and message in capsys.readouterr().err, argv
    assert not (tmp_path / "c").exists()


def test_an_empty_yaml_section_is_not_read_as_absent(tmp_path):
    text = QUICKSTART.read_text()
    head, _, tail = text.partition("search:\n")
    body = "".join(line + "\n" for line in tail.splitlines() if not line.startswith("  "))
    path = tmp_path / "c.yaml"
    path.write_text(head + "search:\n" + body)  # the key is there, its settings deleted
    with pytest.raises(ValueError, match=r"search: the section is empty; write `search: \{\}`"):
        load_config(path)
    path.write_text(head + "search: {}\n" + body)
    assert load_config(path).search is not None


def _never_called(*args):
    raise AssertionError("an LM was called before the input was checked")


@pytest.mark.parametrize("train, dev, message", [
    ([], [dspy.Example(text="a", label="pos")], "the train split is empty"),
    ([dspy.Example(text=f"t{i}", label="pos") for i in range(4)], [dspy.Example(text="a", label="neg")],
     "every train example has the label 'pos'"),
    ([dspy.Example(text="a", label="pos"), dspy.Example(text="b", label="neg")], [], "the dev split is empty"),
    ([dspy.Example(text="a", label="pos"), dspy.Example(text="b", label="bad")], None,
     "train row 1 has label 'bad'"),
    ([dspy.Example(text="a", label="pos"), dspy.Example(text=" ", label="neg")], None,
     r"train row 1 has no value \(or only whitespace\) for field\(s\) \['text'\]"),
    # Dev items that are train items by content (another id, other spacing) would score what was mined.
    ([dspy.Example(id="1", text="a b", label="pos"), dspy.Example(id="2", text="c", label="neg")],
     [dspy.Example(id="9", text=" a  b", label="pos")],
     r"1 dev examples have the same inputs as train examples.*allow_overlap"),
])
def test_bad_splits_fail_before_any_lm_call(train, dev, message):
    from pld_optim.testing import scripted_lm

    teacher = scripted_lm(_never_called)
    with dspy.context(lm=scripted_lm(_never_called)):
        with pytest.raises(ValueError, match=message):
            PLD(teacher=teacher).compile(dspy.Predict(Sentiment), trainset=train, valset=dev)


def _cli(*args):
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    return subprocess.run([sys.executable, "-m", "pld_optim", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_unreachable_ollama_stops_compile_before_the_teacher(tmp_path):
    cfg = yaml.safe_load(QUICKSTART.read_text())
    cfg["student"] = {"model": "ollama_chat/gemma3:4b", "api_base": "http://127.0.0.1:9", "max_tokens": 8}
    path = write(tmp_path, "c.yaml", yaml.safe_dump(cfg))
    result = _cli("compile", str(path), "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Start it with `ollama serve`, then `ollama pull gemma3:4b`" in result.stderr
    assert not (tmp_path / "o" / "mined.jsonl").exists()


def test_pickled_programs_are_refused(tmp_path):
    pkl = write(tmp_path, "program.pkl", b"\x80\x04K\x01.")
    result = _cli("evaluate", "quickstart", "--program", str(pkl), "--limit", "1")
    assert result.returncode == 2 and "pickled programs can run code and are refused" in result.stderr


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "pld_optim", "--help"], capture_output=True, text=True).stdout
    for command in ("compile", "quickstart", "evaluate", "ablate", "pick", "compare", "report"):
        assert command in out
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for command in ("compile", "quickstart", "evaluate", "ablate", "pick", "compare", "report"):
        assert f"pld-optim {command} " in readme
