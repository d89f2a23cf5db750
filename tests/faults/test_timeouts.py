"""A server that takes the call and never answers (issue 26): every server model's call has a timeout that a
config and `make_lm` set; a stall stops the command within about timeout x tries with one line naming the
model, its address and the fix, instead of one timeout per example; and the rerun resumes from what was paid.

The silent server here accepts connections and never reads or writes; it closes every socket by itself after
SILENT_FOR seconds, so code that would wait forever fails the test instead of hanging it.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import dspy
import pytest
from conftest import Classify, make_examples, student_respond, teacher_respond
from harness import CLI_MODULES, cli, scripted_cli, write_config  # noqa: F401 - a fixture

from pld_optim import PLD
from pld_optim.cli.common import lm_from_config
from pld_optim.cli.config import load_config
from pld_optim.evaluation.scoring import run_student
from pld_optim.evaluation.task import resolve_task
from pld_optim.lm.adapter import LabelAdapter
from pld_optim.lm.factory import DEFAULT_RETRIES, DEFAULT_TIMEOUT, LMStalled, as_lm, make_lm
from pld_optim.lm.ollama import OllamaError, preflight
from pld_optim.lm.scripted import ScriptedEngine
from pld_optim.testing import scripted_lm

sys.path.insert(0, str(Path(__file__).parents[1]))
from ollama_server import OllamaStub  # noqa: E402

SILENT_FOR = 20.0
MINING = "You write labelling rules for a small model"  # how both mining signatures open


class SilentServer:
    """Accepts every connection, then says nothing until `close` (or SILENT_FOR seconds)."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()
        self.deadline = threading.Timer(SILENT_FOR, self.close)
        self.deadline.daemon = True
        self.deadline.start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.deadline.cancel()
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent():
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def own_cache(monkeypatch):
    """A memory-only DSPy cache for each test (the CLI's compile replaces it with its folder's; restored after)."""
    monkeypatch.setattr(dspy, "cache", dspy.clients.Cache(enable_disk_cache=False, enable_memory_cache=True,
                                                          disk_cache_dir=None))
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")  # lm15 wants a key before it connects


def teacher_server(answered: int | None) -> OllamaStub:
    """Ollama's API with the scripted cue teacher behind it: the first `answered` mining calls are answered,
    the later ones only after 3 s (longer than the tests' timeout)."""
    server = OllamaStub(ScriptedEngine(teacher_respond), served=["gemma3:4b"]).start()
    server.mining = 0

    def fault(path, body):
        if path == "/v1/chat/completions" and any(MINING in m["content"] for m in body["messages"]
                                                  if m["role"] == "system"):
            server.mining += 1
            if answered is not None and server.mining > answered:
                return ("sleep", 3.0)
        return None

    server.fault = fault
    return server


def mined_log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "mined.jsonl").read_text().splitlines()]


