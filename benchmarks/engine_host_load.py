"""The engine host under load (``kiln serve --shared-engines``): calls per second and host CPU per call.

engine_link.py measures one call at a time; this one measures what the GPU runs showed as the limit:
the host's one interpreter serving many links at once. One engine host process serves one model
(ONNX: uint8 images [-1,3,224,224] → their mean per image, so the engine's own work is small, with
2 instances); ``--processes`` client processes (the server workers) each run ``--links`` threads, each
with its own ``RemoteRunner``, calling in a closed loop for ``--seconds``. Reported per host variant:
calls/s, latency p50/p99, and the host process's CPU time per call (user + system, from /proc), the
figure that says how many calls/s one interpreter can serve.

The host can run from another tree (``--baseline DIR``: its ``src`` goes first on the host's path),
so that this tree's host and an older one are measured in the same run, alternating ``--rounds`` times.

    python benchmarks/engine_host_load.py [--baseline tmp/host-base] [--processes 4] [--links 2]
        [--rows 8] [--seconds 6] [--rounds 2] [--out docs/benchmarks/engine_host_load.md]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_link import _engine
from store_writes import machine_line, percentile

_HOST = """
import sys
from kiln.serve.engine_host import host_main
class Ready:
    def send(self, value):
        print("ready", flush=True)
host_main(sys.argv[1], Ready(), "warning")
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _client(address: str, engine: str, repo: str, links: int, rows: int, seconds: float, start_at: float,
            results: Any) -> None:
    from kiln.serve.model_config import ModelConfig
    from kiln.serve.remote_runner import RemoteRunner

    config = ModelConfig.read(Path(repo))
    batch = {"x": np.random.default_rng(os.getpid()).integers(0, 255, (rows, 3, 224, 224), dtype=np.uint8)}
    expected = batch["x"].reshape(rows, -1).mean(axis=1)
    runners = [RemoteRunner(address, "mean", "1", Path(engine), config) for _ in range(links)]
    latencies: list[list[float]] = [[] for _ in runners]
    wrong = [0]

    def loop(i: int) -> None:
        runner = runners[i]
        while time.time() < start_at:
            runner.infer(batch)  # warm-up until every client is connected
        end = start_at + seconds
        while True:
            t0 = time.perf_counter()
            out = runner.infer(batch)
            if time.time() > end:
                return
            latencies[i].append(time.perf_counter() - t0)
            if not np.allclose(out["y"], expected, rtol=1e-4):
                wrong[0] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(links)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for runner in runners:
        runner.close()
    results.put({"latencies": [x for per in latencies for x in per], "wrong": wrong[0]})


def run(variant: str, src: Path, engine: Path, repo: Path, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    address = str(work / f"{variant}.sock")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [str(src), os.environ.get("PYTHONPATH", "")] if p)}
    host = subprocess.Popen([sys.executable, "-c", _HOST, address], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout is not None and host.stdout.readline().strip() == "ready", "the engine host did not start"
        context = multiprocessing.get_context("spawn")
        results = context.Queue()
        start_at = time.time() + 3.0 + 0.5 * args.processes  # clients import and connect before this
        clients = [context.Process(target=_client, args=(address, str(engine), str(repo), args.links, args.rows,
                                                          args.seconds, start_at, results)) for _ in range(args.processes)]
        for client in clients:
            client.start()
        while time.time() < start_at:
            time.sleep(0.01)
        cpu0, t0 = _cpu_s(host.pid), time.perf_counter()
        time.sleep(args.seconds)
        cpu1, elapsed = _cpu_s(host.pid), time.perf_counter() - t0
        outcomes = [results.get(timeout=60) for _ in clients]
        for client in clients:
            client.join(30)
    finally:
        host.terminate()
        host.wait(30)
    latencies = [x * 1e3 for o in outcomes for x in o["latencies"]]
    calls = len(latencies)
    return {
        "variant": variant, "host_code": str(src), "calls": calls, "calls_per_s": round(calls / elapsed, 1),
        "images_per_s": round(calls * args.rows / elapsed, 1),
        "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99),
        "host_cpu_ms_per_call": round((cpu1 - cpu0) * 1e3 / max(calls, 1), 3),
        "host_cores_busy": round((cpu1 - cpu0) / elapsed, 2), "wrong_outputs": sum(o["wrong"] for o in outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, default=None, help="a tree whose src/ runs the host for comparison")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--links", type=int, default=2, help="links (threads) per client process")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--delay-us", type=int, default=500, help="the model's max_queue_delay_us")
    parser.add_argument("--out", type=Path, default=None, help="markdown report (default: print only)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    here = Path(__file__).resolve().parent.parent / "src"
    variants = [("this tree", here)] + ([("baseline", (args.baseline / "src").resolve())] if args.baseline else [])
    work = Path(tempfile.mkdtemp(prefix="kiln-host-load-"))
    engine = _engine(work)
    repo = work / "repo" / "mean"
    (repo / "config.json").write_text(json.dumps({"max_queue_delay_us": args.delay_us, "instances": 2,
                                                  "engine_options": {"threads": 1}}))
    rows = []
    for round_ in range(args.rounds):
        for name, src in (variants if round_ % 2 == 0 else variants[::-1]):
            result = run(name, src, engine, repo, args, work)
            result["round"] = round_ + 1
            rows.append(result)
            print(json.dumps(result))

    def mean_of(name: str, key: str) -> float:
        return statistics.fmean(r[key] for r in rows if r["variant"] == name)

    table = "\n".join(
        f"| {r['round']} | {r['variant']} | {r['calls_per_s']:,} | {r['images_per_s']:,} | {r['p50_ms']} | {r['p99_ms']} "
        f"| {r['host_cpu_ms_per_call']} | {r['host_cores_busy']} | {r['wrong_outputs']} |" for r in rows)
    ratio = ""
    if args.baseline:
        ratio = (f"\nMeans over the rounds, this tree ÷ baseline: calls/s {mean_of('this tree', 'calls_per_s') / mean_of('baseline', 'calls_per_s'):.2f}×, "
                 f"host CPU per call {mean_of('this tree', 'host_cpu_ms_per_call') / mean_of('baseline', 'host_cpu_ms_per_call'):.2f}×.\n")
    command = " ".join(["python benchmarks/engine_host_load.py", *sys.argv[1:]])
    report = f"""# The engine host under load: calls/s and host CPU per call

Command: `{command}` · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · {machine_line()}, load average {os.getloadavg()[0]:.2f} at the end.

{args.processes} client processes × {args.links} links, each a closed loop of calls of {args.rows} uint8 images of 3×224×224 to an
ONNX model that returns each image's mean (onnxruntime, one thread, 2 instances, {args.delay_us} µs queue delay) in an
engine host process; {args.seconds:g} s per row, after a warm-up. Clients and host share this machine's cores.

| round | host code | calls/s | images/s | p50 ms | p99 ms | host CPU ms per call | host cores busy | wrong outputs |
|---:|---|---:|---:|---:|---:|---:|---:|---:|
{table}
{ratio}"""
    print(report)
    if args.out:
        args.out.write_text(report)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
