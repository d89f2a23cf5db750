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
import yaml
from conftest import Classify, make_examples, student_respond, teacher_respond

from pld_optim import PLD, RuleSet, RunFolder
from pld_optim.cli import main
from pld_optim.compile_run import split_dev
from pld_optim.evaluation.task import resolve_task
from pld_optim.files import atomic_write_text
from pld_optim.lm.labels import normalize_label
from pld_optim.run.folder import FINGERPRINT, LOCK
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
    from pld_optim.cli.config import load_config, load_split

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


def test_a_folder_in_use_is_refused_and_its_lock_goes_with_its_process(tmp_path):
    code = ("import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / LOCK)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ValueError, match="is in use by another pld-optim command"):
            _compile(tmp_path)
        assert not (tmp_path / "mined.jsonl").exists() and not (tmp_path / FINGERPRINT).exists()
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / LOCK).exists()  # the lock file a killed process leaves is no lock: the OS released it
    _compile(tmp_path)
    assert (tmp_path / "rules.json").exists()


def test_the_folder_lock_is_reentrant_within_one_process(tmp_path):
    # The CLI holds the lock around PLD.compile, which takes it again through its own RunFolder.
    with RunFolder(tmp_path).writing():
        assert _compile(tmp_path) > 0
    assert RuleSet.load(tmp_path / "rules.json").rules


