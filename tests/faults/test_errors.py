"""Every error names the setting, file or variable to change, and none ends in a traceback: a cache that
cannot be opened is not called corrupted, and a corrupted one is named with the command that clears it; a
malformed OLLAMA_HOST is named whichever command reads it, an offline Hub name says it was read as one, a
missing GGUF, a folder given for a file; a failed search says what was kept and how to rerun; any unexpected
error is one line."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import dspy
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond
from harness import cli, scripted_cli, write_config  # noqa: F401 - scripted_cli is a fixture

from pld_optim import PLD, RuleSet
from pld_optim.cli import main
from pld_optim.testing import scripted_lm

CONFIG = Path(__file__).parents[2] / "pld_optim" / "configs" / "quickstart.yaml"


@pytest.fixture
def cached(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    config, out = write_config(tmp_path), tmp_path / "run"
    assert cli("compile", str(config), "--out", str(out))[0] == 0
    return config, out


def test_a_cache_this_user_cannot_write_is_not_called_corrupted(cached, monkeypatch):
    """As root every os.access check passes, so a read-only disk is simulated where the check looks."""
    config, out = cached
    real, cache = os.access, out / "cache"
    monkeypatch.setattr(os, "access", lambda p, mode: False if (p == cache or cache in Path(p).parents) and
                        mode & os.W_OK else real(p, mode))
    code, _, err = cli("compile", str(config), "--out", str(out), "--dry-run")
    assert code == 2 and "is not readable and writable by this user; fix its permissions" in err, err
    assert "corrupted" not in err and "rm -r" not in err


def test_a_shard_sqlite_cannot_open_is_not_called_corrupted(cached, monkeypatch):
    config, out = cached
    connect = sqlite3.connect

    def refuse(database, *args, **kwargs):
        if "cache.db" in str(database):
            raise sqlite3.OperationalError("unable to open database file")
        return connect(database, *args, **kwargs)

    monkeypatch.setattr(sqlite3, "connect", refuse)
    code, _, err = cli("compile", str(config), "--out", str(out), "--dry-run")
    assert code == 2 and "cannot be opened (unable to open database file)" in err and "read-only disk" in err, err
    assert "corrupted" not in err  # old main: "is corrupted ...; remove it (rm -r ...)": the user's cache, deleted


def test_a_cache_path_that_is_a_file_is_named(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    out = tmp_path / "run"
    out.mkdir()
    (out / "fingerprint.json").write_text('{"data": {}, "params": {}}')
    (out / "cache").write_text("not a folder")
    code, _, err = cli("compile", str(write_config(tmp_path)), "--out", str(out), "--dry-run")
    assert code == 2 and f"the LM cache {out / 'cache'} is a file, not a folder" in err, err


def test_a_malformed_ollama_host_is_named_by_every_command(tmp_path, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "gpu box:x")
    config = write_config(tmp_path, student={"model": "ollama_chat/gemma3:4b"}, teacher={"model": "openai/gpt-4o-mini"})
    for argv in (["compile", str(config), "--out", str(tmp_path / "o"), "--dry-run"],
                 ["compare", str(config), "--out", str(tmp_path / "c"), "--dry-run"],
                 ["evaluate", str(config), "--program", "none", "--split", "dev"]):
        code, _, err = cli(*argv)
        assert code == 2 and "OLLAMA_HOST='gpu box:x' is not a host[:port] or URL" in err, (argv, err)
    # The ollama package reads OLLAMA_HOST when imported: with a good api_base it must not fail there.
    code = subprocess.run([sys.executable, "-c", "from pld_optim.lm.ollama import _ollama; _ollama()"],
                          env={**os.environ, "OLLAMA_HOST": "gpu box:x"}, capture_output=True, text=True)
    assert code.returncode == 0, code.stderr  # old main: "Port could not be cast to integer value as 'x'"


def test_an_offline_hub_name_is_one_line_that_says_it_was_read_as_one(tmp_path):
    config = write_config(tmp_path, data={"path": "someone/no-such-dataset"}, teacher={"model": "openai/gpt-4o-mini"})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    done = subprocess.run([sys.executable, "-m", "pld_optim", "compile", str(config), "--out", str(tmp_path / "o"),
                           "--dry-run"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "data.path 'someone/no-such-dataset' is not a local file or folder, so it was read as a Hugging Face Hub " \
           "dataset" in done.stderr


def test_a_missing_gguf_is_named_when_the_lm_is_made(tmp_path):
    missing = tmp_path / "models" / "qwen.gguf"
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        with pytest.raises(FileNotFoundError, match=rf"GGUF model file not found: {missing}; fix the model path"):
            PLD(teacher=f"local/{missing}").compile(dspy.Predict(Classify), trainset=make_examples(30),
                                                   valset=make_examples(12, offset=100))  # old main: after baseline


def test_folders_given_for_files_are_named(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    config = write_config(tmp_path)
    code, _, err = cli("compile", str(tmp_path), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 2 and f"config file not found: {tmp_path} (it is a folder)" in err, err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli("evaluate", str(config), "--program", str(empty))
    assert code == 2 and "program.json does not exist (the folder holds no program.json" in err, err


def test_an_unexpected_error_is_one_line_naming_the_command(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("label_field")

    monkeypatch.setattr("pld_optim.cli.folder.compile_folder", broken)
    code, stdout, err = cli("report", str(tmp_path))
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err  # old main: a traceback
    assert "KeyError: 'label_field' (an unexpected error in pld-optim report; rerun as `pld-optim --verbose " \
           "report ...`" in err


def test_a_failed_search_without_a_folder_does_not_promise_a_cached_rerun(monkeypatch):
    def broken(self, seeds=()):
        raise RuntimeError("the study storage went away")  # a budget below the bare prompt now fails in prepare

    monkeypatch.setattr("pld_optim.teleprompter.PromptSearch.run", broken)
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        with pytest.raises(RuntimeError, match="search failed") as err:
            PLD(teacher=scripted_lm(teacher_respond), n_clusters=1, max_refine_iters=0,
                search={"n_trials": 2}).compile(
                dspy.Predict(Classify), trainset=make_examples(30), valset=make_examples(12, offset=100))
    assert "folder's cache" not in str(err.value)  # there is no folder: a rerun pays for everything again
    assert "pass out_dir=" in str(err.value)


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
