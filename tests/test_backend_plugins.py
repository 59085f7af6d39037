"""Backends are plugins (issue 16, point 1).

A tiny package, made in a temporary folder with a ``*.dist-info`` whose ``entry_points.txt``
names its classes in group ``lens.backends`` (what ``pip install`` of a plugin leaves), is put
on ``PYTHONPATH`` of a real ``python -m lens`` process: its backend is a ``--backend`` choice
with its own option, answers a real run against a seeded warehouse file, and its embedder is
found by name. A plugin that fails to import is skipped with a warning naming it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _hypothesize_helpers import seed_run

from lens.backends import registry
from lens.warehouse import Warehouse

PLUGIN = '''
from dataclasses import dataclass

import numpy as np

from lens.backends.base import BackendOptions, HypothesisAnswer, Hypothesizer, option
from lens.backends.embedders import Embedder


@dataclass(frozen=True)
class TinyOptions(BackendOptions):
    tiny_word: str | None = option("--tiny-word", "The word the tiny backend puts in every answer.")


class TinyBackend(Hypothesizer):
    """Answers every dimension with its option's word; needs no image, evidence or server."""

    name = "tiny"
    Options = TinyOptions
    needs_image = False

    @classmethod
    def default_model(cls):
        return "tiny-1"

    def answer(self, request, prompt):
        word = self.options.tiny_word or "plain"
        answer = {}
        for d in prompt.dimensions:
            if d.tags:
                answer[d.name] = {"tag": d.tags[0], "reason": f"{word} reason", "verdict": f"{word} verdict."}
            else:
                answer[d.name] = f"{word} {d.name} of example {request.example_id}"
        dims, description = prompt.parse(answer)
        return HypothesisAnswer("ok", dims, description, raw_response=str(answer))


class TinyEmbedder(Embedder):
    name = "tiny-words"
    dim = 3

    def _encode_batch(self, texts):
        return np.array([[len(t), t.count(" ") + 1, 1.0] for t in texts])
'''


@pytest.fixture
def plugin_env(tmp_path: Path) -> dict[str, str]:
    """A folder holding the plugin module and its dist-info, on PYTHONPATH."""
    site = tmp_path / "site"
    (site / "lens_tiny-0.1.dist-info").mkdir(parents=True)
    (site / "lens_tiny.py").write_text(PLUGIN)
    (site / "lens_tiny-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: lens-tiny\nVersion: 0.1\n")
    (site / "lens_tiny-0.1.dist-info" / "entry_points.txt").write_text(textwrap.dedent("""\
        [lens.backends]
        tiny = lens_tiny:TinyBackend
        tiny-words = lens_tiny:TinyEmbedder
        broken = lens_missing_module:Backend
        """))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _lens(env, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lens", *args], env=env, capture_output=True, text=True, timeout=120)


def test_a_plugin_backend_shows_in_help_and_answers_a_real_run(plugin_env, tmp_path):
    help_ = _lens(plugin_env, "hypothesize", "--help")
    assert help_.returncode == 0, help_.stderr
    assert "--backend [auto|import|measured|ollama|openai|tiny]" in help_.stdout  # one of the choices
    assert "--tiny-word TEXT" in help_.stdout and "[tiny]" in help_.stdout
    assert "backend plugin 'broken'" in help_.stderr and "skipped" in help_.stderr  # said, not fatal

    wh = Warehouse(tmp_path / "lens.duckdb")
    ids = seed_run(wh, 3, images=False)
    out = _lens(plugin_env, "--warehouse", str(wh.path), "hypothesize", "--backend", "tiny", "--tiny-word", "zebra")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "tiny tiny-1" in out.stdout and "3 ok" in out.stdout
    with wh.connect() as con:
        rows = con.execute("select example_id, backend, model, status from hypotheses order by example_id").fetchall()
        texts = {t for (t,) in con.execute("select text from hypothesis_dimensions").fetchall()}
    assert rows == [(i, "tiny", "tiny-1", "ok") for i in ids]
    assert "zebra reason" in texts and f"zebra visual_cause of example {ids[0]}" in texts
    assert "'nope' is not one of" in _lens(plugin_env, "hypothesize", "--backend", "nope").stderr


def test_a_plugin_embedder_is_found_by_name(plugin_env):
    code = ("from lens.backends import embedders; e = embedders.create('tiny-words'); "
            "v = e.encode(['a b c', 'd']); print(e.name, v.shape, round(float((v ** 2).sum(1)[0]), 3))")
    out = subprocess.run([sys.executable, "-c", code], env=plugin_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["tiny-words", "(2,", "3)", "1.0"]


def test_built_ins_declare_options_and_capabilities_in_the_registry():
    backends = registry.hypothesizers()
    assert {"ollama", "openai", "measured", "import"} <= set(backends)
    assert [c.name for c in registry.auto_candidates()][:1] == ["ollama"]
    assert registry.auto_candidates()[-1].name == "measured"
    assert backends["measured"].needs_evidence and not backends["measured"].needs_image
    assert backends["ollama"].server_option == "ollama_host" and backends["openai"].server_option == "base_url"
    users = {name: set(u) for name, _, u in registry.option_specs()}
    assert users["timeout"] == {"ollama", "openai"} and users["from_path"] == {"import"}
