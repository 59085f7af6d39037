"""Benchmark `lens hypothesize` against a loopback Ollama-speaking server with a fixed latency.

The server (tests/_servers.py) runs in its own process: 200 ms per chat request, 8
parallel slots, so the ideal is 8 / 0.2 = 40 answers/s. Printed side by side, each against
a fresh server, in rounds (bare, client, lens; ``--rounds``), with the median:

  * bare: ``--concurrency`` threads posting the same /api/chat requests with httpx (a
    prepared body, no image work, no parsing, no storage);
  * client: the raw ``ollama`` client in a ThreadPoolExecutor of ``--concurrency`` workers,
    each call with the prepared 128 px PNG and the reference prompt's messages and schema
    (what any program using the client pays; no parsing or storage);
  * lens: the whole stage at ``--concurrency`` (image upscale + PNG, the ollama client,
    JSON parsing and validation, batched DuckDB writes, progress bookkeeping), with its default
    ``--queue-ahead 1`` (one more request waiting in the server's queue);
  * lens q0: the same with ``--queue-ahead 0``: exactly ``--concurrency`` in flight, like bare
    and client;
  * utilisation: the share of the server's slot time that was busy over its window (first
    request in to last reply out) = answers x latency / (slots x window), and answers/s end
    to end (lens: the whole stage call, start-up and final commit included);
  * lens / client: the ratio of utilisations (target: lens >= 0.95 at concurrency = slots);
  * Lens's own time per answer: the CPU seconds of the Lens process (the server is
    another process) divided by the answers (target < 5 ms).

The machine's load is printed too: on a shared, oversubscribed box every figure drops.

Usage: .venv/bin/python benchmarks/bench_hypothesize.py [--failures 400] [--latency 0.2] [--slots 8]
       [--concurrency 8] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

_t = time.perf_counter()
import ollama  # noqa: E402,F401  (the client's import is a one-off cost per process: timed apart)

IMPORT_S = time.perf_counter() - _t

from lens import defaults as D  # noqa: E402
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


def client(url: str, n: int, threads: int, messages: list[dict], schema: dict) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of n raw ``ollama`` client calls in a ThreadPoolExecutor."""
    cl = ollama.Client(host=url, timeout=30)

    def call(_):
        r = cl.chat(model="qwen3-vl:8b", messages=messages, format=schema, think=False,
                    options={"temperature": 0.1})
        json.loads(r.message.content)

    c0, t0 = time.process_time(), time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(call, range(n)))
    return time.perf_counter() - t0, time.process_time() - c0


def _measured(run, latency: float, slots: int) -> dict:
    """Run ``run(url)`` -> (wall, cpu) against a fresh server; its figures with the server's window."""
    srv = Server(latency, slots)
    try:
        m0 = time.monotonic()
        wall, cpu = run(srv.url)
        m1 = time.monotonic()
    finally:
        srv.close()
    st = srv.stats
    window = st.get("busy_seconds") or wall
    return {"wall": wall, "cpu": cpu, "window": window, "n": st.get("chat_requests", 0),
            "startup": (st["first_at"] - m0) if st.get("first_at") else float("nan"),
            "finish": (m1 - st["last_at"]) if st.get("last_at") else float("nan")}


