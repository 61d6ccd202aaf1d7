"""A small OpenAI-compatible chat server on loopback, for tests of the LLM customer and the LLM judge.

`ChatServer(answer)` serves ``GET /v1/models`` and ``POST /v1/chat/completions`` from a thread
(http.server), computing each reply with ``answer(body) -> str``: the real tiny model for the
customer (`model_answer`), or a scripted judge where no model here could judge. It records every
request body, and can fail on purpose: `fail_first` requests answer HTTP `fail_status`, and
``fail_when(body) -> bool`` fails the matching ones (every time) — what the retry and drop paths need.
"""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


def model_answer(model_name: str, device: str = "cpu") -> Callable[[dict], str]:
    """Answer with a transformers model run in the server's process (rollout.chat_client.LocalChatModel)."""
    from stateset_agents.rollout.chat_client import LocalChatModel

    model = LocalChatModel(model_name, device=device)

    def answer(body: dict) -> str:
        return asyncio.run(model.complete(body["messages"], temperature=body.get("temperature", 1.0),
                                          max_tokens=body.get("max_tokens", 16), seed=body.get("seed")))

    return answer


class ChatServer:
    def __init__(self, answer: Callable[[dict], str], *, model: str = "tiny-chat", fail_first: int = 0,
                 fail_status: int = 500, fail_when: Callable[[dict], bool] | None = None) -> None:
        self.answer = answer
        self.model = model
        self.fail_first = fail_first
        self.fail_status = fail_status
        self.fail_when = fail_when
        self.requests: list[dict[str, Any]] = []
        self.failed = 0
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "ChatServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output clean
                pass

            def _send(self, status: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                with server._lock:
                    server.requests.append(body)
                    failing = len(server.requests) <= server.fail_first or bool(
                        server.fail_when and server.fail_when(body))
                    server.failed += failing
                if failing:
                    return self._send(server.fail_status, {"error": {"message": "injected failure"}})
                if body.get("model") != server.model:
                    return self._send(404, {"error": {"message": f"model {body.get('model')!r} not served"}})
                text = server.answer(body)
                self._send(200, {"id": "chat-1", "object": "chat.completion", "model": server.model, "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
