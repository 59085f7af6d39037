"""`lens serve` hardening (issue 13, point 6, the serve parts).

* DNS rebinding: a request whose ``Host`` header names anything but an IP address,
  ``localhost``, ``--host`` or an ``--allow-host`` name is 400 before any route runs (pages,
  Dash JSON, images, the verdict-writing callback), both in-process and through a real
  ``lens serve`` subprocess;
* the access log never shows an access token: requests with ``?token=`` (right, wrong,
  percent-encoded) are logged with ``token=[redacted]``; the token appears only on the line
  ``lens serve`` prints at start (the URL to open);
* images of failures with negative example ids (ingested runs keep the ids they were given)
  are served; ids beyond 64 bits and malformed ones are 404.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from _live import SERVE_ENV, raw_get, raw_request, save_verdict_body, seeded_warehouse, verdict_count
from _seed import seed_complete_run
from _servers import free_port

from lens.warehouse import Warehouse

TOKEN = "s3cret/Tok+en=42"  # '/', '+', '=' change under percent-encoding
ENV = SERVE_ENV
REBOUND = ["evil.example", "evil.example:8050", "EVIL.example.", "127.0.0.1.evil.example", "localhost.evil.example",
           "evil.example@127.0.0.1", "0x7f000001", "2130706433", "", "[evil]"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    return seeded_warehouse(tmp_path_factory, "serve")


# -- Host header -----------------------------------------------------------------------------


def test_host_names_parsed_and_checked():
    from dashboards.app import host_allowed, host_name

    assert host_name("127.0.0.1:8050") == "127.0.0.1"
    assert host_name("[::1]:8050") == "::1"
    assert host_name("LocalHost.:80") == "localhost"
    for ok in ("127.0.0.1:8050", "localhost:8050", "[::1]:8050", "localhost", "10.1.2.3:8050", "[fe80::1%25eth0]",
               "LOCALHOST.", None):
        assert host_allowed(ok, []), ok
    for bad in REBOUND:
        assert not host_allowed(bad, []), bad
    assert host_allowed("lens.lan:8050", ["lens.lan"]) and host_allowed("LENS.LAN.", ["lens.lan"])
    assert not host_allowed("other.lan", ["lens.lan"])


def test_rebound_host_names_get_nothing_in_process(seeded, live_app):
    from dashboards.app import create_app

    wh, s = seeded
    ex, hyp = s.failure_ids[0], s.hypothesis_ids[0]
    base = live_app(create_app(wh, allowed_hosts=["lens.lan"]))
    port = base.rsplit(":", 1)[1]
    paths = ["/", "/review?run=demo", "/_dash-layout", "/_dash-dependencies", f"/img/demo/{ex}.png",
             f"/saliency/demo/{ex}.png", "/assets/keys.js"]
    for host in REBOUND:
        for path in paths:
            status, body = raw_get(base, path, {"Host": host})
            assert status == 400, (host, path, status)
            assert not body.startswith(b"\x89PNG") and b"<html" not in body.lower() and b"react" not in body.lower()
        status, _ = raw_request(base, "POST", "/_dash-update-component", save_verdict_body(hyp),
                                {"Host": host, "Content-Type": "application/json"})
        assert status == 400, host
    assert verdict_count(wh) == 0
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"lens.lan:{port}", "LOCALHOST"):
        status, png = raw_get(base, f"/img/demo/{ex}.png", {"Host": host})
        assert status == 200 and png.startswith(b"\x89PNG"), host


# -- lens serve as a subprocess: Host header and the access log --------------------------------


def _serve(db: Path, port: int, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lens", "--warehouse", str(db), "serve", "--port", str(port), *args],
                            env={k: v for k, v in ENV.items() if k != "LENS_TOKEN"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=db.parent)


def _wait(base: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            raw_get(base, "/_no_such_path")
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("lens serve did not start")


def test_serve_refuses_rebound_hosts_and_keeps_tokens_out_of_its_access_log(seeded):
    wh, s = seeded
    ex = s.failure_ids[0]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = _serve(wh.path, port, "--token", TOKEN, "--allow-host", "lens.lan")
    try:
        _wait(base, proc)
        enc = quote(TOKEN, safe="")
        assert raw_get(base, f"/?token={enc}")[0] == 200
        assert raw_get(base, f"/img/demo/{ex}.png?run=demo&token={enc}")[0] == 200
        assert raw_get(base, f"/?token={TOKEN}")[0] in (200, 401)  # unencoded '+' reads as a space
        assert raw_get(base, "/?token=a-wrong-guess")[0] == 401
        assert raw_get(base, f"/_dash-layout?token={enc}", {"Host": "evil.example"})[0] == 400
        assert raw_get(base, f"/_dash-layout?token={enc}", {"Host": f"lens.lan:{port}"})[0] == 200
        assert raw_get(base, "/_dash-layout", {"Host": f"localhost:{port}", "X-Lens-Token": TOKEN})[0] == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    lines = out.splitlines()
    start = [ln for ln in lines if ln.startswith("Lens dashboard on")]
    assert len(start) == 1 and f"?token={TOKEN}" in start[0]  # the URL to open, printed once
    logged = [ln for ln in lines if "GET /" in ln]  # (werkzeug colours some lines)
    assert len(logged) >= 7, out  # every request above was logged ...
    for ln in logged:  # ... without its token
        assert TOKEN not in ln and enc not in ln and "a-wrong-guess" not in ln, ln
    assert sum("token=[redacted]" in ln for ln in logged) >= 5, out
    assert sum(TOKEN in ln or enc in ln for ln in lines) == 1, out


# -- images by id: negative ids ---------------------------------------------------------------


def test_images_of_failures_with_negative_ids_are_served(tmp_path, live_app):
    from dashboards.app import create_app

    wh = Warehouse(tmp_path / "lens.duckdb", lock_timeout=30)
    s = seed_complete_run(wh, n_predictions=20, n_failures=4)
    ex = s.failure_ids[1]
    with wh.transaction() as con:
        for table in ("prediction_rows", "failures", "evidence", "samples"):
            con.execute(f"update {table} set example_id = -7 where run_id = 'demo' and example_id = ?", [ex])
        png = con.execute("select image_png from failures where example_id = -7").fetchone()[0]
        sal = con.execute("select saliency_png from evidence where example_id = -7").fetchone()[0]
    assert png and sal
    base = live_app(create_app(wh))
    assert raw_get(base, "/img/demo/-7.png") == (200, png)
    assert raw_get(base, "/saliency/demo/-7.png") == (200, sal)
    assert raw_get(base, f"/img/demo/{-(2**63)}.png")[0] == 404  # the smallest BIGINT: no such failure
    for path in ("/img/demo/-8.png", "/img/demo/--7.png", "/img/demo/-.png", "/img/demo/+7.png",
                 f"/img/demo/{2**63}.png", f"/img/demo/-{2**63 + 1}.png", "/img/demo/99999999999999999999999.png",
                 "/saliency/demo/-7.5.png", "/img/demo/-7.png/.."):
        status, body = raw_get(base, path)
        assert status == 404 and not body.startswith(b"\x89PNG"), (path, status)
