"""The shared machinery of the loopback test servers (tests/_servers.py): scripted replies,
the threaded HTTP server with its bookkeeping, and the helpers that write replies.

A server for one API subclasses :class:`LoopbackServer`: ``route`` answers the API's paths,
``send_chat_reply`` wraps a chat answer in the API's envelope, ``request_schema`` finds the
schema a request asks for, ``send_error_reply`` shapes an error. See tests/_ollama_server.py
and tests/_openai_server.py; tests import them all from tests/_servers.py.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["LoopbackServer", "Reply", "answer_from_schema", "free_port", "send_bytes", "send_json"]


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
        self.serving = 0  # chat requests holding one of the slots (the rest wait in the queue)
        self.max_serving = 0
        self.waiting = 0
        self.max_waiting = 0  # most chat requests waiting for a slot at once
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
            self.max_active = self.max_serving = self.max_waiting = 0

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
            if self.slots is not None and not self.slots.acquire(blocking=False):
                with self._lock:  # every slot is busy: wait in the queue
                    self.waiting += 1
                    self.max_waiting = max(self.max_waiting, self.waiting)
                try:
                    while not self.slots.acquire(timeout=0.05):
                        if self._stop.is_set():
                            return
                finally:
                    with self._lock:
                        self.waiting -= 1
            with self._lock:
                self.serving += 1
                self.max_serving = max(self.max_serving, self.serving)
            try:
                if not self._sleep(self.latency):
                    return
                reply, n = self._next_reply(body)
                self._perform(h, body, reply, n)
            finally:
                with self._lock:
                    self.serving -= 1
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
