"""MLflow tracking against a local SQLite store: a compile and a compare each leave a run with their
parameters, metrics and artifacts; without a tracking URI (or without MLflow) nothing changes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import dspy
import pytest
import yaml
from conftest import Classify

import pld_optim
from pld_optim import PLD
from pld_optim.rules import RuleSet
from pld_optim.run.tracking import Tracker, TrackingConfig
from pld_optim.testing import field_value, rule_follower, scripted_lm

mlflow = pytest.importorskip("mlflow")


def generic_teacher(system: str, user: str) -> dict:
    """A teacher for any label task: one rule per label, merged as is, corrected per label, never revised."""
    system = " ".join(system.split())  # the adapter indents a signature's docstring line by line
    if "You write labelling rules for a small model" in system:
        gold = field_value(user, "gold_label")
        return {"rationale": f"The sentence ties a trait to people through their {gold}.",
                "rule": f"If the sentence ties a personal trait to someone's {gold}, answer {gold}."}
    if "Merge labelling rules that all lead" in system:
        label = field_value(user, "label")
        return {"instruction": f"If the sentence ties a personal trait to someone's {label}, answer {label}.",
                "phrasings": []}
    if "It gives the failures below the wrong label" in system:  # a corrective rule for one confusion
        gold = field_value(user, "gold_label")
        return {"rationale": f"The failures tie a trait to their {gold}.",
                "rule": f"If the sentence ties a habit or trait to a person's {gold}, answer {gold}."}
    if "A small model labels examples" in system:
        return {"revised_rules": json.loads(field_value(user, "rules"))}
    raise AssertionError(system[:200])


def runs(uri: str, experiment: str = "pld-optim"):
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r} in {uri}"
    return client, client.search_runs([exp.experiment_id])


def test_a_cli_compile_logs_a_run_to_a_local_store(tmp_path, monkeypatch):
    from pld_optim.cli import main

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    quickstart = Path(pld_optim.__file__).parent / "configs" / "quickstart.yaml"
    cfg = yaml.safe_load(quickstart.read_text())
    cfg["data"].update(train_limit=16, dev_limit=6)
    # No data check: this student cannot read the generic teacher's conditions, and the search must run.
    cfg["pld"].update(max_train_examples=8, max_refine_iters=1, refine_examples=6, contribution=True,
                      verify_per_label=0)
    cfg["search"].update(n_trials=3, minibatch_size=6)
    cfg["student"]["model"], cfg["teacher"]["model"] = "student", "teacher"
    cfg["tracking"] = {"uri": uri, "experiment": "pld-test"}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(cfg))
    teacher = scripted_lm(generic_teacher, "teacher")
    student = scripted_lm(rule_follower(default="race"), "student")
    monkeypatch.setattr("pld_optim.cli.compile.lm_from_config",
                        lambda mc, **k: teacher if mc.model == "teacher" else student)
    monkeypatch.setattr("pld_optim.cli.common.preflight_all", lambda *a, **k: None)

    assert main(["compile", str(config), "--out", str(tmp_path / "run")]) == 0
    client, found = runs(uri, "pld-test")
    assert len(found) == 1
    run = found[0]
    rules = RuleSet.load(tmp_path / "run" / "rules.json")
    assert run.data.params["pld.max_train_examples"] == "8" and run.data.params["student.model"] == "student"
    assert run.data.metrics["dev_macro_f1"] == pytest.approx(rules.dev_macro_f1)
    assert run.data.metrics["mine.lm_calls"] == next(u.lm_calls for u in rules.usage if u.stage == "mine") == 8
    assert {"dev_macro_f1.baseline", "dev_macro_f1.search", "search.lm_calls", "refine.lm_calls",
            "total.seconds"} <= set(run.data.metrics)
    # Refinement's dev F1 is logged when it scored dev (the paper's rewrite); corrective refinement leaves dev to
    # the search.
    scored = [h.dev_macro_f1 for h in rules.history if h.dev_macro_f1 is not None]
    assert ("dev_macro_f1.refine" in run.data.metrics) == bool(scored)
    assert run.data.metrics.get("dev_macro_f1.cluster") == (scored[0] if scored else None)
    assert all(f"contribution.{r.id}" in run.data.metrics for r in rules.rules if r.contribution is not None)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"rules.json", "system_prompt.txt", "review.html", "program.json"} <= artifacts
    assert run.data.tags["pld.dspy_flavour"] == "logged as model 'program'"


def test_the_dspy_flavour_reloads_the_compiled_program(teacher, student, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, dev = data
    out = tmp_path / "run"
    compiled = PLD(teacher=teacher, n_clusters=1, out_dir=out, max_refine_iters=0, contribution=False).compile(
        dspy.Predict(Classify), trainset=train, valset=dev)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = Tracker(uri).log_compile(compiled.pld_rules, out, run_name="python", params={"seed": 0},
                                      program=compiled, student_lm=student)
    mlflow.set_tracking_uri(uri)
    model = mlflow.tracking.MlflowClient(uri).get_run(run_id)
    assert model.data.tags["pld.dspy_flavour"] == "logged as model 'program'"
    loaded = mlflow.dspy.load_model(f"runs:/{run_id}/program")
    mlflow.clear_active_model()  # loading made it this process's active model, which later tests must not inherit
    # The reloaded program carries the rules: the scripted student answers by them.
    assert loaded.predictors()[0].signature.instructions == compiled.predictors()[0].signature.instructions
    with dspy.context(lm=student):
        assert loaded(sentence="Item 5: the mosque was mentioned here.").label == "religion"


def test_compare_logs_a_parent_run_with_one_child_per_optimizer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "compare.md").write_text("# compare\n")
    rows = [{"optimizer": name, "seeds": 1, "macro_f1": f1, "ci": (f1 - 0.1, f1 + 0.1), "accuracy": f1,
             "latency_s": 0.1, "output_tokens": 2.0, "prompt_tokens": 100.0, "compile_calls": 3,
             "lm_calls": 3, "billed_calls": 3,
             "compile_tokens": 50.0, "compile_seconds": 1.0, "per_class_f1": {"a+b": f1}, "errors": []}
            for name, f1 in (("zero-shot", 0.4), ("pld", 0.7))]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = Tracker(uri).log_compare(rows, {"seeds": [0]}, tmp_path, run_name="compare")
    client, found = runs(uri)
    children = {r.data.params["optimizer"]: r for r in found if r.info.run_id != parent}
    assert set(children) == {"zero-shot", "pld"}
    assert children["pld"].data.metrics["test_macro_f1"] == 0.7 and "f1.a_b" in children["pld"].data.metrics
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in children.values())
    assert [a.path for a in client.list_artifacts(parent)] == ["compare.md"]


def test_tracking_is_off_without_a_uri_and_never_imports_mlflow(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert Tracker.from_config(None) is None
    with pytest.raises(ValueError, match="tracking: no uri"):
        Tracker.from_config(TrackingConfig())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///x.db")
    assert Tracker.from_config(None).uri == "sqlite:///x.db"
    # Without the extra: an explicit section is an error before any LM call; a stray environment variable
    # only warns, so a user who never asked for tracking sees no change.
    monkeypatch.setitem(sys.modules, "mlflow", None)
    assert Tracker.from_config(None) is None
    with pytest.raises(ImportError, match=r"pip install 'pld-optim\[mlflow\]'"):
        Tracker.from_config(TrackingConfig(uri="sqlite:///y.db"))


def test_a_compile_without_tracking_does_not_import_mlflow(tmp_path):
    code = (f"import sys; from pld_optim import cli; "
            f"cli.main(['compile', 'quickstart', '--out', {str(tmp_path / 'o')!r}, '--dry-run']); "
            "print('mlflow' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "False"


def test_an_unreachable_store_is_refused_before_any_lm_call(tmp_path, monkeypatch, capsys):
    from pld_optim.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on the discard port
    never = scripted_lm(lambda system, user: pytest.fail("an LM was called"))
    monkeypatch.setattr("pld_optim.cli.compile.lm_from_config", lambda *a, **k: never)
    assert main(["compile", "quickstart", "--out", str(tmp_path / "o"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the MLflow store http://127.0.0.1:9" in err
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ  # the check's own settings are put back