def _bodies(wh, prompt):
    """The bare body (bytes) and the client's messages, like Lens's (128 px PNG, reference prompt)."""
    import base64

    from lens.backends.chat import prepare_image, system_message

    png = bytes(wh.query("select image_png from failures limit 1").image_png[0])
    image = prepare_image(png, compress_level=0)
    messages = [{"role": "system", "content": system_message(prompt)},
                {"role": "user", "content": "x" * 900, "images": [image]}]
    body = json.dumps({
        "model": "qwen3-vl:8b", "stream": False, "think": False, "format": prompt.json_schema(),
        "options": {"temperature": 0.1},
        "messages": [messages[0], {**messages[1], "images": [base64.b64encode(image).decode()]}],
    }).encode()
    return body, messages


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--failures", type=int, default=400)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=None, help="threads / --concurrency (default: --slots)")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    n, slots, lat = args.failures, args.slots, args.latency
    conc = args.concurrency or slots
    ideal = slots / lat

    tmp = Path(tempfile.mkdtemp(prefix="lens-bench-hyp-"))
    prompt = prompts.load("reference")
    body, messages = _bodies(_seeded(tmp / "probe.duckdb", 1), prompt)

    def lens(i, ahead=D.QUEUE_AHEAD):
        wh = _seeded(tmp / f"lens{i}-{ahead}.duckdb", n)  # 32x32 noise PNGs: the worst case for PNG re-encoding

        def go(url):
            c0, t0 = time.process_time(), time.perf_counter()
            res = hypothesize.run(wh, backend="ollama", ollama_host=url, concurrency=conc, queue_ahead=ahead,
                                  progress=False)
            assert res.ok == n, res
            return time.perf_counter() - t0, time.process_time() - c0
        return go

    runs: dict[str, list[dict]] = {"bare": [], "client": [], "lens": [], "lens q0": []}
    for i in range(args.rounds):
        runs["bare"].append(_measured(lambda url: bare(url, n, conc, body), lat, slots))
        runs["client"].append(_measured(lambda url: client(url, n, conc, messages, prompt.json_schema()), lat, slots))
        runs["lens"].append(_measured(lens(i), lat, slots))
        runs["lens q0"].append(_measured(lens(i, 0), lat, slots))
    _report(runs, n=n, lat=lat, slots=slots, conc=conc, ideal=ideal)


def _seeded(path: Path, n: int) -> Warehouse:
    wh = Warehouse(path)
    seed_run(wh, n)
    return wh


def _report(runs: dict[str, list[dict]], *, n: int, lat: float, slots: int, conc: int, ideal: float) -> None:
    util = {k: [n * lat / (slots * r["window"]) for r in v] for k, v in runs.items()}
    med = {k: statistics.median(v) for k, v in util.items()}
    print(f"{n} failures, server latency {lat * 1000:.0f} ms, {slots} slots, concurrency {conc}: ideal "
          f"{ideal:.0f} answers/s  (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs), "
          f"{len(runs['lens'])} rounds")
    print(f"{'':7} {'utilisation (each round)':>34} {'median':>7} | {'answers/s':>9} {'% ideal':>8}"
          f" | {'CPU ms/answer':>13}")
    for name, rs in runs.items():
        wall = statistics.median(r["wall"] for r in rs)
        cpu = statistics.median(r["cpu"] for r in rs)
        each = " ".join(f"{u:.3f}" for u in util[name])
        print(f"{name:7} {each:>34} {med[name]:7.3f} | {n / wall:9.1f} {100 * n / wall / ideal:7.1f}%"
              f" | {1000 * cpu / n:13.2f}")
    lens = runs["lens"]
    print(f"lens / client utilisation {med['lens'] / med['client']:.3f} (lens q0 / client "
          f"{med['lens q0'] / med['client']:.3f}), lens / bare {med['lens'] / med['bare']:.3f};"
          f" lens start-up to the first request {1000 * statistics.median(r['startup'] for r in lens):.0f} ms,"
          f" last reply to the end {1000 * statistics.median(r['finish'] for r in lens):.0f} ms")
    print(f"one-off: importing the ollama client took {1000 * IMPORT_S:.0f} ms (not in the figures above)")
    cpu = 1000 * statistics.median(r["cpu"] for r in lens) / n
    print(f"targets: lens utilisation >= 0.95 at concurrency = slots: "
          f"{'met' if med['lens'] >= 0.95 else 'MISSED'} ({med['lens']:.3f}); "
          f"Lens's own time < 5 ms/answer: {'met' if cpu < 5 else 'MISSED'} ({cpu:.2f})")


if __name__ == "__main__":
    main()
