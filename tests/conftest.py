"""Shared fixtures. Area-specific fixtures live in their own test modules.

* ``wh`` -- a fresh warehouse file in tmp_path (real DuckDB file, schema applied).
* ``mem_wh`` -- an in-memory warehouse with the schema.
* ``cli`` -- run a ``lens`` command against ``wh`` through click's CliRunner.
* ``cifar_dir`` -- the shared CIFAR-10 Parquet folder (../shared/data/cifar10).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from lens.warehouse import Warehouse

# Tests never reach a model hub: every model they load ships in a package or is made by the test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent


def _find_cifar() -> Path | None:
    for cand in (os.environ.get("LENS_DATA"), REPO.parent / "shared" / "data" / "cifar10"):
        if cand and (Path(cand) / "test.parquet").exists():
            return Path(cand)
    return None


@pytest.fixture
def wh(tmp_path) -> Warehouse:
    w = Warehouse(tmp_path / "lens.duckdb", lock_timeout=5)
    with w.connect():
        pass
    return w


@pytest.fixture
def mem_wh() -> Warehouse:
    return Warehouse(":memory:")


@pytest.fixture
def cli(wh):
    from lens.cli import cli as lens_cli

    runner = CliRunner()

    def invoke(*args: str, expect: int | None = 0, input: str | None = None):
        result = runner.invoke(lens_cli, ["--warehouse", str(wh.path), *args], input=input, catch_exceptions=False)
        if expect is not None:
            assert result.exit_code == expect, f"exit {result.exit_code}, expected {expect}:\n{result.output}"
        return result

    invoke.wh = wh
    return invoke


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    path = _find_cifar()
    if path is None:
        pytest.fail("CIFAR-10 Parquet folder not found: expected ../shared/data/cifar10 or $LENS_DATA")
    return path


# -- browser tests (pytest-playwright driving Debian's chromium; see design.md "Browser tests") --

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    if not Path(CHROMIUM).exists():
        # ./setup.sh installs it; a missing browser is a failure, never a silent skip
        pytest.fail("Debian chromium is not installed: run ./setup.sh (apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "args": CHROMIUM_ARGS}


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1200, "height": 800}}


@pytest.fixture
def live_app():
    """Serve a Dash app's Flask server on 127.0.0.1, port 0, in a thread: ``url = live_app(app)``."""
    import logging
    import threading

    from werkzeug.serving import make_server

    servers = []

    def start(app) -> str:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        server = make_server("127.0.0.1", 0, app.server, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server, thread in servers:
        server.shutdown()
        thread.join(5)