def test_cli_fresh_starts_over_only_in_a_folder_a_compile_wrote(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mined.jsonl").write_text("{}\n")
    (out / "notes.txt").write_text("mine")
    # No fingerprint.json: nothing shows a compile wrote these files, so --fresh removes none of them, and the
    # dry run says so too (the compile it checks would refuse the folder).
    for dry in (["--dry-run"], []):
        assert main(["compile", str(CONFIG), "--out", str(out), "--fresh", *dry]) == 2
        assert "has no fingerprint.json, so no pld-optim run wrote it" in capsys.readouterr().err
    assert (out / "mined.jsonl").exists() and (out / "notes.txt").exists()
    with pytest.raises(ValueError, match="Nothing was written or removed"):
        RunFolder(out).clear()
    (out / FINGERPRINT).write_text(json.dumps({"data": {}, "params": {}}))
    assert RunFolder(out).clear() == [FINGERPRINT, "mined.jsonl"] and (out / "notes.txt").exists()
    assert RunFolder(out).clear() == []  # only what a compile writes, and only once


def test_cli_fresh_checks_everything_before_it_removes_anything(tmp_path, capsys):
    out = tmp_path / "run"
    _compile(out)  # a real earlier run: fingerprint.json, mined.jsonl, rules.json, ...
    before = sorted(p.name for p in out.iterdir())
    cfg = yaml.safe_load(CONFIG.read_text())
    cfg["search"]["storage"] = "not a url"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(cfg))
    assert main(["compile", str(config), "--out", str(out), "--fresh"]) == 2
    assert "is not a database URL" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


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
    if storage == "corrupt":  # in a folder an earlier compile wrote (else the folder is refused as not ours)
        (tmp_path / FINGERPRINT).write_text(json.dumps({"data": {}, "params": {}}))
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
    import optuna

    class Broken(optuna.samplers.RandomSampler):
        def before_trial(self, study, trial):
            raise RuntimeError("the sampler broke")

    teacher = scripted_lm(teacher_respond, "teacher")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        with pytest.raises(RuntimeError, match=r"search failed \(RuntimeError: the sampler broke\).*kept in "
                                               r".*rules\.json.*only the search runs again"):
            PLD(teacher=teacher, n_clusters=1, out_dir=tmp_path, search={"n_trials": 2, "sampler": Broken()}
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

    for argv, message in ((["compare", str(CONFIG), "--out", str(tmp_path / "c"), "--seeds", "0,a"],
                           "expected a whole number, got 'a'"),
                          (["compare", str(CONFIG), "--out", str(tmp_path / "c"), "--optimizers", "pld,textgrad"],
                           "unknown optimizer(s) ['textgrad']"),
                          (["compile", str(CONFIG), "--out", str(tmp_path / "o"), "--seed", "-1"],
                           "must be between 0 and 2**32 - 1, got -1")):
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--dry-run"])
        assert exit_.value.code == 2 and message in capsys.readouterr().err, argv
    assert not (tmp_path / "c").exists() and not (tmp_path / "o").exists()


def test_an_empty_yaml_section_is_not_read_as_absent(tmp_path):
    from pld_optim.cli.config import load_config

    text = CONFIG.read_text()
    head, _, tail = text.partition("search:\n")
    body = "".join(line + "\n" for line in tail.splitlines() if not line.startswith("  "))
    path = tmp_path / "c.yaml"
    path.write_text(head + "search:\n" + body)  # the key is there, its settings deleted
    with pytest.raises(ValueError, match=r"search: the section is empty; write `search: \{\}`"):
        load_config(path)
    path.write_text(head + "search: {}\n" + body)
    assert load_config(path).search is not None


def test_a_duplicated_yaml_key_is_refused(tmp_path):
    import re

    from pld_optim.cli.config import load_config

    path = tmp_path / "c.yaml"
    text, n = re.subn(r"^(  max_clusters: .*)$", r"\1\n  max_clusters: 3", CONFIG.read_text(), count=1, flags=re.M)
    assert n == 1  # the quickstart config sets pld.max_clusters; YAML would silently keep the second value
    path.write_text(text)
    with pytest.raises(ValueError, match=r"the key 'max_clusters' is given twice"):
        load_config(path)


# -- a student that gives no valid answer stops the compile before the teacher is paid ---------------------

def test_a_student_with_mostly_invalid_answers_stops_before_mining():
    teacher = scripted_lm(teacher_respond, "teacher")
    answers = iter(["race", "perhaps", "no idea", "unclear"] * 20)
    student = scripted_lm(lambda s, u: {"label": next(answers)}, "student")  # 3 of 4 outside the labels
    with dspy.context(lm=student):
        with pytest.raises(RuntimeError, match=r"on dev: no valid label for 9 of 12 examples.*max_invalid_share"):
            PLD(teacher=teacher).compile(dspy.Predict(Classify), trainset=make_examples(30),
                                         valset=make_examples(12, offset=100))
    assert _teacher_calls(teacher) == 0


def test_limit_takes_a_label_stratified_sample_not_the_first_rows(tmp_path):
    from pld_optim.datasets import load_generic

    rows = "".join(f"pos text {i},pos\n" for i in range(10)) + "".join(f"neg text {i},neg\n" for i in range(10))
    (tmp_path / "d.csv").write_text("text,label\n" + rows)
    kwargs = dict(inputs=["text"], label="label", labels=["pos", "neg"], limit=4)
    sample = load_generic(tmp_path / "d.csv", **kwargs)
    assert sorted(e.label for e in sample) == ["neg", "neg", "pos", "pos"]  # the first 4 rows are all pos
    assert [e.text for e in load_generic(tmp_path / "d.csv", **kwargs)] == [e.text for e in sample]  # seeded


def test_files_with_a_byte_order_mark_or_line_separators_read_whole(tmp_path):
    from pld_optim.datasets import load_generic

    (tmp_path / "d.csv").write_bytes("\ufefftext,label\na,pos\nb,neg\n".encode())  # Excel's "CSV UTF-8"
    assert [e.text for e in load_generic(tmp_path / "d.csv", inputs=["text"], label="label")] == ["a", "b"]
    line = json.dumps({"text": "one\u2028record", "label": "pos"}, ensure_ascii=False)
    (tmp_path / "d.jsonl").write_text(line + "\n", encoding="utf-8")
    (row,) = load_generic(tmp_path / "d.jsonl", inputs=["text"], label="label")
    assert row.text == "one\u2028record"


def test_a_stereoset_item_may_carry_its_own_split(tmp_path):
    from pld_optim.datasets import load_stereoset

    items = [{"id": f"x{i}", "bias_type": "race", "context": f"c{i}", "split": split,
              "sentences": [{"sentence": f"s{i}", "gold_label": "stereotype"}]}
             for i, split in enumerate(["train", "dev", "test", "dev"])]
    (tmp_path / "s.json").write_text(json.dumps({"data": {"intrasentence": items}}))
    assert [e.id for e in load_stereoset(tmp_path / "s.json", split="dev")] == ["x1", "x3"]
    assert "split" not in load_stereoset(tmp_path / "s.json", split="dev")[0]
