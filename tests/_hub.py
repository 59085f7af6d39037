"""A loopback server that speaks the parts of the Hugging Face hub's HTTP API that
sentence-transformers uses to download a model (tests/test_online_models.py).

``serve(folder, repo_id)`` serves the files of ``folder`` as the model ``repo_id``: model info
(``/api/models/<repo>``), file listings (empty), and ``HEAD``/``GET``
``/<repo>/resolve/<revision>/<file>`` with the commit and ETag headers huggingface_hub reads;
missing files answer 404 with ``X-Error-Code: EntryNotFound``, as the hub does.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class Hub(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    root: Path = Path()
    repo_id = ""
    requests: list[str] = []

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _route(self, head: bool):
        type(self).requests.append(f"{self.command} {self.path}")
        path = self.path.split("?")[0]
        api = f"/api/models/{self.repo_id}"
        if path.startswith(api + "/tree/"):
            return self._reply(200, b"[]", {"Content-Type": "application/json"}, head)
        if path == api or path.startswith(api + "/revision/"):
            files = sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())
            body = json.dumps({"id": self.repo_id, "sha": COMMIT, "private": False, "gated": False,
                               "siblings": [{"rfilename": f} for f in files]}).encode()
            return self._reply(200, body, {"Content-Type": "application/json"}, head)
        prefix = f"/{self.repo_id}/resolve/"
        if not path.startswith(prefix):
            return self._reply(404, b"", {"X-Error-Code": "RepoNotFound"}, head)
        name = path[len(prefix):].partition("/")[2]
        file = self.root / name
        if ".." in name.split("/") or not file.is_file():
            return self._reply(404, b"", {"X-Error-Code": "EntryNotFound"}, head)
        data = file.read_bytes()
        return self._reply(200, data, {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}, head)

    def do_HEAD(self):  # noqa: N802
        self._route(head=True)

    def do_GET(self):  # noqa: N802
        self._route(head=False)

    def log_message(self, *args):
        pass


def serve(folder: Path, repo_id: str) -> tuple[ThreadingHTTPServer, str]:
    """Start the hub in a daemon thread on 127.0.0.1; returns (server, endpoint URL)."""
    Hub.root, Hub.repo_id, Hub.requests = Path(folder), repo_id, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"
