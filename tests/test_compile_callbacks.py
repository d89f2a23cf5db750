"""DSPy's compile callbacks (`BaseCallback.on_compile_start/end`, wired by `Teleprompter.__init_subclass__`
around `compile` only) fire for PLD whatever the entry point: Python, `pld-optim compile`, `pld-optim compare`."""

from __future__ import annotations

import dspy
from dspy.utils.callback import BaseCallback
from faults.harness import cli, compile_into, scripted_cli, write_config  # noqa: F401 - scripted_cli: a fixture


class Compiles(BaseCallback):
    def __init__(self):
        self.started, self.ended = [], []

    def on_compile_start(self, call_id, instance, inputs):
        self.started.append(type(instance).__name__)

    def on_compile_end(self, call_id, outputs, exception=None):
        self.ended.append(exception)


def test_a_python_compile_fires_the_compile_callbacks(tmp_path):
    seen = Compiles()
    with dspy.context(callbacks=[seen]):
        assert compile_into(tmp_path / "out") > 0  # the teacher was called: a real compile ran
    assert seen.started == ["PLD"] and seen.ended == [None]


def test_a_cli_compile_goes_through_compile_and_fires_the_callbacks(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    seen = Compiles()
    config = write_config(tmp_path)
    with dspy.context(callbacks=[seen]):
        code, out, err = cli("compile", str(config), "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert seen.started == ["PLD"] and seen.ended == [None]


def test_a_cli_compile_that_fails_reports_the_exception_to_the_callback(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli(teacher=lambda system, user: {"rationale": "", "rule": ""})  # no usable rule at all
    seen = Compiles()
    with dspy.context(callbacks=[seen]):
        code, _, err = cli("compile", str(write_config(tmp_path)), "--out", str(tmp_path / "run"))
    assert code == 2 and "no usable rule" in err, err
    assert seen.started == ["PLD"] and isinstance(seen.ended[0], RuntimeError)


def test_compare_compiles_pld_through_compile(tmp_path, scripted_cli):  # noqa: F811
    scripted_cli()
    seen = Compiles()
    with dspy.context(callbacks=[seen]):
        code, _, err = cli("compare", str(write_config(tmp_path)), "--optimizers", "zero-shot,pld", "--out",
                           str(tmp_path / "cmp"))
    assert code == 0, err
    assert seen.started == ["PLD"] and seen.ended == [None]
