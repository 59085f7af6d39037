"""A throwaway PostgreSQL server for the lake tests: ``postgres`` fixture (one per session).

Debian's PostgreSQL 15 (``./setup.sh`` installs it) runs as an unprivileged user (``nobody``
when the tests run as root, since initdb refuses root; else the current user) from a private
temporary folder, listening on 127.0.0.1 only (no Unix socket), with ``trust`` auth and fsync
off. It starts in about a second and is stopped and deleted at the end of the session. Nothing
uses a server the tests did not start.

Missing binaries fail the tests (they do not skip): setup.sh installs them, so a CI without
them is broken. ``LENS_PG_BIN`` points at another PostgreSQL ``bin`` folder.

Usage::

    def test_x(postgres):
        catalog = postgres.catalog(postgres.create_db("t1"))   # 'postgres:dbname=t1 host=127.0.0.1 ...'
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

PG_BINS = [os.environ.get("LENS_PG_BIN", ""), "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
           "/usr/lib/postgresql/17/bin"]
USER = "lens"


def pg_bin() -> Path:
    for cand in PG_BINS:
        if cand and (Path(cand) / "initdb").is_file() and (Path(cand) / "pg_ctl").is_file():
            return Path(cand)
    pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found in /usr/lib/postgresql/15/bin: run ./setup.sh "
                "(it installs Debian's postgresql) or set LENS_PG_BIN to a PostgreSQL bin folder.")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A private PostgreSQL cluster: ``port``, ``create_db(name)``, ``catalog(db)``, ``stop()``, ``start()``."""

    def __init__(self, base: Path):
        self.bin = pg_bin()
        self.base = base
        self.data = base / "data"
        self.log = base / "server.log"
        self.port = _free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as nobody
            nobody = pwd.getpwnam("nobody")
            os.chown(base, nobody.pw_uid, nobody.pw_gid)
            self.as_user = ["runuser", "-u", "nobody", "--"]
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", USER, "--no-sync", "-E", "UTF8",
                  "--locale", "C")
        self.start()

    def _run(self, tool: str, *args: str) -> str:
        proc = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True, text=True,
                              cwd=self.base, timeout=60)
        if proc.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stdout}{proc.stderr}{log[-2000:]}")
        return proc.stdout

    def start(self) -> None:
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' -c fsync=off "
                f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "30", "-o", opts, "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def create_db(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", USER, name)
        return name

    def catalog(self, dbname: str) -> str:
        """The DuckLake catalog string of a database (what follows ``ducklake:``)."""
        return f"postgres:dbname={dbname} host=127.0.0.1 port={self.port} user={USER}"


@pytest.fixture(scope="session")
def postgres():
    base = Path(tempfile.mkdtemp(prefix="lens-pg-"))
    server = None
    try:
        server = Postgres(base)
        yield server
    finally:
        if server is not None:
            try:
                server.stop("immediate")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(base, ignore_errors=True)
