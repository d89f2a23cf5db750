"""What a dry run can check, it checks, and it changes nothing on disk. A setting that passes `--dry-run` (or
`PLD.prepare`, which is what it runs) must not fail after the teacher was paid: settings are checked before
the teacher is paid, with or without an output folder."""

import json

import dspy
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond
from harness import cli, scripted_cli, snapshot, write_config  # noqa: F401 - scripted_cli is a fixture

from pld_optim import PLD
from pld_optim.run.folder import FINGERPRINT
from pld_optim.testing import scripted_lm

DEAD_POSTGRES = "postgresql://pld@127.0.0.1:9/optuna"  # nothing listens on the discard port


def python_compile(**kwargs):
    teacher = scripted_lm(teacher_respond, "teacher")
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        try:
            PLD(teacher=teacher, n_clusters=1, max_refine_iters=0, **kwargs).compile(
                dspy.Predict(Classify), trainset=make_examples(30), valset=make_examples(12, offset=100))
        finally:
            assert teacher._engine_spec.calls == 0, "the teacher was paid before the setting was refused"


@pytest.mark.parametrize("out", ["", "   "])
def test_an_empty_output_folder_is_refused_everywhere(tmp_path, out, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path)
    for argv in (["compile", str(config), "--out", out, "--dry-run"], ["compare", str(config), "--out", out,
                                                                       "--dry-run"], ["report", out]):
        code, _, err = cli(*argv)
        assert code == 2 and "the output folder is empty" in err, (argv, err)
    from pld_optim import RunFolder

    with pytest.raises(ValueError, match="the output folder is empty"):
        RunFolder(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml", "data.csv"]  # nothing written in the cwd


def test_python_an_empty_out_dir_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    try:
        with pytest.raises(ValueError, match="the output folder is empty"):
            python_compile(out_dir="")  # today: the compile writes its folder into the current directory
    finally:
        assert list(tmp_path.iterdir()) == []


def test_an_output_folder_whose_name_means_something_in_a_sqlite_url(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    out = tmp_path / "runs" / "a?mode=ro&b#c%20d"
    config = write_config(tmp_path, search={"n_trials": 2, "minibatch_size": 8})
    assert cli("compile", str(config), "--out", str(out), "--dry-run")[0] == 0
    assert not (tmp_path / "runs").exists()
    code, _, err = cli("compile", str(config), "--out", str(out))
    assert code == 0, err
    assert (out / "study.db").is_file()
    stray = [p for p in tmp_path.rglob("*") if p.name.endswith(".db") and out not in p.parents]
    assert stray == []  # old main: sqlite:///.../a?mode=ro... put the study elsewhere or opened it read-only


def test_a_seed_out_of_range_is_refused_by_every_entry_point(tmp_path):
    config = write_config(tmp_path)
    for argv, got in ((["compile", str(config), "--out", str(tmp_path / "o"), "--seed", str(2**32)], ""),
                      (["compile", str(config), "--out", str(tmp_path / "o"), "--seed", "-1"], ", got -1"),
                      (["compare", str(config), "--out", str(tmp_path / "o"), "--seeds", f"0,{2**32}"], "")):
        code, _, err = cli(*argv, "--dry-run")
        assert code == 2 and f"must be between 0 and 2**32 - 1{got}" in err, err
    config.write_text(config.read_text().replace("seed: 0", "seed: -1"))
    code, _, err = cli("compile", str(config), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 2 and "seed: Input should be greater than or equal to 0" in err, err
    with pytest.raises(ValueError, match=r"seed=4294967296"):
        python_compile(seed=2**32)
    assert not (tmp_path / "o").exists()


def test_a_storage_that_cannot_be_reached_is_found_by_the_dry_run(tmp_path, scripted_cli):  # noqa: F811
    pytest.importorskip("psycopg2")
    lms = scripted_cli()
    config = write_config(tmp_path, search={"n_trials": 2, "storage": DEAD_POSTGRES})
    code, _, err = cli("compile", str(config), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 2 and "cannot be reached" in err and "search.storage" in err, err
    assert lms.calls("student") == 0 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("storage, message", [(DEAD_POSTGRES, "cannot be reached"),
                                              ("not a url", "is not a database URL")])
def test_python_checks_the_storage_without_an_out_dir(storage, message):
    if storage.startswith("postgresql"):
        pytest.importorskip("psycopg2")
    with pytest.raises(ValueError, match=message):  # old main checked it only with out_dir
        python_compile(search={"n_trials": 2, "storage": storage})


def test_a_dry_run_writes_nothing(tmp_path, scripted_cli, monkeypatch):  # noqa: F811
    scripted_cli()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    config = write_config(tmp_path, search={"n_trials": 2})
    for argv in (["compile", str(config), "--out", str(tmp_path / "new"), "--dry-run", "--test"],
                 ["compare", str(config), "--out", str(tmp_path / "new"), "--dry-run"]):
        code, _, err = cli(*argv)
        assert code == 0, err
    assert not (tmp_path / "new").exists() and not (tmp_path / "mlflow.db").exists()
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    out = tmp_path / "run"
    assert cli("compile", str(config), "--out", str(out))[0] == 0
    before = snapshot(out)
    for argv in (["compile", str(config), "--out", str(out), "--dry-run", "--fresh"],):
        assert cli(*argv)[0] == 0
    assert snapshot(out) == before  # no cache shard, journal or study touched


@pytest.mark.parametrize("student, message", [
    ({"model": "gpt4"}, "invalid model string 'gpt4': use provider/model"),
    ({"model": "local/MISSING"}, "GGUF model file not found"),
    ({"model": "local/llama-9000"}, "unknown local model 'llama-9000'"),
    ({"model": "ollama_chat/gemma3:4b", "api_base": "http://host:port"}, "api_base='http://host:port' is not a host"),
])
def test_a_student_model_the_compile_could_not_make_fails_the_dry_run(tmp_path, student, message):
    student = {**student, "model": student["model"].replace("MISSING", str(tmp_path / "student.gguf"))}
    config = write_config(tmp_path, student=student, teacher={"model": "openai/gpt-4o-mini"})
    code, _, err = cli("compile", str(config), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 2 and message in err, err  # old main: "dry run: ... checked", then the compile failed
    code, _, err = cli("compare", str(config), "--out", str(tmp_path / "c"), "--dry-run")
    assert code == 2 and message in err, err


def test_a_tracking_store_in_a_missing_folder_fails_the_dry_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'no' / 'such' / 'mlflow.db'}")
    config = write_config(tmp_path, teacher={"model": "openai/gpt-4o-mini"}, student={"model": "openai/gpt-4o-mini"})
    code, _, err = cli("compile", str(config), "--out", str(tmp_path / "o"), "--dry-run")
    assert code == 2 and "cannot be created" in err and "does not exist" in err, err
    assert not (tmp_path / "no").exists()


def test_a_sqlite_storage_in_a_missing_folder_fails_the_dry_run(tmp_path, scripted_cli):  # noqa: F811
    lms = scripted_cli()
    storage = f"sqlite:///{tmp_path / 'no' / 'such' / 'study.db'}"
    config = write_config(tmp_path, search={"n_trials": 2, "storage": storage})
    code, _, err = cli("compile", str(config), "--out", str(tmp_path / "o"), "--dry-run")
    # Today the dry run passes, and the real compile fails in the search after mining was paid for.
    assert code == 2 and "search.storage" in err and lms.calls("teacher") == 0, err


def test_a_token_budget_below_the_bare_prompt_fails_before_the_teacher():
    with pytest.raises(ValueError, match="max_prompt_tokens"):  # today: the search fails after mining was paid
        python_compile(search={"n_trials": 2, "max_prompt_tokens": 5})  # the bare prompt alone is ~100 tokens


@pytest.mark.parametrize("storage, message", [
    ("not a url", "is not a database URL"),
    ("corrupt", r"cannot be read .*delete .*study\.db"),
])
def test_bad_study_storage_in_an_out_dir_fails_before_any_lm_call(tmp_path, storage, message):
    search = {"n_trials": 2}
    if storage == "corrupt":  # in a folder an earlier compile wrote (else the folder is refused as not ours)
        (tmp_path / FINGERPRINT).write_text(json.dumps({"data": {}, "params": {}}))
        (tmp_path / "study.db").write_bytes(b"this is not a sqlite database" * 100)
    else:
        search["storage"] = storage
    with pytest.raises(ValueError, match=message):
        python_compile(out_dir=tmp_path, search=search)
