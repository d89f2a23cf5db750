"""What the fault tests share: a small CSV task that the scripted teacher and student solve, a YAML config for
it, the real CLI run with those scripted LMs in place of the config's models, and a scripted Python compile
into a folder. Import it (`from harness import ...`): a conftest.py here would shadow tests/conftest.py,
imported as `conftest`.

The config names models `teacher` and `student`; `scripted_cli` makes every command build the scripted LMs
for them (the CLI's one factory, `lm_from_config`, is replaced in each module that imported it) and turns
the Ollama preflight into a no-op, so no test here needs a model or a server.
"""

from __future__ import annotations

import csv
import importlib
import subprocess
import sys
from pathlib import Path

import dspy
import pytest
import yaml
from conftest import CUES, Classify, make_examples, student_respond, teacher_respond

from pld_optim import PLD
from pld_optim.testing import scripted_lm

LOCK_HOLDER = ("import filelock, sys, time; lock = filelock.FileLock(sys.argv[1]); lock.acquire(); "
               "print('locked', flush=True); time.sleep(120)")
CLI_MODULES = ("pld_optim.cli.common", "pld_optim.cli.compile", "pld_optim.cli.folder", "pld_optim.cli.compare",
               "pld_optim.cli.evaluate")


def write_rows(path: Path, rows: list[dict], fields=("id", "sentence", "label"), encoding="utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields))
        writer.writeheader()
        writer.writerows(rows)
    return path


def cue_rows(n: int = 96, offset: int = 0) -> list[dict]:
    return [{"id": ex.id, "sentence": ex.sentence, "label": ex.label} for ex in make_examples(n, offset)]


def copies(rows: list[dict], into: str, n: int, source: str = "train") -> list[dict]:
    """`n` rows of the `source` split again, under new ids that the loader hashes into split `into`: the same
    inputs in two splits, which no id comparison finds."""
    from pld_optim.datasets.common import split_of

    out = []
    for row in (r for r in rows if split_of(r["id"]) == source):
        k = 0
        while split_of(f"{row['id']}-copy{k}") != into:
            k += 1
        out.append({**row, "id": f"{row['id']}-copy{k}"})
        if len(out) == n:
            break
    return out


def write_config(tmp_path: Path, rows: list[dict] | None = None, *, name: str = "c.yaml", search: dict | None = None,
                 **sections) -> Path:
    """A generic-CSV config for the cue task (train, dev and test hashed from the ids), small enough that a
    scripted compile takes a few seconds. `sections` update the YAML's top-level sections (dicts merge)."""
    data = write_rows(tmp_path / "data.csv", rows if rows is not None else cue_rows())
    cfg = {"name": "cues",
           "data": {"dataset": "generic", "path": str(data), "inputs": ["sentence"], "labels": sorted(CUES),
                    "id_field": "id"},
           "student": {"model": "student", "max_tokens": 8, "threads": 1},
           "teacher": {"model": "teacher", "max_tokens": 200, "threads": 1},
           "pld": {"n_clusters": 1, "max_refine_iters": 0, "contribution": False},
           "seed": 0}
    if search is not None:
        cfg["search"] = search
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Scripted:
    """The LMs the CLI builds, by model name; each keeps its engine's call count."""

    def __init__(self, teacher=teacher_respond, student=student_respond):
        self.teacher = scripted_lm(teacher, "teacher")
        self.student = scripted_lm(student, "student")

    def lm(self, cfg, **kwargs):
        return self.teacher if cfg.model == "teacher" else self.student

    def calls(self, role: str) -> int:
        return getattr(self, role)._engine_spec.calls


@pytest.fixture
def scripted_cli(monkeypatch):
    """`scripted_cli()` (or `scripted_cli(teacher=f, student=g)`): the CLI runs on scripted LMs."""
    def install(**respond) -> Scripted:
        lms = Scripted(**respond)
        for module in CLI_MODULES:  # all imported first: one importing another must not copy a patched name
            importlib.import_module(module)
        for module in CLI_MODULES:
            monkeypatch.setattr(f"{module}.lm_from_config", lms.lm, raising=False)
        monkeypatch.setattr("pld_optim.cli.common.preflight_all", lambda *a, **k: None)
        return lms
    return install


def cli(*argv: str) -> tuple[int, str, str]:
    """The real `pld-optim` in this process; (exit code, stdout, stderr) as a user sees them."""
    import contextlib
    import io

    from pld_optim.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def lock_holder():
    """`lock_holder(folder)`: another process holds `folder`'s lock until the test ends."""
    held = []

    def hold(folder: Path) -> subprocess.Popen:
        from pld_optim.run.folder import LOCK

        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(folder / LOCK)], stdout=subprocess.PIPE,
                                text=True)
        held.append(proc)
        assert proc.stdout.readline().strip() == "locked"
        return proc

    yield hold
    for proc in held:
        proc.kill()
        proc.wait()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (the lock file aside) and its bytes: what "nothing changed" compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".pld.lock"}


def compile_run(tmp_path: Path, **config) -> tuple[Path, Path]:
    """A finished CLI compile of the cue task into `tmp_path / "run"`: its config (`write_config(tmp_path,
    **config)`) and folder. Call inside a test that uses the scripted_cli fixture."""
    config_path, out = write_config(tmp_path, **config), tmp_path / "run"
    code, _, err = cli("compile", str(config_path), "--out", str(out))
    assert code == 0, err
    return config_path, out


def compile_pareto_run(tmp_path: Path, n_trials: int) -> tuple[Path, Path]:
    """A finished CLI compile with a multi-objective search (so pick has a front): its config and folder.
    Call inside a test that uses the scripted_cli fixture."""
    return compile_run(tmp_path, search={"multi_objective": True, "n_trials": n_trials, "minibatch_size": 8})


@pytest.fixture
def compiled(tmp_path, scripted_cli):
    """(config, folder, the scripted LMs) of a real (scripted) CLI compile; import scripted_cli beside it."""
    lms = scripted_cli()
    return (*compile_run(tmp_path), lms)


@pytest.fixture
def compiled_pareto(tmp_path, scripted_cli):
    """The same, with a multi-objective search of 6 trials (so pick has a front)."""
    lms = scripted_cli()
    return (*compile_pareto_run(tmp_path, n_trials=6), lms)


def compile_into(out: Path, teacher_name: str = "teacher", seed: int = 0, data=None, **kwargs) -> int:
    """A scripted `PLD(out_dir=out).compile` of the cue task (one cluster, no refinement); the number of calls
    its teacher took, which is what a resumed or refused run must not spend."""
    teacher = scripted_lm(teacher_respond, teacher_name)
    train, dev = data or (make_examples(30), make_examples(12, offset=100))
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        PLD(teacher=teacher, n_clusters=1, max_refine_iters=0, out_dir=out, seed=seed, **kwargs).compile(
            dspy.Predict(Classify), trainset=train, valset=dev)
    return teacher._engine_spec.calls
