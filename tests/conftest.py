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
