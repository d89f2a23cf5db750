"""After paid work, an error points the right way. A full disk (simulated: the write raises ENOSPC) is named
as one with the file, leaves no temporary file and no half-written set of artifacts, and says that the LM
calls are cached so a rerun resumes; a folder removed while a compile ran is named as such (not DSPy's advice
to pickle the program); `pick` after a reviewer deleted a rule a Pareto point names is a one-line error (old
main: a KeyError); an --out that is a dangling symbolic link fails the dry run, not the run."""

import errno
import json
import os
import shutil
from pathlib import Path

import dspy
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond
from harness import cli, compile_into, compile_pareto_run, scripted_cli, snapshot, write_config  # noqa: F401

from pld_optim import PLD
from pld_optim.files import JsonlLog, atomic_write_text
from pld_optim.records import MinedRule
from pld_optim.run.folder import ARTIFACTS
from pld_optim.testing import scripted_lm


def temporary_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def full_disk_on(monkeypatch, name: str) -> None:
    """Moving a finished file into place as `name` fails as a full disk would (ENOSPC)."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if Path(dst).name == name:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_a_full_disk_at_the_end_of_a_cli_compile_is_named_and_the_rerun_resumes(tmp_path, scripted_cli, monkeypatch):  # noqa: F811
    lms = scripted_cli()
    config, out = write_config(tmp_path), tmp_path / "run"
    with monkeypatch.context() as patch:
        full_disk_on(patch, "program.json")
        code, _, err = cli("compile", str(config), "--out", str(out))
    assert code == 2, err
    assert f"cannot write {out / 'program.json'}: the disk is full" in err, err
    assert "LM cache" in err and "rerun" in err, err
    assert temporary_files(out) == []  # old main: .program.<pid>.tmp.json stayed behind
    assert not any((out / name).exists() for name in ARTIFACTS)
    spent = lms.calls("teacher")
    code, _, err = cli("compile", str(config), "--out", str(out))  # space freed: the same command again
    assert code == 0, err
    # Nothing is mined again (mined.jsonl); the scripted LMs bypass DSPy's cache, so the 3 merges are redone.
    assert lms.calls("teacher") - spent <= 3


def test_a_full_disk_in_a_python_compile_leaves_no_half_written_artifacts(tmp_path, monkeypatch):
    """Old main wrote program.json, then failed on rules.json: a folder whose two artifacts disagree."""
    out = tmp_path / "run"

    def failing(real):
        def write(self, *args, **kwargs):
            if self.name.startswith(".rules.json"):  # rules.json's temporary file: the disk fills there
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(self, *args, **kwargs)
        return write

    monkeypatch.setattr(Path, "write_text", failing(Path.write_text))
    monkeypatch.setattr(Path, "write_bytes", failing(Path.write_bytes))
    with pytest.raises(OSError, match=r"cannot write .*rules\.json: the disk is full") as raised:
        compile_into(out)
    assert f"Nothing in {out} was changed" in str(raised.value) and "cache" in str(raised.value)
    assert temporary_files(out) == [] and not any((out / name).exists() for name in ARTIFACTS)


def test_a_folder_removed_while_the_compile_ran_is_named(tmp_path, monkeypatch):
    """Old main: DSPy's "Failed to save state ... consider saving the state in .pkl", which evaluate refuses."""
    out = tmp_path / "run"
    finish = PLD._finish

    def removed_first(self, plan, *args):
        shutil.rmtree(plan.folder.path)
        return finish(self, plan, *args)

    monkeypatch.setattr(PLD, "_finish", removed_first)
    with pytest.raises(OSError, match=rf"{out}.*no longer exists") as raised:
        compile_into(out)
    assert ".pkl" not in str(raised.value)


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "report.md"
    atomic_write_text(path, "old\n")
    full_disk_on(monkeypatch, "report.md")
    with pytest.raises(OSError, match=rf"cannot write {path}: the disk is full"):
        atomic_write_text(path, "new\n")
    assert path.read_text() == "old\n" and temporary_files(tmp_path) == []
    gone = JsonlLog(tmp_path / "gone" / "mined.jsonl", MinedRule)
    with pytest.raises(OSError, match=r"cannot write .*mined\.jsonl: its folder .*gone no longer exists"):
        gone.append(MinedRule(example_id="x", gold="race"))


def test_pick_after_a_reviewer_deleted_a_rule_a_pareto_point_names(tmp_path, scripted_cli):  # noqa: F811
    lms = scripted_cli()
    config, out = compile_pareto_run(tmp_path, n_trials=6)
    data = json.loads((out / "rules.json").read_text())
    largest = max(data["search"]["pareto"], key=lambda c: c["macro_f1"])
    named = largest["selection"][0]["rule_id"]
    data["rules"] = [r for r in data["rules"] if r["id"] != named]
    data["selection"] = [s for s in data["selection"] if s["rule_id"] != named]
    data["rule_digests"].pop(named, None)
    (out / "rules.json").write_text(json.dumps(data, indent=2))
    before, calls = snapshot(out), lms.calls("student")
    code, _, err = cli("pick", str(config), str(out), "--max-tokens", "100000")
    assert code == 2, err  # old main: exit 1, "KeyError: 'R..'" as an unexpected error
    assert f"rule(s) {named}" in err and "no longer holds" in err and "KeyError" not in err, err
    assert snapshot(out) == before and lms.calls("student") == calls


@pytest.mark.parametrize("where", ["out", "parent"])
def test_a_dangling_symlink_for_out_fails_the_dry_run(tmp_path, scripted_cli, where):  # noqa: F811
    """Old main: the dry run passed, then the run failed with "[Errno 17] File exists"."""
    lms = scripted_cli()
    config, link = write_config(tmp_path), tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    out = link if where == "out" else link / "run"
    for dry in (["--dry-run"], []):
        code, _, err = cli("compile", str(config), "--out", str(out), *dry)
        assert code == 2 and f"{link} is a symbolic link to {tmp_path / 'gone'}, which does not exist" in err, err
        assert "File exists" not in err
    assert lms.calls("student") == lms.calls("teacher") == 0 and not (tmp_path / "gone").exists()
    # In Python: the LMs compile is given (not the CLI's) are the ones that must not be called.
    teacher, student = scripted_lm(teacher_respond, "teacher"), scripted_lm(student_respond, "student")
    with dspy.context(lm=student):
        with pytest.raises(ValueError, match="is a symbolic link to .*which does not exist"):
            PLD(teacher=teacher, out_dir=out).compile(dspy.Predict(Classify), trainset=make_examples(30),
                                                      valset=make_examples(12, offset=100))
    assert student._engine_spec.calls == teacher._engine_spec.calls == 0
    assert lms.calls("student") == lms.calls("teacher") == 0 and not (tmp_path / "gone").exists()


def test_review_html_that_cannot_be_rendered_changes_no_artifact(tmp_path, monkeypatch):
    """Old main wrote program.json, rules.json, system_prompt.txt and report.md, then failed on review.html
    with the plotting library's own error: a folder whose review page belongs to no run."""
    out = tmp_path / "run"

    def broken(*args, **kwargs):
        raise ValueError("max() arg is an empty sequence")

    monkeypatch.setattr("pld_optim.run.review._figures", broken)
    with pytest.raises(RuntimeError, match=rf"{out / 'review.html'} could not be rendered \(ValueError") as raised:
        compile_into(out)
    assert f"Nothing in {out} was changed" in str(raised.value)
    assert temporary_files(out) == [] and not any((out / name).exists() for name in ARTIFACTS)
