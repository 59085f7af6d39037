"""`lens serve` on a production WSGI server (issue 17, point 6).

* without ``--debug`` the app runs on waitress (pure Python) with ``--threads`` workers: it
  serves the dashboard (page, Dash layout, images, the verdict write) to many requests at once;
* off loopback (``--host 0.0.0.0``) every request without the token is 401 on waitress too,
  and the refused verdict write stores nothing; the access log never shows the token;
* ``--debug`` runs Flask's development server (werkzeug), on loopback only.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from _live import raw_request, save_verdict_body
from _seed import seed_complete_run
from _servers import free_port

from lens.warehouse import Warehouse

TOKEN = "prod-Tok/en+1="
ENV = {k: v for k, v in os.environ.items() if k != "LENS_TOKEN"} | {"PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    wh = Warehouse(tmp_path_factory.mktemp("prod") / "lens.duckdb", lock_timeout=30)
    return wh, seed_complete_run(wh, n_predictions=40, n_failures=8)


def _spawn(wh: Warehouse, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lens", "--warehouse", str(wh.path), "serve", *args],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=wh.path.parent, start_new_session=True)


def _stop(proc: subprocess.Popen) -> str:
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group: --debug's reloader has a child
    except ProcessLookupError:
        pass
    out, _ = proc.communicate(timeout=20)
    return out


def _get(host: str, port: int, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
    c = http.client.HTTPConnection(host, port, timeout=30)
    try:
        c.request("GET", path, headers=headers or {})
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _wait(proc: subprocess.Popen, port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            _get("127.0.0.1", port, "/_no_such_path")
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("lens serve did not start")


def _outside_address() -> str:
    """An address of this machine that is not loopback (requests then come from off loopback);
    127.0.0.1 when the machine has none."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent: this only picks a route
            addr = s.getsockname()[0]
        with socket.create_connection((addr, 9), timeout=0.2):
            pass
    except ConnectionRefusedError:
        return addr  # reachable, nothing listening there: a usable local address
    except OSError:
        return "127.0.0.1"
    return addr


def test_production_server_serves_the_dashboard_and_refuses_requests_without_the_token(seeded):
    wh, s = seeded
    port = free_port()
    proc = _spawn(wh, "--host", "0.0.0.0", "--port", str(port), "--token", TOKEN, "--threads", "4")
    try:
        _wait(proc, port)
        addr = _outside_address()
        ok = {"X-Lens-Token": TOKEN}
        status, headers, body = _get(addr, port, "/", ok)
        assert status == 200 and b"_dash-config" in body
        assert "werkzeug" not in headers.get("server", "").lower()  # waitress, not the development server
        assert headers.get("server") == "lens"
        assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
        ex, hyp = s.failure_ids[0], s.hypothesis_ids[0]
        for path in ("/", "/review?run=demo", "/_dash-layout", "/_dash-dependencies", f"/img/demo/{ex}.png"):
            assert _get(addr, port, path)[0] == 401, path
            assert _get(addr, port, path, {"X-Lens-Token": TOKEN[:-1]})[0] == 401, path
        assert _get(addr, port, f"/img/demo/{ex}.png", ok)[2].startswith(b"\x89PNG")

        # many at once: 4 worker threads, 24 requests in flight, every one answered
        paths = ["/_dash-layout", "/_dash-dependencies", f"/img/demo/{ex}.png", "/"] * 6
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda p: _get(addr, port, p, ok)[0], paths))
        assert statuses == [200] * len(paths)

        base = f"http://{addr}:{port}"
        body = save_verdict_body(hyp, list(s.dimensions))
        post = {"Content-Type": "application/json"}
        assert raw_request(base, "POST", "/_dash-update-component", body, post)[0] == 401
        with wh.connect() as con:
            assert con.execute("select count(*) from verdicts").fetchone()[0] == 0
        status, reply = raw_request(base, "POST", "/_dash-update-component", body, {**post, **ok})
        assert status == 200 and "saved: agree on overall" in reply.decode()
        with wh.connect() as con:
            assert con.execute("select count(*) from verdicts").fetchone()[0] == 1
    finally:
        out = _stop(proc)
        with wh.transaction() as con:
            con.execute("delete from verdicts")
    logged = [ln for ln in out.splitlines() if '"GET /' in ln or '"POST /' in ln]
    assert len(logged) >= 30, out
    assert sum(TOKEN in ln for ln in out.splitlines()) == 1  # only the URL line printed at start


def test_debug_runs_the_development_server_on_loopback_only(seeded, cli):
    wh, _ = seeded
    port = free_port()
    proc = _spawn(wh, "--port", str(port), "--debug")
    try:
        _wait(proc, port)
        status, headers, _ = _get("127.0.0.1", port, "/")
        assert status == 200 and "werkzeug" in headers.get("server", "").lower()
    finally:
        _stop(proc)
    out = cli("serve", "--host", "0.0.0.0", "--token", "t" * 20, "--debug", expect=1)
    assert "--debug" in out.output
    out = cli("serve", "--threads", "0", expect=2)
    assert "--threads" in out.output
