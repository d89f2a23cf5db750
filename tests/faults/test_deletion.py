"""Nothing is removed before every check that can refuse the command has passed, and nothing is removed or
overwritten that no pld-optim command wrote (a user's own report.md, program.json or cache/): `--fresh` and
`RunFolder.clear` remove only what a compile writes, and only in a folder whose fingerprint.json shows one
did."""

import json

import dspy
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond
from harness import (  # noqa: F401 - compiled and scripted_cli are fixtures
    cli,
    compiled,
    copies,
    cue_rows,
    scripted_cli,
    snapshot,
    write_config,
)

from pld_optim import PLD, RunFolder
from pld_optim.run.folder import FINGERPRINT
from pld_optim.testing import scripted_lm


@pytest.mark.parametrize("problem", ["bad study storage", "tracking store down", "test overlaps train", "ollama down"])
def test_fresh_removes_nothing_when_a_later_check_refuses(compiled, tmp_path, monkeypatch, problem):  # noqa: F811
    """Each of these checks ran only after --fresh had emptied the folder (old main: clear_run came first)."""
    config, out, lms = compiled
    before, spent = snapshot(out), lms.calls("teacher")
    argv = ["compile", str(config), "--out", str(out), "--fresh"]
    if problem == "bad study storage":
        config = write_config(tmp_path, name="storage.yaml", search={"n_trials": 2, "storage": "not a url"})
        argv[1] = str(config)
        expected = "is not a database URL"
    elif problem == "tracking store down":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
        expected = "cannot reach the MLflow store"
    elif problem == "test overlaps train":
        rows = cue_rows()
        config = write_config(tmp_path, rows + copies(rows, "test", 3), name="overlap.yaml")
        argv = ["compile", str(config), "--out", str(out), "--fresh", "--test"]
        expected = "--test: 3 test examples have the same inputs as train examples"
    else:
        config = write_config(tmp_path, name="ollama.yaml", student={
            "model": "ollama_chat/gemma3:4b", "api_base": "http://127.0.0.1:9"})
        argv[1] = str(config)
        monkeypatch.undo()  # the real preflight, and the config's own models
        monkeypatch.setattr("pld_optim.cli.compile.lm_from_config", lms.lm)
        expected = "Ollama is not reachable"
    code, _, err = cli(*argv)
    assert code == 2 and expected in err, err
    assert snapshot(out) == before  # not one file removed or changed
    assert lms.calls("teacher") == spent


def test_compile_into_a_folder_of_the_users_files_overwrites_nothing(tmp_path, scripted_cli):  # noqa: F811
    lms = scripted_cli()
    out = tmp_path / "mine"
    out.mkdir()
    (out / "report.md").write_text("# my own report\n")
    (out / "program.json").write_text('{"mine": true}\n')
    before = snapshot(out)
    code, _, err = cli("compile", str(write_config(tmp_path)), "--out", str(out))
    assert code == 2 and "has no fingerprint.json" in err and "program.json, report.md" in err, err
    assert snapshot(out) == before and lms.calls("teacher") == lms.calls("student") == 0
    assert not (out / "fingerprint.json").exists()


def test_python_compile_into_a_folder_of_the_users_files_overwrites_nothing(tmp_path):
    out = tmp_path / "mine"
    (out / "cache").mkdir(parents=True)
    (out / "cache" / "notes.txt").write_text("not DSPy's")  # a cache/ of the user's own
    (out / "review.html").write_text("<p>mine</p>")
    before = snapshot(out)
    teacher = scripted_lm(teacher_respond, "teacher")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        with pytest.raises(ValueError, match=r"holds cache, review\.html, which may be yours"):
            PLD(teacher=teacher, out_dir=out).compile(dspy.Predict(Classify), trainset=make_examples(30),
                                                      valset=make_examples(12, offset=100))
    assert snapshot(out) == before and teacher._engine_spec.calls == 0


def test_fresh_in_a_folder_no_compile_wrote_removes_nothing(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    out = tmp_path / "mine"
    (out / "cache").mkdir(parents=True)
    (out / "cache" / "notes.txt").write_text("mine")
    (out / "report.md").write_text("mine")
    (out / "mined.jsonl").write_text("{}\n")  # a name a compile writes, but no fingerprint.json shows one did
    before = snapshot(out)
    for dry in (["--dry-run"], []):  # the dry run says so too: the compile it checks would refuse the folder
        code, _, err = cli("compile", str(write_config(tmp_path)), "--out", str(out), "--fresh", *dry)
        assert code == 2 and "Nothing was written or removed" in err, err
        assert "has no fingerprint.json, so no pld-optim run wrote it" in err, err
    assert snapshot(out) == before
    with pytest.raises(ValueError, match="Nothing was written or removed"):
        RunFolder(out).clear()
    assert snapshot(out) == before


def test_clear_removes_only_what_a_compile_writes_and_only_once(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "mined.jsonl").write_text("{}\n")
    (out / "notes.txt").write_text("mine")
    (out / FINGERPRINT).write_text(json.dumps({"data": {}, "params": {}}))
    assert RunFolder(out).clear() == [FINGERPRINT, "mined.jsonl"] and (out / "notes.txt").exists()
    assert RunFolder(out).clear() == []


def test_fresh_removes_dspys_cache_but_keeps_what_dspy_did_not_write(compiled, capsys):  # noqa: F811
    config, out, _ = compiled
    notes = out / "cache" / "notes.txt"
    notes.write_text("mine")
    shards = sorted(p.relative_to(out).as_posix() for p in (out / "cache").glob("*/cache.db"))
    assert shards
    code, stdout, err = cli("compile", str(config), "--out", str(out), "--fresh")
    assert code == 0, err
    assert notes.read_text() == "mine"  # old main: shutil.rmtree(cache)
    assert "removed cache, fingerprint.json, mined.jsonl" in stdout


def test_clear_refuses_a_fingerprint_that_is_not_a_runs(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "fingerprint.json").write_text(json.dumps({"my": "own file"}))
    (out / "rules.json").write_text("{}")
    before = snapshot(out)
    with pytest.raises(ValueError, match="is not a pld-optim fingerprint"):
        RunFolder(out).clear()
    assert snapshot(out) == before