def error_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("pld-optim: error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_a_silent_server_stops_the_call_naming_model_address_and_fix(silent):
    lm = make_lm("openai/gpt-4o-mini", api_base=silent.url + "/v1", timeout=1, retries=1)
    start = time.monotonic()
    with pytest.raises(LMStalled) as stalled:
        lm("Name a colour.")
    assert time.monotonic() - start < 8  # 2 tries of 1 s and DSPy's 1 s backoff, not litellm's 600 s
    message = str(stalled.value)
    assert "openai/gpt-4o-mini" in message and silent.url + "/v1" in message and "1 s, 2 tries" in message
    assert "`timeout:`" in message and "run the same command again" in message and "\n" not in message
    # Its copies share the verdict: the next call fails at once and never reaches the server.
    connections = len(silent.accepted)
    start = time.monotonic()
    with pytest.raises(LMStalled):
        lm.copy(rollout_id=1)("Name another colour.")
    assert time.monotonic() - start < 0.5 and len(silent.accepted) == connections


def test_a_stall_stops_a_parallel_evaluation_instead_of_failing_every_example(silent):
    """DSPy's thread pool keeps running queued examples after the first error leaves it: each would wait out
    the timeout on its own. After the stall they fail at once, so the server sees one call per thread."""
    examples = make_examples(12)
    lm = make_lm("ollama_chat/gemma3:4b", api_base=silent.url, timeout=1, retries=0)
    start = time.monotonic()
    with dspy.context(lm=lm, adapter=LabelAdapter()), pytest.raises(LMStalled, match="ollama_chat/gemma3:4b"):
        run_student(dspy.Predict(Classify), examples, resolve_task(dspy.Predict(Classify)), num_threads=3)
    assert time.monotonic() - start < 6
    time.sleep(1.5)  # the queued examples would have connected by now
    assert len(silent.accepted) <= 3


def test_pld_optim_evaluate_on_a_silent_server_exits_with_one_line_in_bounded_time(tmp_path, silent):
    """A real process: DSPy's worker threads must not keep it alive after the error, one timeout per example."""
    config = write_config(tmp_path, student={"model": "openai/gpt-4o-mini", "api_base": silent.url + "/v1",
                                             "timeout": 1, "retries": 0, "threads": 4})
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pld_optim", "evaluate", str(config), "--program", "none"],
                          capture_output=True, text=True, timeout=SILENT_FOR + 30,
                          env={**os.environ, "OPENAI_API_KEY": "sk-test", "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    assert time.monotonic() - start < SILENT_FOR  # imports, then about 1 s; the silent server never hung up
    assert proc.returncode == 2 and proc.stdout == ""
    line = error_line(proc.stderr)
    assert "openai/gpt-4o-mini" in line and silent.url + "/v1" in line and "within 1 s, 1 try" in line


def test_the_configs_timeout_and_retries_reach_the_lm(tmp_path):
    config = write_config(tmp_path, teacher={"model": "openai/gpt-4o-mini", "timeout": 30, "retries": 0},
                          student={"model": "ollama_chat/gemma3:4b"})
    cfg = load_config(config)
    teacher, student = lm_from_config(cfg.teacher), lm_from_config(cfg.student)
    assert teacher.kwargs["timeout"] == 30 and teacher.num_retries == 0
    assert student.kwargs["timeout"] == DEFAULT_TIMEOUT and student.num_retries == DEFAULT_RETRIES
    # PLD(teacher="provider/model") goes through as_lm: the same default.
    assert as_lm("gemini/gemini-2.5-flash").kwargs["timeout"] == DEFAULT_TIMEOUT
    # The embedded engine runs in-process: no server to wait for, so no timeout to promise.
    with pytest.raises(ValueError, match="timeout and retries are for server models"):
        make_lm("local/gemma3-270m", timeout=5)


@pytest.mark.parametrize(("section", "expected"), [
    ({"timeout": 0}, "student.timeout"), ({"timeout": ".inf"}, "student.timeout"),
    ({"retries": -1}, "student.retries"), ({"model": "local/gemma3-270m", "timeout": 30}, "timeout: only for server")])
def test_a_bad_timeout_is_named_before_any_call(tmp_path, section, expected):
    config = write_config(tmp_path, student=section)
    if section.get("timeout") == ".inf":
        config.write_text(config.read_text().replace("'.inf'", ".inf"))
    with pytest.raises(ValueError, match=expected):
        load_config(config)


@pytest.mark.parametrize("command", ["compile", "evaluate"])
@pytest.mark.parametrize("role", ["student", "teacher"])
@pytest.mark.parametrize(("setting", "value"), [("timeout", "0"), ("timeout", "-1"), ("timeout", ".inf"),
                                                ("retries", "-1")])
def test_a_bad_timeout_in_the_config_stops_the_cli_before_any_call(tmp_path, scripted_cli, command, role,  # noqa: F811
                                                                   setting, value):
    """The same check through the commands a user runs: exit 2, one line naming the section's setting, and
    neither scripted LM called (a dry run spends nothing anyway; evaluate would call the student)."""
    lms = scripted_cli()
    config = write_config(tmp_path, **{role: {setting: "BAD"}})
    config.write_text(config.read_text().replace(f"{setting}: BAD", f"{setting}: {value}"))
    out = tmp_path / "run"
    argv = (["compile", str(config), "--out", str(out), "--dry-run"] if command == "compile"
            else ["evaluate", str(config), "--program", "none"])
    code, stdout, err = cli(*argv)
    assert code == 2, err
    line = error_line(err)
    assert f"{role}.{setting}" in line and str(config) in line, line
    other = "teacher" if role == "student" else "student"
    assert f"{other}.{setting}" not in line, line
    assert lms.calls("student") == lms.calls("teacher") == 0
    assert not out.exists() and stdout == ""


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"timeout": 0}, r"^timeout must be a positive number of seconds, got 0$"),
    ({"timeout": -1}, r"^timeout must be a positive number of seconds, got -1$"),
    ({"timeout": float("inf")}, r"^timeout must be a positive number of seconds, got inf$"),
    ({"retries": -1}, r"^retries must be a whole number from 0 to 10, got -1$")])
