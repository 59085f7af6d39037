"""Benchmark `lens hypothesize` against a loopback Ollama-speaking server with a fixed latency.

The server (tests/_servers.py) runs in its own process: 200 ms per chat request, 8
parallel slots, so the ideal is 8 / 0.2 = 40 answers/s. Printed side by side:

  * bare: 8 threads posting the same /api/chat requests with httpx (a prepared body, no
    image work, no parsing, no storage);
  * lens: the whole stage at --concurrency 8 (image upscale + PNG, the ollama client,
    JSON parsing and validation, batched DuckDB writes, progress bookkeeping);
  * answers/s end to end (lens: the whole stage call, start-up and final commit included)
    and in steady state (the server's busy window: first request in to last reply out),
    each as a share of the ideal 40/s (target >= 90%);
  * Lens's own time per answer: the CPU seconds of the Lens process (the server is
    another process) divided by the answers (target < 5 ms).

The machine's load is printed too: on a shared, oversubscribed box every figure drops.

Usage: .venv/bin/python benchmarks/bench_hypothesize.py [--failures 400] [--latency 0.2] [--slots 8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_t = time.perf_counter()
import ollama  # noqa: E402,F401  (the client's import is a one-off cost per process: timed apart)

IMPORT_S = time.perf_counter() - _t

from lens import prompts  # noqa: E402
from lens.stages import hypothesize  # noqa: E402
from lens.warehouse import Warehouse  # noqa: E402
from tests._hypothesize_helpers import seed_run  # noqa: E402


class Server:
    """tests/_servers.py in its own process; `stats` after close()."""

    def __init__(self, latency: float, slots: int):
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "_servers.py"), "ollama", "--latency", str(latency),
             "--slots", str(slots)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise SystemExit(f"server did not start: {self.url!r}")
        self.stats: dict = {}

    def close(self) -> None:
        self.proc.stdin.close()
        line = self.proc.stdout.readline()
        self.proc.wait(timeout=10)
        self.stats = json.loads(line) if line.strip() else {}


def bare(url: str, n: int, threads: int, body: bytes) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of n raw posts from `threads` threads."""
    import httpx

    client = httpx.Client(base_url=url, timeout=30)
    counter = iter(range(n))
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                if next(counter, None) is None:
                    return
            r = client.post("/api/chat", content=body, headers={"Content-Type": "application/json"})
            r.raise_for_status()
            json.loads(r.json()["message"]["content"])

    c0, t0 = time.process_time(), time.perf_counter()
    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--failures", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--slots", type=int, default=8)
    args = ap.parse_args()
    n, slots = args.failures, args.slots
    ideal = slots / args.latency

    tmp = Path(tempfile.mkdtemp(prefix="lens-bench-hyp-"))
    wh = Warehouse(tmp / "lens.duckdb")
    seed_run(wh, n)  # 32x32 noise PNGs: the worst case for PNG re-encoding

    # bare baseline: a request body like Lens's (128 px PNG as base64, the reference prompt and schema)
    import base64

    from lens.backends.chat import prepare_image, system_message

    png = bytes(wh.query("select image_png from failures limit 1").image_png[0])
    prompt = prompts.load("reference")
    body = json.dumps({
        "model": "qwen3-vl:8b", "stream": False, "think": False, "format": prompt.json_schema(),
        "options": {"temperature": 0.1},
        "messages": [{"role": "system", "content": system_message(prompt)},
                     {"role": "user", "content": "x" * 900,
                      "images": [base64.b64encode(prepare_image(png, compress_level=0)).decode()]}],
    }).encode()
    srv = Server(args.latency, slots)
    try:
        b_wall, b_cpu = bare(srv.url, n, slots, body)
    finally:
        srv.close()
    b_busy = srv.stats.get("busy_seconds", b_wall)

    srv = Server(args.latency, slots)
    try:
        c0, t0, m0 = time.process_time(), time.perf_counter(), time.monotonic()
        res = hypothesize.run(wh, backend="ollama", ollama_host=srv.url, concurrency=slots, progress=False)
        l_wall, l_cpu, m1 = time.perf_counter() - t0, time.process_time() - c0, time.monotonic()
    finally:
        srv.close()
    assert res.ok == n, res
    l_busy = srv.stats.get("busy_seconds", l_wall)
    startup = (srv.stats["first_at"] - m0) if srv.stats.get("first_at") else float("nan")
    finish = (m1 - srv.stats["last_at"]) if srv.stats.get("last_at") else float("nan")

    print(f"{n} failures, server latency {args.latency * 1000:.0f} ms, {slots} slots: ideal {ideal:.0f} answers/s"
          f"  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"{'':5} {'wall s':>7} {'answers/s':>10} {'% ideal':>8} | {'steady answers/s':>17} {'% ideal':>8}"
          f" | {'CPU ms/answer':>13}")
    for name, wall, busy, cpu in (("bare", b_wall, b_busy, b_cpu), ("lens", l_wall, l_busy, l_cpu)):
        print(f"{name:5} {wall:7.2f} {n / wall:10.1f} {100 * n / wall / ideal:7.1f}% | {n / busy:17.1f}"
              f" {100 * n / busy / ideal:7.1f}% | {1000 * cpu / n:13.2f}")
    print(f"lens / bare: wall {l_wall / b_wall:.2f}x, CPU {l_cpu / max(b_cpu, 1e-9):.2f}x; lens start-up to the first"
          f" request {1000 * startup:.0f} ms, last reply to the end {1000 * finish:.0f} ms")
    print(f"one-off: importing the ollama client took {1000 * IMPORT_S:.0f} ms (not in the figures above)")
    print(f"targets: >= 90% of ideal: end to end {'met' if n / l_wall >= 0.9 * ideal else 'MISSED'}, "
          f"steady state {'met' if n / l_busy >= 0.9 * ideal else 'MISSED'}; "
          f"Lens's own time < 5 ms/answer: {'met' if 1000 * l_cpu / n < 5 else 'MISSED'}")


if __name__ == "__main__":
    main()
