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
        srv.max_active        # most chat requests handled at once (serving or waiting for a slot)
        srv.max_serving       # most holding one of the ``slots`` at once; max_waiting: most waiting
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

The pieces live in tests/_loopback.py (``Reply``, ``LoopbackServer``, helpers),
tests/_ollama_server.py and tests/_openai_server.py; this module gathers them, so import
from here.

Run one in its own process (benchmarks): ``python tests/_servers.py ollama --latency 0.2
--slots 8`` prints its URL on the first line of stdout and serves until stdin closes, then
prints one JSON line: chat requests served, max_active, busy_seconds, and the first
arrival / last reply on the machine's monotonic clock (``time.monotonic``).
"""

from __future__ import annotations

import json
import sys

if __package__:  # imported as tests._servers
    from ._loopback import LoopbackServer, Reply, answer_from_schema, free_port, send_bytes, send_json
    from ._ollama_server import OllamaServer
    from ._openai_server import OpenAIServer
else:  # imported with tests/ on sys.path (as _servers), or run as a script
    from _loopback import LoopbackServer, Reply, answer_from_schema, free_port, send_bytes, send_json
    from _ollama_server import OllamaServer
    from _openai_server import OpenAIServer

__all__ = ["LoopbackServer", "OllamaServer", "OpenAIServer", "Reply", "answer_from_schema", "free_port",
           "send_bytes", "send_json"]


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
