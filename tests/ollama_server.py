"""A small Ollama-API server for tests, answering with a real GGUF model through llama-cpp-python.

No Ollama binary can be installed where this project is built, so the Ollama path is tested against
this server. It speaks the HTTP API as Ollama documents it (docs/api.md and docs/openai.md):
`GET /`, `/api/version`, `/api/tags`, `POST /api/show`, `/api/chat` (NDJSON stream by default, or one
object with "stream": false), `/api/pull` (NDJSON progress) and the OpenAI-compatible
`/v1/chat/completions`. Like Ollama, a request without a token limit generates to the end of the
context. Every request body is recorded in `server.requests` for assertions.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dspy.lm15 import Config, Message, Request

from pld_optim.lm.engine import LlamaCppEngine


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


class OllamaStub(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, engine: LlamaCppEngine, served: list[str], pullable: list[str] | None = None, port: int = 0):
        super().__init__(("127.0.0.1", port), _Handler)
        self.engine = engine
        self.models = {name: {"modified_at": _now()} for name in served}
        self.pullable = set(pullable or [])
        self.requests: list[tuple[str, dict]] = []
        # Fault injection for tests: fault(path, body) -> None (answer normally), ("status", code, body),
        # ("sleep", seconds) then answer, or ("content", text) to answer with that text instead of the model.
        self.fault = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request, client_address) -> None:
        """A client that timed out and hung up is what the stall tests provoke, not a server fault: stay quiet
        (socketserver would print a traceback into the stderr the tests read)."""
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)

    def start(self) -> OllamaStub:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def generate(self, messages: list[dict], *, max_tokens: int | None, temperature: float, schema: dict | None,
                 seed: int | None) -> tuple[str, dict]:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = tuple(Message.user(m["content"]) if m["role"] == "user" else Message.assistant(m["content"])
                      for m in messages if m["role"] != "system")
        fmt = None if schema is None else {"type": "json_schema", "name": "ollama_format", "schema": schema}
        limit = max_tokens if max_tokens and max_tokens > 0 else self.engine.n_ctx  # Ollama's num_predict=-1
        request = Request(model="stub", messages=turns, system=system or None,
                          config=Config(max_tokens=limit, temperature=temperature, response_format=fmt, seed=seed))
        start = time.perf_counter()
        response = self.engine.complete(request)
        return response.message.text, {"prompt_eval_count": response.usage.input_tokens,
                                       "eval_count": response.usage.output_tokens,
                                       "total_duration": int((time.perf_counter() - start) * 1e9),
                                       "done_reason": response.finish_reason}


def _schema_of(fmt) -> dict | None:
    """Ollama's `format` is "json" or a JSON schema; OpenAI's response_format wraps a schema."""
    if fmt in (None, ""):
        return None
    if fmt == "json":
        return {"type": "object"}
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return fmt.get("json_schema", {}).get("schema") or fmt.get("schema")
    if isinstance(fmt, dict) and fmt.get("type") == "json_object":
        return {"type": "object"}
    return fmt if isinstance(fmt, dict) else None


class _Handler(BaseHTTPRequestHandler):
    server: OllamaStub

    def log_message(self, *args):  # keep test output clean
        pass

    def _json(self, status: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, chunks) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in chunks:
            line = json.dumps(chunk).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
        self.wfile.write(b"0\r\n\r\n")

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        self.server.requests.append((self.path, body))
        return body

    def _missing(self, name: str, openai: bool = False) -> None:
        if openai:
            self._json(404, {"error": {"message": f'model "{name}" not found, try pulling it first',
                                       "type": "api_error", "param": None, "code": None}})
        else:
            self._json(404, {"error": f"model '{name}' not found"})

    def do_GET(self):
        self.server.requests.append((self.path, {}))
        if self.path == "/":
            body = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/api/version":
            self._json(200, {"version": "0.6.5-stub"})
        elif self.path == "/api/tags":
            self._json(200, {"models": [
                {"name": n, "model": n, "modified_at": m["modified_at"], "size": 253_000_000,
                 "digest": uuid.uuid5(uuid.NAMESPACE_DNS, n).hex,
                 "details": {"format": "gguf", "family": "gemma3", "parameter_size": "268M",
                             "quantization_level": "Q4_K_M"}} for n, m in self.server.models.items()]})
        else:
            self._json(404, {"error": "404 page not found"})

    def do_POST(self):
        body = self._body()
        name = body.get("model") or body.get("name") or ""
        fault = self.server.fault(self.path, body) if self.server.fault else None
        if fault and fault[0] == "status":
            return self._json(fault[1], fault[2])
        if fault and fault[0] == "sleep":
            time.sleep(fault[1])
        self._content = fault[1] if fault and fault[0] == "content" else None
        if self.path == "/api/show":
            if name not in self.server.models:
                return self._missing(name)
            return self._json(200, {"modelfile": f"FROM {name}", "parameters": "", "template": "{{ .Prompt }}",
                                    "details": {"format": "gguf", "family": "gemma3"}, "model_info": {},
                                    "capabilities": ["completion"],
                                    "modified_at": self.server.models[name]["modified_at"]})
        if self.path == "/api/pull":
            if name not in self.server.pullable and name not in self.server.models:
                return self._json(500, {"error": "pull model manifest: file does not exist"})
            self.server.models.setdefault(name, {"modified_at": _now()})
            steps = [{"status": "pulling manifest"},
                     {"status": "pulling abc123", "digest": "sha256:abc123", "total": 100, "completed": 100},
                     {"status": "verifying sha256 digest"}, {"status": "writing manifest"}, {"status": "success"}]
            return self._stream(steps) if body.get("stream", True) else self._json(200, {"status": "success"})
        if self.path == "/api/chat":
            if name not in self.server.models:
                return self._missing(name)
            options = body.get("options") or {}
            text, stats = self.server.generate(body.get("messages", []), max_tokens=options.get("num_predict"),
                                               temperature=options.get("temperature", 0.8),
                                               schema=_schema_of(body.get("format")), seed=options.get("seed"))
            final = {"model": name, "created_at": _now(), "message": {"role": "assistant", "content": ""},
                     "done": True, "done_reason": "length" if stats["done_reason"] == "length" else "stop",
                     "total_duration": stats["total_duration"], "load_duration": 0,
                     "prompt_eval_count": stats["prompt_eval_count"], "prompt_eval_duration": 0,
                     "eval_count": stats["eval_count"], "eval_duration": stats["total_duration"]}
            if body.get("stream", True):
                words = text.split(" ")
                chunks = [{"model": name, "created_at": _now(),
                           "message": {"role": "assistant", "content": w + (" " if i < len(words) - 1 else "")},
                           "done": False} for i, w in enumerate(words)]
                return self._stream([*chunks, final])
            final["message"]["content"] = text
            return self._json(200, final)
        if self.path == "/v1/chat/completions":
            if name not in self.server.models:
                return self._missing(name, openai=True)
            if self._content is not None:
                text, stats = self._content, {"prompt_eval_count": 1, "eval_count": 1, "done_reason": "stop",
                                              "total_duration": 0}
            else:
                text, stats = self.server.generate(
                    body.get("messages", []), max_tokens=body.get("max_tokens") or body.get("max_completion_tokens"),
                    temperature=body.get("temperature", 1.0), schema=_schema_of(body.get("response_format")),
                    seed=body.get("seed"))
            return self._json(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex[:8]}", "object": "chat.completion", "created": int(time.time()),
                "model": name, "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": "length" if stats["done_reason"] == "length" else "stop"}],
                "usage": {"prompt_tokens": stats["prompt_eval_count"], "completion_tokens": stats["eval_count"],
                          "total_tokens": stats["prompt_eval_count"] + stats["eval_count"]}})
        self._json(404, {"error": "404 page not found"})


def main() -> None:  # `python tests/ollama_server.py --port 11434` serves gemma3:4b by hand
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--model", default="gemma3-270m")
    args = parser.parse_args()
    server = OllamaStub(LlamaCppEngine(args.model), served=["gemma3:4b"], port=args.port)
    print(f"Ollama stub on {server.url} serving gemma3:4b with {args.model}")
    server.serve_forever()


if __name__ == "__main__":
    main()
