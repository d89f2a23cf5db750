"""Misuse that used to finish with exit code 0 and a wrong result: reused output folders, answers matched
to the wrong label, settings that failed only after the teacher was paid, lossy writes, colliding splits,
arguments that meant something else. Each case ends in a correct result or a clear error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dspy
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond

from pld_optim import PLD, RuleSet
from pld_optim.cli import main
from pld_optim.pld import split_dev
from pld_optim.run_folder import LOCK, atomic_write_text
from pld_optim.task import normalize_label, resolve_task
from pld_optim.testing import scripted_lm

CONFIG = Path(__file__).parents[2] / "pld_optim" / "configs" / "quickstart.yaml"


# -- answers are matched to a label only when they name exactly one --------------------------------------

@pytest.mark.parametrize("labels, raw, expected", [
    (["A", "a"], "a", "a"),                      # labels that differ only by case: exact or nothing
    (["A", "a"], "A.", "A"),
    (["A", "a"], "The answer is A", "A"),
    (["yes", "no"], "YES!", "yes"),
    (["c", "c#", "c++"], "C#", "c#"),            # '#' is part of the label, not punctuation to drop
    (["c", "c#", "c++"], "c++", "c++"),
    (["c", "c#", "c++"], "c# or c", None),       # two labels named: invalid, not the first
    (["positivo", "négatif", "中性"], "中性。", "中性"),
    (["positivo", "négatif", "中性"], "中", None),  # was 中性: non-Latin characters were dropped first
    (["positivo", "négatif", "中性"], "negatif", None),
    (["Entailment", "Contradiction", "NotMentioned"], "not mentioned", "NotMentioned"),
    (["Entailment", "Contradiction", "NotMentioned"], "**Contradiction**", "Contradiction"),
    (["Entailment", "Contradiction", "NotMentioned"], "entail", None),
    (["stereotype", "anti-stereotype", "unrelated"], "stereotype, not anti-stereotype", None),
])
def test_an_answer_maps_to_a_label_only_when_it_names_exactly_one(labels, raw, expected):
    assert normalize_label(raw, labels) == expected


# -- PLD's own dev split does not collide with the loaders' hashed splits ---------------------------------

def test_no_valset_carves_a_quarter_of_any_loader_split():
    from pld_optim.config import load_config, load_split

    cfg = load_config(str(CONFIG))
    task = resolve_task(dspy.Predict(Classify))
    for split in ("train", "dev", "test"):
        rows = load_split(cfg.data, split)
        _, dev = split_dev(rows, task)
        share = len(dev) / len(rows)
        assert 0.1 < share < 0.4, (split, len(dev), len(rows))  # was 48% of train and 0 of dev and test


# -- one output folder holds one run -----------------------------------------------------------------------

def _compile(out, teacher_name="teacher", seed=0, data=None, **kwargs):
    teacher = scripted_lm(teacher_respond, teacher_name)
    train, dev = data or (make_examples(30), make_examples(12, offset=100))
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        PLD(teacher=teacher, n_clusters=1, max_refine_iters=0, out_dir=out, seed=seed, **kwargs).compile(
            dspy.Predict(Classify), trainset=train, valset=dev)
    return _teacher_calls(teacher)


def _teacher_calls(lm):
    return lm._engine_spec.calls


def test_same_run_resumes_and_a_different_run_is_refused_with_what_differs(tmp_path):
    first = _compile(tmp_path)
    assert first > 0 and json.loads((tmp_path / "fingerprint.json").read_text())["teacher"]["model"]
    assert _compile(tmp_path) == 3  # the same run: no mining (mined.jsonl), only the 3 uncached merges
    with pytest.raises(ValueError, match=r"teacher\.model.*--fresh"):
        _compile(tmp_path, teacher_name="other-teacher")
    with pytest.raises(ValueError, match=r"seed: 0 -> 1"):
        _compile(tmp_path, seed=1)
    relabelled = make_examples(30)
    relabelled[0] = relabelled[0].copy(label="religion" if relabelled[0].label != "religion" else "race")
    with pytest.raises(ValueError, match=r"data\.train"):
        _compile(tmp_path, data=(relabelled, make_examples(12, offset=100)))
    with pytest.raises(ValueError, match=r"params\.max_clusters"):
        _compile(tmp_path, max_clusters=3)
    # Nothing was mixed in: the folder still holds the first run's mined rules, one per example.
    assert len((tmp_path / "mined.jsonl").read_text().splitlines()) == 30


def test_a_folder_from_a_run_without_fingerprint_is_refused(tmp_path):
    (tmp_path / "mined.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="no fingerprint"):
        _compile(tmp_path)


def test_a_folder_in_use_is_refused_and_a_stale_lock_is_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (tmp_path / LOCK).write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(), "since": "now"}))
        with pytest.raises(ValueError, match=f"in use by another compile \\(pid {holder.pid}"):
            _compile(tmp_path)
        assert not (tmp_path / "mined.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    _compile(tmp_path)  # its process is gone: the lock is stale and taken over
    assert not (tmp_path / LOCK).exists()


def test_cli_fresh_starts_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mined.jsonl").write_text("{}\n")
    (out / "notes.txt").write_text("mine")
    assert main(["compile", str(CONFIG), "--out", str(out), "--fresh", "--dry-run"]) == 0
    assert (out / "mined.jsonl").exists()  # a dry run removes nothing
    from pld_optim.run_folder import clear_run

    assert clear_run(out) == ["mined.jsonl"] and (out / "notes.txt").exists()  # only what a compile writes


# -- writes never lose the previous file -------------------------------------------------------------------

def test_an_interrupted_write_keeps_the_previous_rules(tmp_path, monkeypatch):
    path = tmp_path / "rules.json"
    atomic_write_text(path, '{"old": true}\n')

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, '{"new": tru')
    assert json.loads(path.read_text()) == {"old": True}


# -- settings are checked before the teacher is paid -------------------------------------------------------

@pytest.mark.parametrize("storage, message", [
    ("not a url", "is not a database URL"),
    ("corrupt", r"cannot be read .*delete .*study\.db"),
])
def test_bad_study_storage_fails_before_any_lm_call(tmp_path, storage, message):
    search = {"n_trials": 2}
    if storage == "corrupt":
        (tmp_path / "study.db").write_bytes(b"this is not a sqlite database" * 100)
    else:
        search["storage"] = storage
    teacher = scripted_lm(teacher_respond, "teacher")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        with pytest.raises(ValueError, match=message):
            PLD(teacher=teacher, out_dir=tmp_path, search=search).compile(
                dspy.Predict(Classify), trainset=make_examples(30), valset=make_examples(12, offset=100))
    assert _teacher_calls(teacher) == 0


def test_a_failed_search_keeps_refinements_rules_and_says_how_to_rerun(tmp_path):
    teacher = scripted_lm(teacher_respond, "teacher")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        with pytest.raises(RuntimeError, match=r"search failed.*kept in .*rules\.json.*only the search runs again"):
            PLD(teacher=teacher, n_clusters=1, out_dir=tmp_path, search={"n_trials": 2, "max_prompt_tokens": 1}
                ).compile(dspy.Predict(Classify), trainset=make_examples(30), valset=make_examples(12, offset=100))
    rules = RuleSet.load(tmp_path / "rules.json")
    assert len(rules.active_rules()) == 3 and rules.search is None
    assert "1. If the sentence mentions" in (tmp_path / "system_prompt.txt").read_text()


def test_a_corrupted_cache_is_named_with_the_command_that_clears_it(tmp_path, capsys):
    cache = tmp_path / "out" / "cache"
    (cache / "003").mkdir(parents=True)
    (cache / "003" / "cache.db").write_bytes(b"garbage" * 1000)  # one of DSPy's 16 diskcache shards
    code = main(["compile", str(CONFIG), "--out", str(tmp_path / "out"), "--dry-run"])
    err = capsys.readouterr().err
    assert code == 2 and "LM cache" in err and f"rm -r {cache}" in err


# -- arguments that meant something else -------------------------------------------------------------------

def test_cli_arguments_that_meant_something_else(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", str(CONFIG), "--program", "none", "--limit", "0"])
    assert exit_.value.code == 2 and "must be at least 1" in capsys.readouterr().err

    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["compile", str(CONFIG), "--out", str(blocker / "run"), "--dry-run"]) == 2
    assert f"{blocker} is a file, not a folder" in capsys.readouterr().err

    other = dspy.Predict("premise, hypothesis -> answer")
    other.save(str(tmp_path / "other.json"))
    assert main(["evaluate", str(CONFIG), "--program", str(tmp_path / "other.json")]) == 2
    assert "compiled for another task" in capsys.readouterr().err

    assert main(["compare", str(CONFIG), "--out", str(tmp_path / "c"), "--seeds", "0,a", "--dry-run"]) == 2
    assert "expected comma-separated integers" in capsys.readouterr().err


def test_an_empty_yaml_section_is_not_read_as_absent(tmp_path):
    from pld_optim.config import load_config

    text = CONFIG.read_text()
    head, _, tail = text.partition("search:\n")
    body = "".join(line + "\n" for line in tail.splitlines() if not line.startswith("  "))
    path = tmp_path / "c.yaml"
    path.write_text(head + "search:\n" + body)  # the key is there, its settings deleted
    with pytest.raises(ValueError, match=r"search: the section is empty; write `search: \{\}`"):
        load_config(path)
    path.write_text(head + "search: {}\n" + body)
    assert load_config(path).search is not None
