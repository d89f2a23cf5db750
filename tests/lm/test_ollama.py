"""The Ollama path, tested against tests/ollama_server.py: Ollama's HTTP API in front of a real GGUF
(Gemma 3 270M through llama-cpp-python). No Ollama binary can be installed where this is built."""

import socket

import dspy
import pytest

pytest.importorskip("llama_cpp")
ollama = pytest.importorskip("ollama")

from conftest import Classify  # noqa: E402
from ollama_server import OllamaStub  # noqa: E402

from pld_optim.lm.adapter import LabelAdapter  # noqa: E402
from pld_optim.lm.engine import LlamaCppEngine  # noqa: E402
from pld_optim.lm.factory import make_lm  # noqa: E402
from pld_optim.lm.ollama import OllamaError, preflight  # noqa: E402

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def server():
    stub = OllamaStub(LlamaCppEngine("gemma3-270m", n_ctx=2048), served=["gemma3:4b"], pullable=["gemma3:1b"])
    yield stub.start()
    stub.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_server_error_says_how_to_start_it():
    with pytest.raises(OllamaError) as err:
        preflight("ollama_chat/gemma3:4b", f"http://127.0.0.1:{_free_port()}")
    assert "`ollama serve`" in str(err.value) and "`ollama pull gemma3:4b`" in str(err.value)


def test_missing_model_error_and_opt_in_pull(server):
    with pytest.raises(OllamaError, match="`ollama pull gemma3:1b`.*--pull"):
        preflight("ollama_chat/gemma3:1b", server.url)
    preflight("ollama_chat/gemma3:1b", server.url, pull=True)
    assert any(path == "/api/pull" for path, _ in server.requests)
    preflight("ollama_chat/gemma3:1b", server.url)  # now listed by /api/tags
    preflight("ollama_chat/gemma3:4b", server.url + "/v1")  # a /v1 base is accepted too


def test_ollama_client_chat_streaming_and_not(server):
    client = ollama.Client(host=server.url)
    msgs = [{"role": "user", "content": "Name a colour."}]
    whole = client.chat(model="gemma3:4b", messages=msgs, options={"num_predict": 6, "temperature": 0})
    streamed = "".join(c.message.content for c in client.chat(
        model="gemma3:4b", messages=msgs, options={"num_predict": 6, "temperature": 0}, stream=True))
    assert whole.message.content and whole.message.content == streamed
    assert whole.eval_count <= 6


def test_litellm_ollama_chat_provider(server):
    import litellm

    out = litellm.completion(model="ollama_chat/gemma3:4b", api_base=server.url, max_tokens=5,
                             messages=[{"role": "user", "content": "Hi"}], temperature=0)
    assert out.choices[0].message.content
    path, body = next((p, b) for p, b in reversed(server.requests) if p != "/api/show")
    assert path == "/api/chat" and body["options"]["num_predict"] == 5


@pytest.mark.parametrize("engine", ["auto", "litellm"])
def test_dspy_lm_classifies_through_ollama_with_a_cap_and_a_label_schema(server, engine):
    if engine == "auto":
        lm = make_lm("ollama_chat/gemma3:4b", api_base=server.url, max_tokens=16, cache=False)
        assert lm.kwargs["api_base"] == server.url + "/v1"  # a bare base 404s on Ollama's /v1 routes
    else:
        lm = dspy.LM("ollama_chat/gemma3:4b", api_base=server.url, max_tokens=16, temperature=0, cache=False,
                     engine="litellm")
    with dspy.context(lm=lm, adapter=LabelAdapter()):
        pred = dspy.Predict(Classify)(sentence="Her mother cooked dinner.")
    assert pred.label in ("gender", "race", "religion")
    # litellm may ask /api/show for model info from a background thread, before or after the chat call.
    path, body = next((p, b) for p, b in reversed(server.requests) if p != "/api/show")
    if engine == "auto":
        assert path == "/v1/chat/completions" and body["max_tokens"] == 16
        assert body["response_format"]["json_schema"]["schema"]["properties"]["label"]["enum"] == [
            "gender", "race", "religion"]
    else:
        assert path == "/api/chat" and body["options"]["num_predict"] == 16
        assert body["format"]["properties"]["label"]["enum"] == ["gender", "race", "religion"]
    # The rules live in the system message: it must reach the server.
    assert body["messages"][0]["role"] == "system" and "Classify the bias type" in body["messages"][0]["content"]
