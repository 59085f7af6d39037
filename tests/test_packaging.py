"""The wheel carries sql/ and prompts/ and dashboards/: `lens --help` and a view work from it."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_contains_data_and_runs(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)],
        check=True, capture_output=True, text=True,
    )
    wheel = next(dist.glob("*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "lens/sql/migrations/001_core.sql" in names
    assert "lens/sql/views/class_metrics.sql" in names
    assert "lens/prompts/reference.toml" in names
    assert "dashboards/__init__.py" in names or not (REPO / "dashboards" / "__init__.py").exists()
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)],
        check=True, capture_output=True, text=True,
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = (
        "import lens, sys; from pathlib import Path\n"
        f"assert Path(lens.__file__).is_relative_to({str(target)!r}), lens.__file__\n"
        "from lens.warehouse import Warehouse\n"
        "from lens import prompts\n"
        "assert prompts.load('reference').dimension_names == ['data_quality', 'visual_cause', 'fix']\n"
        f"wh = Warehouse({str(tmp_path / 'w.duckdb')!r})\n"
        "with wh.connect() as con:\n"
        "    print(con.execute('select count(*) from class_metrics').fetchone()[0])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "0"
    out = subprocess.run([sys.executable, "-m", "lens", "--help"], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0 and "ingest" in out.stdout, out.stderr
