"""Loopback HTTP servers that speak Ollama's and OpenAI's chat APIs, with scripted faults.

Reusable by any test (and benchmarks): real sockets on 127.0.0.1, port 0, served from a
thread; Lens talks to them through the real ``ollama`` / ``openai`` clients.

    from tests._servers import OllamaServer, OpenAIServer, Reply

    with OllamaServer(latency=0.2, slots=8) as srv:          # srv.url -> http://127.0.0.1:PORT
        srv.script(Reply.text("not json"), Reply.valid())    # next chat requests, in order
        srv.script(Reply.http(500), match="airplane")        # requests whose messages contain "airplane"
        ...
        srv.chat_requests     # every chat request body received (decoded JSON), in arrival order
        srv.served            # [(request body, reply content)] for the 200 replies, in order
        srv.max_active        # most chat requests handled at once
        srv.busy_seconds      # first chat request's arrival to the last reply

Replies (used in order; when none is scripted, ``default`` (``Reply.valid()``) answers):

* ``Reply.valid(answer=None)`` -- 200 with a JSON answer. Without ``answer`` one is made
  from the schema in the request (Ollama ``format``, OpenAI ``response_format``; else the
  server's ``schema``): tag = the first allowed value, reason ``"<dim> reason <n>"``,
  verdict ``"<dim> verdict <n>."``, strings ``"<dim> answer <n>"``, description
  ``"description <n>"``, where n counts chat requests from 1.
* ``Reply.text(s)`` -- 200 with ``s`` as the message content (invalid JSON, prose ...).
* ``Reply.json(obj)`` -- 200 with ``json.dumps(obj)`` (e.g. schema-violating).
* ``Reply.http(status, message)`` -- an error status with ``{"error": message}``.
* ``Reply.drop()`` -- close the connection without answering.
* ``Reply.slow(seconds, then=None)`` -- wait, then answer like ``then`` (default valid).
* ``Reply.truncated()`` -- a valid reply's headers with a ``Content-Length`` larger than the
  body, half the body, then the connection closes.
* ``Reply.raw(body, content_type="text/html", status=200)`` -- any body with any content
  type (a proxy's HTML page, ...), not the API's JSON envelope.
* ``Reply.valid(answer, content_type="text/html")`` -- the API's normal JSON envelope, sent
  under another ``Content-Type`` header.

``OllamaServer(port=P)`` listens on a given port (e.g. to come back where a closed one was).
``srv.kill()`` dies like a crashed process: it stops listening and cuts every open
connection (``close()`` alone lets kept-alive connections linger).

Every chat request first waits ``latency`` seconds holding one of ``slots`` parallel
slots (None = unlimited), like ``OLLAMA_NUM_PARALLEL``.

Run one in its own process (benchmarks): ``python tests/_servers.py ollama --latency 0.2
--slots 8`` prints its URL on the first line of stdout and serves until stdin closes, then
prints one JSON line: chat requests served, max_active, busy_seconds, and the first
arrival / last reply on the machine's monotonic clock (``time.monotonic``).
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LoopbackServer", "OllamaServer", "OpenAIServer", "Reply", "answer_from_schema", "free_port"]


@dataclass(frozen=True)
class Reply:
    kind: str  # 'valid' | 'text' | 'http' | 'drop' | 'slow' | 'truncated' | 'raw'
    content: str | None = None
    answer: Any = None
    status: int = 200
    message: str = ""
    seconds: float = 0.0
    then: "Reply | None" = None
    content_type: str | None = None  # header of the reply (None: application/json)

    @staticmethod
    def valid(answer: Any = None, content_type: str | None = None) -> "Reply":
        return Reply("valid", answer=answer, content_type=content_type)

    @staticmethod
    def text(content: str) -> "Reply":
        return Reply("text", content=content)

    @staticmethod
    def json(obj: Any) -> "Reply":
        return Reply("text", content=json.dumps(obj))

    @staticmethod
    def http(status: int = 500, message: str = "internal server error") -> "Reply":
        return Reply("http", status=status, message=message)

    @staticmethod
    def drop() -> "Reply":
        return Reply("drop")

    @staticmethod
    def slow(seconds: float, then: "Reply | None" = None) -> "Reply":
        return Reply("slow", seconds=seconds, then=then)

    @staticmethod
    def truncated() -> "Reply":
        return Reply("truncated")

    @staticmethod
    def raw(body: str, content_type: str = "text/html", status: int = 200) -> "Reply":
        return Reply("raw", content=body, content_type=content_type, status=status)


def answer_from_schema(schema: dict[str, Any] | None, n: int) -> dict[str, Any]:
    """A valid answer for a Lens prompt schema (see the module docstring for its values)."""
    if not schema or "properties" not in schema:
        schema = {"properties": {
            "data_quality": {"type": "object", "properties": {
                "tag": {"enum": ["ambiguous_image", "model_error", "annotation_issue"]},
                "reason": {}, "verdict": {}}},
            "visual_cause": {"type": "string"}, "fix": {"type": "string"}}}
    out: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if name == "description":
            out[name] = f"description {n}"
        elif prop.get("type") == "object":
            sub = {}
            for key, p in prop.get("properties", {}).items():
                if "enum" in p:
                    sub[key] = p["enum"][0]
                elif key == "verdict":
                    sub[key] = f"{name} verdict {n}."
                else:
                    sub[key] = f"{name} {key} {n}"
            out[name] = sub
        else:
            out[name] = f"{name} answer {n}"
    return out


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):  # a client that gave up: not our concern
        pass


class LoopbackServer:
    """Base: threading, scripting, bookkeeping. Subclasses route paths and shape replies."""

    def __init__(self, *, latency: float = 0.0, slots: int | None = None, default: Reply | None = None,
                 schema: dict[str, Any] | None = None, port: int = 0):
        self.requested_port = port
        self.latency = latency
        self.slots = threading.BoundedSemaphore(slots) if slots else None
        self.default = default or Reply.valid()
        self.schema = schema
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._queue: deque[Reply] = deque()
        self._matched: list[tuple[str, deque[Reply]]] = []
        self.requests: list[dict[str, Any]] = []  # every request: method, path, headers, body
        self.chat_requests: list[dict[str, Any]] = []
        self.served: list[tuple[dict[str, Any], str]] = []
        self.timings: list[tuple[float, float]] = []  # (arrival, reply done) per chat request, monotonic
        self.active = 0
        self.max_active = 0
        self._n = 0
        self._httpd: _Quiet | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> "LoopbackServer":
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go in two writes

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                try:
                    return json.loads(raw) if raw else None
                except json.JSONDecodeError:
                    return raw.decode(errors="replace")

            def do_GET(self):
                server._dispatch(self, "GET", None)

            def do_POST(self):
                server._dispatch(self, "POST", self._body())

        self._httpd = _Quiet(("127.0.0.1", self.requested_port), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def kill(self) -> None:
        """Stop listening and cut every connection at once, like a crashed server."""
        self.close()
        with self._lock:
            conns, self._connections = list(self._connections), set()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    @property
    def port(self) -> int:
        assert self._httpd is not None, "server not started"
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- scripting -----------------------------------------------------------------------------

    def script(self, *replies: Reply, match: str | None = None) -> None:
        """Queue replies for the next chat requests (only those whose messages contain ``match``)."""
        with self._lock:
            if match is None:
                self._queue.extend(replies)
                return
            for m, q in self._matched:
                if m == match:
                    q.extend(replies)
                    return
            self._matched.append((match, deque(replies)))

    def reset(self) -> None:
        """Forget scripts and recorded requests (counters too)."""
        with self._lock:
            self._queue.clear()
            self._matched.clear()
            self.requests.clear()
            self.chat_requests.clear()
            self.served.clear()
            self.timings.clear()
            self.max_active = 0

    def _next_reply(self, body: Any) -> tuple[Reply, int]:
        text = _message_text(body)
        with self._lock:
            self._n += 1
            for m, q in self._matched:
                if m in text and q:
                    return q.popleft(), self._n
            if self._queue:
                return self._queue.popleft(), self._n
            return self.default, self._n

    # -- serving ----------------------------------------------------------------------------------

    def _dispatch(self, h: BaseHTTPRequestHandler, method: str, body: Any) -> None:
        with self._lock:
            self._connections.add(h.connection)
            headers = {k.lower(): v for k, v in h.headers.items()}
            self.requests.append({"method": method, "path": h.path, "headers": headers, "body": body})
        try:
            self.route(h, method, h.path.split("?")[0], body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            h.close_connection = True

    def route(self, h, method: str, path: str, body: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server closes first; False when it closed."""
        return not self._stop.wait(seconds) if seconds > 0 else not self._stop.is_set()

    def chat(self, h, body: Any) -> None:
        arrived = time.monotonic()
        with self._lock:
            self.chat_requests.append(body)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.slots is not None:
                while not self.slots.acquire(timeout=0.05):
                    if self._stop.is_set():
                        return
            try:
                if not self._sleep(self.latency):
                    return
                reply, n = self._next_reply(body)
                self._perform(h, body, reply, n)
            finally:
                if self.slots is not None:
                    self.slots.release()
        finally:
            with self._lock:
                self.active -= 1
                self.timings.append((arrived, time.monotonic()))

    @property
    def busy_seconds(self) -> float:
        """From the first chat request's arrival to the last one's reply (0 when none)."""
        with self._lock:
            if not self.timings:
                return 0.0
            return max(t for _, t in self.timings) - min(t for t, _ in self.timings)

    def _perform(self, h, body: Any, reply: Reply, n: int) -> None:
        if reply.kind == "slow":
            if not self._sleep(reply.seconds):
                return
            reply = reply.then or Reply.valid()
        if reply.kind == "drop":
            h.close_connection = True
            try:
                h.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        if reply.kind == "http":
            self.send_error_reply(h, reply.status, reply.message)
            return
        if reply.kind == "raw":
            send_bytes(h, reply.status, (reply.content or "").encode(), reply.content_type or "text/html")
            return
        cut = reply.kind == "truncated"
        if cut:  # a valid reply, cut short: not counted as served
            h.wfile = _Truncating(h)
            reply = Reply.valid()
        if reply.kind == "valid":
            answer = reply.answer if reply.answer is not None else answer_from_schema(self.request_schema(body), n)
            content = answer if isinstance(answer, str) else json.dumps(answer)
        else:
            content = reply.content or ""
        if not cut:
            with self._lock:
                self.served.append((body, content))
        self.send_chat_reply(h, body, content, content_type=reply.content_type)

    # -- helpers for subclasses --------------------------------------------------------------------

    def request_schema(self, body: Any) -> dict[str, Any] | None:
        return self.schema

    def send_chat_reply(self, h, body: Any, content: str, content_type: str | None = None) -> None:  # pragma: no cover
        raise NotImplementedError

    def send_error_reply(self, h, status: int, message: str) -> None:
        send_json(h, status, {"error": message})


