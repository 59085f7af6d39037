"""A loopback server that speaks Ollama's API (``/api/chat`` ...); import it from tests/_servers.py."""

from __future__ import annotations

from typing import Any

if __package__:  # imported as tests._ollama_server
    from ._loopback import LoopbackServer, send_json
else:  # imported with tests/ on sys.path (as _ollama_server), or tests/_servers.py run as a script
    from _loopback import LoopbackServer, send_json

__all__ = ["OllamaServer"]


class OllamaServer(LoopbackServer):
    """Speaks ``/api/chat``, ``/api/tags``, ``/api/show`` (and ``/api/version``).

    ``models`` maps model names to their capabilities (``["completion", "vision"]`` for a
    vision model); ``/api/show`` of an unknown model is a 404 like Ollama's.
    """

    def __init__(self, *, models: dict[str, list[str]] | None = None, **kw: Any):
        super().__init__(**kw)
        self.models = models if models is not None else {"qwen3-vl:8b": ["completion", "vision"]}

    def route(self, h, method, path, body):
        if path == "/api/chat" and method == "POST":
            self.chat(h, body)
        elif path == "/api/tags":
            send_json(h, 200, {"models": [
                {"name": m, "model": m, "modified_at": "2025-01-01T00:00:00Z", "size": 1, "digest": "0" * 12,
                 "details": {"family": "test", "format": "gguf"}} for m in self.models]})
        elif path == "/api/show" and method == "POST":
            name = (body or {}).get("model", "")
            caps = self.models.get(name, self.models.get(name.removesuffix(":latest")))
            if caps is None:
                send_json(h, 404, {"error": f"model '{name}' not found"})
            else:
                send_json(h, 200, {"capabilities": caps, "details": {"family": "test"}, "model_info": {},
                                   "modified_at": "2025-01-01T00:00:00Z"})
        elif path == "/api/version":
            send_json(h, 200, {"version": "0.12.0"})
        else:
            send_json(h, 404, {"error": f"no route {method} {path}"})

    def request_schema(self, body):
        fmt = (body or {}).get("format")
        return fmt if isinstance(fmt, dict) else self.schema

    def send_chat_reply(self, h, body, content, content_type=None):
        send_json(h, 200, {
            "model": (body or {}).get("model", ""), "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": content}, "done": True, "done_reason": "stop",
            "total_duration": int(self.latency * 1e9), "eval_count": 1,
        }, content_type)
