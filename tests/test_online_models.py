"""Models load as their libraries load them (issue 18, point 4).

* A sentence-transformers name that is not cached downloads on first use, as
  sentence-transformers does (its progress bars show on a terminal), and loads from the cache afterwards
  with no network at all. Tested against a loopback server that speaks the Hugging Face hub's
  HTTP API (``HF_ENDPOINT``), serving the bundled all-MiniLM-L6-v2 files under a new name.
* When the hub cannot be reached, the clear message comes in seconds, not after the library's
  minute of retries per file: tested against a closed loopback port, and against the real hub,
  which cannot be reached here.
* torchvision's ImageNet weights: the library's download is tried; a network failure is one line
  naming --weights / --no-pretrained, and ``lens run`` / ``lens demo`` then train from scratch.

The download runs in a subprocess: huggingface_hub reads ``HF_ENDPOINT`` when it is imported,
and the test session sets ``HF_HUB_OFFLINE=1``. The refusals run here, with huggingface_hub's
settings patched as such a process would read them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lens import models
from lens.backends import embedders
from lens.errors import LensError

REPO_ID = "lens-test/mini-embedder"
TESTS = Path(__file__).resolve().parent

# The child process: a loopback hub in a thread, HF_ENDPOINT pointed at it before huggingface_hub
# is imported, the first load (a download), the server shut down, a second load (from the cache).
DOWNLOAD = """
import os, sys
sys.path.insert(0, sys.argv[1])
import _hub
from lens.backends import embedders
server, endpoint = _hub.serve(embedders.bundled_model_path(), sys.argv[2])
os.environ["HF_ENDPOINT"] = endpoint
first = embedders.create(sys.argv[2]).encode(["a dark photo of a small animal"])[0]
server.shutdown(); server.server_close()
print("REQUESTS", len(_hub.Hub.requests), "SAFETENSORS", sum(r.startswith("GET") and "model.safetensors" in r for r in _hub.Hub.requests))
embedders._models.clear()
import huggingface_hub.constants as c
c.HF_HUB_OFFLINE = True  # any request now raises: the second load must come from the cache
again = embedders.create(sys.argv[2]).encode(["a dark photo of a small animal"])[0]
print("VECTOR", ",".join(f"{x:.6f}" for x in first[:8]))
print("AGAIN", ",".join(f"{x:.6f}" for x in again[:8]))
"""


def _field(out: str, key: str) -> str:
    return next(line.split(" ", 1)[1] for line in out.splitlines() if line.startswith(key + " "))


def test_a_hub_name_downloads_on_first_use_then_loads_from_the_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env.update({"HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1"})
    res = subprocess.run([sys.executable, "-c", DOWNLOAD, str(TESTS), REPO_ID], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert _field(res.stdout, "REQUESTS").endswith("SAFETENSORS 1")  # downloaded, once, by the library
    assert (tmp_path / "hf" / "hub" / f"models--{REPO_ID.replace('/', '--')}").is_dir()
    # the same weights as the bundled copy: the same vector, and again from the cache
    bundled = embedders.create().encode(["a dark photo of a small animal"])[0][:8]
    got = [float(x) for x in _field(res.stdout, "VECTOR").split(",")]
    assert max(abs(a - b) for a, b in zip(got, bundled)) < 1e-4
    assert _field(res.stdout, "AGAIN") == _field(res.stdout, "VECTOR")


@pytest.fixture
def hub_settings(monkeypatch, tmp_path):
    """huggingface_hub's settings as a fresh process with these variables would read them."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 5)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def use(endpoint: str, offline: bool = False):
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)

    return use


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _refusal(name: str) -> tuple[str, float]:
    t0 = time.perf_counter()
    with pytest.raises(LensError) as err:
        embedders.create(name)
    return str(err.value), time.perf_counter() - t0


def test_unreachable_hub_gives_the_message_in_seconds(hub_settings):
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    hub_settings(endpoint)
    msg, seconds = _refusal("lens-test/not-cached-anywhere")
    assert f"the hub at {endpoint} cannot be reached" in msg and "not in the Hugging Face cache" in msg
    assert "--embedder all-MiniLM-L6-v2" in msg and "--embedder my-embedder" in msg and "\n" not in msg
    assert seconds < 15, "the library's retries (a minute per file) were not cut short"
    # in offline mode: no request at all, the same advice
    hub_settings(endpoint, offline=True)
    msg, _ = _refusal("lens-test/not-cached-anywhere")
    assert "offline mode (HF_HUB_OFFLINE is set)" in msg and "--embedder all-MiniLM-L6-v2" in msg


def test_the_real_hub_is_out_of_reach_here(hub_settings):
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        pytest.skip("huggingface.co is reachable from this machine; the loopback tests cover the download")
    except OSError:
        pass
    hub_settings("https://huggingface.co")
    msg, seconds = _refusal("BAAI/bge-base-en-v1.5")
    assert "the hub at https://huggingface.co cannot be reached" in msg and seconds < 15


def test_imagenet_weights_are_downloaded_by_torchvision_or_refused_in_one_line(tmp_path, monkeypatch):
    # no cached weights, and every download refused at once
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    ok, why = models.imagenet_weights_available()
    assert not ok and "\n" not in why and why
    with pytest.raises(LensError) as err:
        models.build_resnet18(10, pretrained=True)
    msg = str(err.value)
    assert "\n" not in msg and "--weights FILE" in msg and "--no-pretrained" in msg
    # weights in the torch cache: found without any download
    from torchvision.models import ResNet18_Weights

    cached = tmp_path / "torch" / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True, exist_ok=True)
    import torch
    from torchvision.models import resnet18

    torch.save(resnet18(weights=None).state_dict(), cached)
    assert models.imagenet_weights_available() == (True, None)