def send_json(h: BaseHTTPRequestHandler, status: int, obj: Any, content_type: str | None = None) -> None:
    send_bytes(h, status, json.dumps(obj).encode(), content_type or "application/json")


def send_bytes(h: BaseHTTPRequestHandler, status: int, data: bytes, content_type: str) -> None:
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)
    h.wfile.flush()


class _Truncating:
    """A handler's ``wfile`` that announces more body than it sends, then hangs up.

    Headers pass through; the body (the write after the blank line) is cut in half and
    its ``Content-Length`` header raised by 1,000 bytes, then the socket is shut down.
    """

    def __init__(self, h: BaseHTTPRequestHandler):
        self.h = h
        self.inner = h.wfile

    def write(self, data: bytes) -> int:
        if b"Content-Length:" in data and b"\r\n\r\n" in data:  # the buffered header block
            head, _, rest = data.partition(b"Content-Length: ")
            num, _, tail = rest.partition(b"\r\n")
            data = head + b"Content-Length: " + str(int(num) + 1000).encode() + b"\r\n" + tail
            return self.inner.write(data)
        self.inner.write(data[: max(1, len(data) // 2)])
        self.inner.flush()
        self.h.close_connection = True
        try:
            self.h.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return len(data)

    def flush(self) -> None:
        try:
            self.inner.flush()
        except OSError:
            pass


def _message_text(body: Any) -> str:
    if not isinstance(body, dict):
        return ""
    parts = []
    for m in body.get("messages") or []:
        c = m.get("content")
        if isinstance(c, str):
            parts.append(c)
        elif isinstance(c, list):
            parts.extend(p.get("text", "") for p in c if isinstance(p, dict))
    return "\n".join(parts)


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


def _main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Serve a loopback Ollama/OpenAI-speaking test server.")
    ap.add_argument("kind", choices=("ollama", "openai"))
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--slots", type=int, default=None)
    ap.add_argument("--model", default="qwen3-vl:8b")
    args = ap.parse_args(argv)
    if args.kind == "ollama":
        srv: LoopbackServer = OllamaServer(models={args.model: ["completion", "vision"]}, latency=args.latency,
                                           slots=args.slots)
    else:
        srv = OpenAIServer(models=[args.model], latency=args.latency, slots=args.slots)
    with srv:
        print(srv.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin
        print(json.dumps({"chat_requests": len(srv.chat_requests), "max_active": srv.max_active,
                          "busy_seconds": srv.busy_seconds,
                          "first_at": min((t for t, _ in srv.timings), default=None),
                          "last_at": max((t for _, t in srv.timings), default=None)}), flush=True)


if __name__ == "__main__":
    _main(sys.argv[1:])
