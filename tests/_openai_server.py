"""A loopback server that speaks OpenAI's chat API (``/v1/chat/completions`` ...); import it
from tests/_servers.py."""

from __future__ import annotations

import time
from typing import Any

if __package__:  # imported as tests._openai_server
    from ._loopback import LoopbackServer, send_json
else:  # imported with tests/ on sys.path (as _openai_server), or tests/_servers.py run as a script
    from _loopback import LoopbackServer, send_json

__all__ = ["OpenAIServer"]


class OpenAIServer(LoopbackServer):
    """Speaks ``/v1/chat/completions`` and ``/v1/models``.

    ``supports_json_schema=False`` answers a request with ``response_format`` of type
    ``json_schema`` with HTTP 400 (like servers without structured output);
    ``supports_json_object=False`` does the same for ``json_object``.
    """

    def __init__(self, *, models: list[str] | None = None, supports_json_schema: bool = True,
                 supports_json_object: bool = True, **kw: Any):
        super().__init__(**kw)
        self.models = models if models is not None else ["test-vl"]
        self.supports_json_schema = supports_json_schema
        self.supports_json_object = supports_json_object

    def route(self, h, method, path, body):
        if path == "/v1/chat/completions" and method == "POST":
            rf = (body or {}).get("response_format") or {}
            if (rf.get("type") == "json_schema" and not self.supports_json_schema) or (
                rf.get("type") == "json_object" and not self.supports_json_object
            ):
                with self._lock:
                    self.chat_requests.append(body)
                send_json(h, 400, {"error": {"message": f"response_format type {rf.get('type')} is not supported",
                                             "type": "invalid_request_error", "param": "response_format"}})
                return
            self.chat(h, body)
        elif path == "/v1/models":
            send_json(h, 200, {"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "lens-tests"} for m in self.models]})
        else:
            send_json(h, 404, {"error": {"message": f"no route {method} {path}", "type": "not_found"}})

    def request_schema(self, body):
        rf = (body or {}).get("response_format") or {}
        if rf.get("type") == "json_schema":
            return (rf.get("json_schema") or {}).get("schema")
        return self.schema

    def send_error_reply(self, h, status, message):
        send_json(h, status, {"error": {"message": message, "type": "server_error"}})

    def send_chat_reply(self, h, body, content, content_type=None):
        send_json(h, 200, {
            "id": f"chatcmpl-{len(self.served)}", "object": "chat.completion", "created": int(time.time()),
            "model": (body or {}).get("model", ""),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }, content_type)
