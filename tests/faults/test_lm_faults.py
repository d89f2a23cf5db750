"""LM faults against a real server on loopback (tests/ollama_server.py: Ollama's API, a real GGUF behind it).

Transient faults (429) are retried with backoff by DSPy; anything else is captured per example and the run
finishes with a failure count.
"""

import json
import threading
import time

import dspy
import pytest

pytest.importorskip("llama_cpp")

from conftest import Classify, stage_context  # noqa: E402
from ollama_server import OllamaStub  # noqa: E402

from pld_optim.evaluation.scoring import run_student, score_outcomes  # noqa: E402
from pld_optim.evaluation.task import resolve_task  # noqa: E402
from pld_optim.files import JsonlLog  # noqa: E402
from pld_optim.lm.adapter import LabelAdapter  # noqa: E402
from pld_optim.lm.engine import LlamaCppEngine  # noqa: E402
from pld_optim.lm.factory import make_lm  # noqa: E402
from pld_optim.records import MinedRule  # noqa: E402
from pld_optim.stages.mine import mine  # noqa: E402

pytestmark = pytest.mark.real_model


EXAMPLES = [dspy.Example(id=f"e{i}", sentence=f"Sentence {i} about a mother.", label="gender").with_inputs("sentence")
            for i in range(6)]
ENGINE = None


def stub(**kwargs) -> OllamaStub:
    global ENGINE
    ENGINE = ENGINE or LlamaCppEngine("gemma3-270m", n_ctx=2048)
    return OllamaStub(ENGINE, served=["gemma3:4b"], **kwargs).start()


def lm_for(server, **kwargs):
    return make_lm("ollama_chat/gemma3:4b", api_base=server.url, max_tokens=12, cache=False, **kwargs)


def sentence_of(body) -> str:
    return body["messages"][-1]["content"]


def test_rate_limits_are_retried_with_backoff():
    server = stub()
    seen = []

    def fault(path, body):
        seen.append(time.perf_counter())
        if len(seen) <= 2:
            return ("status", 429, {"error": {"message": "rate limited", "type": "rate_limit"}})
        return None

    server.fault = fault
    with dspy.context(lm=lm_for(server), adapter=LabelAdapter()):
        pred = dspy.Predict(Classify)(sentence="Her mother cooked.")
    server.shutdown()
    assert pred.label in ("gender", "race", "religion") and len(seen) == 3
    assert seen[2] - seen[0] > 0.1  # backed off before retrying


def test_timeouts_empty_and_out_of_set_answers_are_captured_per_example():
    server = stub()

    def fault(path, body):
        text = sentence_of(body) if "messages" in body else ""
        if path != "/v1/chat/completions":
            return None
        if "Sentence 1 " in text:
            return ("sleep", 4.0)
        if "Sentence 2 " in text:
            return ("content", "")
        if "Sentence 3 " in text:
            return ("content", "[[ ## label ## ]]\nbanana\n\n[[ ## completed ## ]]")
        if "Sentence 4 " in text:
            return ("status", 500, {"error": "model crashed"})
        return ("content", "[[ ## label ## ]]\ngender\n\n[[ ## completed ## ]]")

    server.fault = fault
    task = resolve_task(dspy.Predict(Classify))
    lm = dspy.LM("ollama_chat/gemma3:4b", api_base=server.url + "/v1", max_tokens=12, cache=False, timeout=1.5,
                 num_retries=0)
    with dspy.context(lm=lm, adapter=LabelAdapter()):
        outcomes = run_student(dspy.Predict(Classify), EXAMPLES, task, num_threads=2)
    server.shutdown()
    by_id = {o.example_id: o for o in outcomes}
    assert len(outcomes) == 6
    assert by_id["e1"].error and ("imeout" in by_id["e1"].error or "timed out" in by_id["e1"].error)
    assert by_id["e2"].error  # empty answer
    assert by_id["e3"].error  # 'banana' is not a label and cannot be parsed into one
    assert by_id["e4"].error and ("500" in by_id["e4"].error or "crashed" in by_id["e4"].error)
    assert by_id["e0"].error is None and by_id["e5"].error is None
    score = score_outcomes(outcomes, task.labels)
    assert score.failures == 4 and score.n == 6


def test_a_refusing_teacher_is_recorded_not_fatal():
    server = stub()
    server.fault = lambda path, body: (("content", "I'm sorry, I can't help with labelling that.")
                                       if path == "/v1/chat/completions" else None)
    with dspy.context(adapter=LabelAdapter()):  # as PLD.compile runs every stage
        result = mine(stage_context(lm_for(server), EXAMPLES, num_threads=1), EXAMPLES[:3])
    server.shutdown()
    assert len(result.mined) == 3 and all(m.error for m in result.mined) and not result.good()
    assert result.failures + len(result.refusals) == 3  # each recorded, as a failure or a refusal


def test_server_dying_mid_mining_then_the_rerun_resumes(tmp_path):
    checkpoint = JsonlLog(tmp_path / "mined.jsonl", MinedRule)
    # Two cues: the stage's gate knows the task text, so "sentence" alone is no cue (stages/gates.py no_cue).
    answer = json.dumps({"rationale": "The word mother signals gender.",
                         "rule": "If the sentence is about a mother or her children, answer gender."})
    server = stub()
    port = server.server_address[1]
    served = []

    def fault(path, body):
        if path != "/v1/chat/completions":  # dspy's Ollama route also asks /api/show for capabilities
            return None
        served.append(sentence_of(body))
        if len(served) == 3:  # the server goes away after answering two examples
            threading.Thread(target=lambda: (server.shutdown(), server.server_close())).start()
            return ("status", 503, {"error": "shutting down"})
        return ("content", answer)

    server.fault = fault
    with dspy.context(adapter=LabelAdapter()):
        first = mine(stage_context(lm_for(server, num_retries=0), EXAMPLES, num_threads=1), EXAMPLES,
                     checkpoint=checkpoint).mined
    assert sum(m.error is None for m in first) == 2, [m.error for m in first]
    errors = [m.error for m in first if m.error]
    assert len(errors) == 4, errors  # recorded per example; the run went on to the end
    assert all("failed to connect" in e or "503" in e or "shutting down" in e for e in errors), errors

    revived = OllamaStub(ENGINE, served=["gemma3:4b"], port=port).start()
    revived.fault = lambda path, body: ("content", answer) if path == "/v1/chat/completions" else None
    with dspy.context(adapter=LabelAdapter()):
        second = mine(stage_context(lm_for(revived), EXAMPLES, num_threads=1), EXAMPLES, checkpoint=checkpoint).mined
    revived.shutdown()
    assert all(m.error is None for m in second)
    asked = [b for p, b in revived.requests if p == "/v1/chat/completions"]
    assert len(asked) == 4  # only the four that were not mined before the crash