def test_make_lm_refuses_a_bad_timeout_before_any_call(silent, kwargs, expected):
    """In Python the LM is made before any call: a bad setting fails there, by name, not on the first call
    (litellm's own error for a zero timeout, or a stall after no wait at all)."""
    with pytest.raises(ValueError, match=expected):
        make_lm("openai/x", api_base=silent.url + "/v1", **kwargs)
    time.sleep(0.2)  # a connection the constructor started would have been accepted by now
    assert silent.accepted == []


def test_a_longer_timeout_replays_the_calls_a_shorter_one_paid_for():
    """The rerun a stall asks for may raise the timeout; the cache must still hold what was answered."""
    server = OllamaStub(ScriptedEngine(lambda system, user: "Blue."), served=["gemma3:4b"]).start()
    prompt = f"Name a colour ({time.time_ns()})."
    try:
        make_lm("ollama_chat/gemma3:4b", api_base=server.url, timeout=30)(prompt)
        make_lm("ollama_chat/gemma3:4b", api_base=server.url, timeout=90)(prompt)
    finally:
        server.shutdown()
    assert sum(path == "/v1/chat/completions" for path, _ in server.requests) == 1


def test_ollama_preflight_names_a_stall_not_a_missing_server(silent):
    with pytest.raises(OllamaError) as err:
        preflight("ollama_chat/gemma3:4b", silent.url, timeout=1)
    assert "sent no answer within 1 s" in str(err.value) and "Start it" not in str(err.value)


def compile_with(teacher_lm, out: Path):
    train, dev = make_examples(30), make_examples(12, offset=100)
    with dspy.context(lm=scripted_lm(student_respond, "student")):
        return PLD(teacher=teacher_lm, n_clusters=1, max_refine_iters=0, max_train_examples=6, contribution=False,
                   num_threads=1, out_dir=out).compile(dspy.Predict(Classify), trainset=train, valset=dev)


def test_a_compile_whose_teacher_stalls_stops_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    stalling = teacher_server(answered=2)
    start = time.monotonic()
    try:
        with pytest.raises(LMStalled, match=f"ollama_chat/gemma3:4b at {stalling.url}/v1"):
            compile_with(make_lm("ollama_chat/gemma3:4b", api_base=stalling.url, max_tokens=200, timeout=1,
                                 retries=0), out)
    finally:
        stalling.shutdown()
    assert time.monotonic() - start < 20
    assert [m["error"] for m in mined_log(out)] == [None, None]  # what was paid is checkpointed

    working = teacher_server(answered=None)
    try:
        compiled = compile_with(make_lm("ollama_chat/gemma3:4b", api_base=working.url, max_tokens=200), out)
    finally:
        working.shutdown()
    assert compiled.pld_rules.active_rules()
    assert working.mining == 6 - 2  # only the examples the first run did not mine


def test_pld_optim_compile_with_a_stalled_teacher_says_so_and_resumes(tmp_path, monkeypatch):
    student = scripted_lm(student_respond, "student")
    for module in CLI_MODULES:
        monkeypatch.setattr(f"{module}.lm_from_config",
                            lambda cfg, **kw: student if cfg.model == "student" else lm_from_config(cfg, **kw),
                            raising=False)
    stalling = teacher_server(answered=2)
    teacher = {"model": "ollama_chat/gemma3:4b", "api_base": stalling.url, "timeout": 1, "retries": 0}
    config = write_config(tmp_path, teacher=teacher, pld={"max_train_examples": 6})
    out = tmp_path / "run"
    try:
        code, _, err = cli("compile", str(config), "--out", str(out))
    finally:
        stalling.shutdown()
    assert code != 0
    line = error_line(err)
    assert f"ollama_chat/gemma3:4b at {stalling.url}/v1 sent no answer within 1 s" in line
    assert "run the same command again" in line
    assert len(mined_log(out)) == 2 and (out / "cache").is_dir()

    working = teacher_server(answered=None)  # the server is back, on another port: the config says where
    write_config(tmp_path, teacher={**teacher, "api_base": working.url}, pld={"max_train_examples": 6})
    try:
        code, _, err = cli("compile", str(config), "--out", str(out))
    finally:
        working.shutdown()
    assert code == 0, err
    assert working.mining == 6 - 2
