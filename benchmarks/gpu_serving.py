"""Serving on a GPU through `kiln serve` (issue 3 acceptance 3, issue 9 acceptance 2).

Builds a torch engine (fp16, uint8 input, one CUDA graph per bucket), writes a model repository,
starts `kiln serve` as a subprocess, then loads it over gRPC with `kiln bench serve`:
  1. concurrency 1 and 64 with one image per request (acceptance 3 of issue 3);
  2. a sweep of total load from several client processes (each request carries --rows images),
     to find the highest throughput whose p99 stays within --p99-ms (issue 9, acceptance 2).
GPU utilization is read from the server's /metrics during the sweep. With --workers N the workers share the
gRPC port (the kernel deals them connections); add --grpc-worker-ports to have the clients deal calls over each
worker's own port instead (round_robin). Either way requests_per_worker says how evenly they were loaded.

    python benchmarks/gpu_serving.py --model resnet50 --out results.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# benchmarks/ is on the path when this runs as a script
from gpu_authenticity import SERVER_MODULES, require_modules
from readiness import wait_ready


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _free_ports(count: int, avoid: tuple[int, ...]) -> int:
    """The first of ``count`` consecutive loopback ports that are free and not in ``avoid``."""
    for _ in range(100):
        first = _free_port()
        if first + count > 65536 or any(first <= port < first + count for port in avoid):
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise RuntimeError(f"found no {count} consecutive free ports")


def _gpu_utilization(url: str) -> float | None:
    try:
        with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("kiln_gpu_utilization{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def _bench(grpc_addr: str, model: str, concurrency: int, rows: int, duration: float, out: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "kiln", "bench", "serve", "--url", grpc_addr, "--model", model, "--protocol", "grpc",
         "--concurrency", str(concurrency), "--batch", str(rows), "--duration", str(duration), "--warmup", "2",
         "--json", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _collect(outs: list[Path]) -> dict[str, Any]:
    runs = [json.loads(p.read_text())["runs"][0] for p in outs]
    return {
        "items_per_s": round(sum(r["items_per_s"] for r in runs), 1),
        "requests_per_s": round(sum(r["throughput_rps"] for r in runs), 1),
        "p50_ms": round(max(r["latency_ms"]["p50"] for r in runs), 3),
        "p99_ms": round(max(r["latency_ms"]["p99"] for r in runs), 3),  # the worst client's p99: conservative
        "errors": sum(r["errors"] for r in runs),
        **({"requests_per_worker": per_worker} if (per_worker := _requests_per_worker(runs)) else {}),
        **({"server_stages_ms": stages} if (stages := _server_stages(runs)) else {}),
    }


def _server_stages(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each server stage's percentiles (the answers' server-timing, as ``kiln bench serve`` reports
    them), the worst client's for each, as for p99; "outside" is latency less the server's time."""
    out: dict[str, dict[str, float]] = {}
    for run in runs:
        for stage, percentiles in run.get("server_stages_ms", {}).items():
            merged = out.setdefault(stage, {})
            for q, ms in percentiles.items():
                merged[q] = max(merged.get(q, 0.0), ms)
    return out


def _requests_per_worker(runs: list[dict[str, Any]]) -> dict[str, int]:
    """Calls each server worker answered, summed over the client processes (how evenly the workers were
    loaded: dealt connections on a shared port, or calls with --grpc-worker-ports); empty when the server
    does not name them."""
    total: Counter[str] = Counter()
    for run in runs:
        total.update(run.get("requests_per_worker", {}))
    return dict(sorted(total.items()))


def _profile(args: argparse.Namespace, pid: int) -> subprocess.Popen[bytes] | None:
    """py-spy on the server and its children (workers, engine host) for a few seconds of this point,
    sampling only the thread that holds each process's GIL: a process's samples over rate × seconds
    is the share of the time its interpreter was busy."""
    if not Path(args.py_spy).exists():
        print(f"no py-spy at {args.py_spy}: no profile", flush=True)
        return None
    if 2.5 + args.profile_seconds > args.duration:
        print(f"--profile-seconds {args.profile_seconds} does not fit in --duration {args.duration:g} after the warm-up: "
              "no profile", flush=True)
        return None
    time.sleep(2.5)  # past the clients' warm-up
    with args.out.with_suffix(".pyspy.log").open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([args.py_spy, "record", "--subprocesses", "--gil", "--nonblocking", "-p", str(pid),
                                 "-r", "200", "-d", str(args.profile_seconds), "-f", "raw",
                                 "-o", str(args.out.with_suffix(".pyspy.txt"))], stdout=subprocess.DEVNULL, stderr=log)


def _profile_summary(path: Path, instants: float, top: int = 14) -> dict[str, Any]:
    """Per process (py-spy's root frame names it): GIL-holding samples, their share of the
    ``instants`` sampled (rate × seconds: a lower bound when py-spy fell behind, which its log
    says), and the functions they were in (leaf frames)."""
    if not path.is_file():
        log = path.with_suffix(".log")
        return {"table": "py-spy wrote no profile: " + (log.read_text()[-400:] if log.is_file() else "")}
    per_process: dict[str, dict[str, int]] = {}
    roles: dict[str, str] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        owners = [f for f in frames if f.startswith("process ")]  # parent;child;...: the last one ran it
        if not count.isdigit() or not owners or frames[-1].startswith("process "):
            continue
        pid = owners[-1].split(":", 1)[0].removeprefix("process ")
        if any("engine_host.py" in f for f in frames):
            roles[pid] = "engine host"
        elif any("uvicorn" in f or "grpc" in f for f in frames):
            roles.setdefault(pid, "server worker")
        leaves = per_process.setdefault(pid, {})
        leaves[frames[-1]] = leaves.get(frames[-1], 0) + int(count)
    per_process = {f"pid {pid} ({roles.get(pid, 'supervisor')})": leaves for pid, leaves in per_process.items()}
    lines, summary = [], {}
    for process, leaves in sorted(per_process.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(leaves.values())
        ranked = sorted(leaves.items(), key=lambda kv: -kv[1])[:top]
        summary[process] = {"samples": total, "gil_busy": round(total / instants, 3), "top": ranked}
        lines.append(f"== {process}: {total} samples, GIL held {100 * total / instants:.0f}% of the time")
        lines += [f"  {100 * n / total:5.1f}%  {frame[:140]}" for frame, n in ranked]
    return {"processes": summary, "table": "\n".join(lines)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--compile", default="reduce-overhead")
    parser.add_argument("--freezing", action="store_true")
    parser.add_argument("--fuse-conv", action="store_true", help="build the engine with --fuse-conv (ResNets)")
    parser.add_argument("--buckets", default="1,16,32,64,128,256")
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--queue-delay-us", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=8, help="images per request in the sweep")
    parser.add_argument("--clients", type=int, default=8, help="client processes in the sweep")
    parser.add_argument("--sweep", default="2,4,8,16", help="concurrency per client process")
    parser.add_argument("--client-counts", default=None,
                        help="client process counts to sweep too (each with every --sweep value), e.g. 12,16,20")
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--p99-ms", type=float, default=15.0)
    parser.add_argument("--device", default="cuda", help="cpu only to check this script without a GPU")
    parser.add_argument("--input-size", type=int, default=None)
    parser.add_argument("--workers", type=int, default=1, help="kiln serve --workers (server processes sharing the ports)")
    parser.add_argument("--shared-engines", action="store_true", help="kiln serve --shared-engines: one engine host for all workers")
    parser.add_argument("--grpc-worker-ports", action="store_true",
                        help="with --workers N > 1: kiln serve --grpc-worker-ports, and the clients deal their calls to the "
                             "workers' own ports with gRPC's round_robin policy instead of sharing one port (SO_REUSEPORT)")
    parser.add_argument("--cache", type=Path, default=None, help="engine cache to reuse between runs (default: a fresh one)")
    parser.add_argument("--skip-single", action="store_true", help="skip the concurrency 1 and 64 single-image runs")
    parser.add_argument("--profile-at", type=int, default=None,
                        help="at this sweep point, sample the server's processes with py-spy (written beside --out)")
    parser.add_argument("--profile-seconds", type=int, default=4)
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/site/bin/py-spy", help="py-spy executable")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.grpc_worker_ports and args.workers < 2:
        parser.error("--grpc-worker-ports needs --workers 2 or more")
    require_modules(SERVER_MODULES)  # before minutes of engine building: the server must be able to start
    # a time limit's SIGTERM still writes what was measured (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))

    from kiln.engine.artifact import EngineCache
    from kiln.engine.build import BuildSettings, build_engine
    from kiln.engine.hardware import fingerprint
    from kiln.engine.spec import BatchProfile, ModelSource, Precision

    work = Path(tempfile.mkdtemp(prefix="kiln-gpu-serving-"))
    buckets = tuple(int(b) for b in args.buckets.split(","))
    repo = work / "repo"
    started = time.perf_counter()
    build_engine(
        BuildSettings(
            source=ModelSource.parse(f"timm:{args.model}"),
            backend="torch",
            precision=Precision.FP16,
            batch=BatchProfile(min=1, opt=max(buckets), max=max(buckets), buckets=buckets),
            device=args.device,
            input_size=(args.input_size, args.input_size) if args.input_size else None,
            options={"compile": args.compile, "input_format": "uint8", "freezing": args.freezing, "fuse_conv": args.fuse_conv},
        ),
        cache=EngineCache(args.cache or work / "cache"),
        output=repo / args.model / "1",
    )
    build_seconds = time.perf_counter() - started
    print(f"engine built in {build_seconds:.0f}s", flush=True)
    (repo / args.model / "config.json").write_text(json.dumps({
        "max_batch_size": max(buckets),
        "max_queue_delay_us": args.queue_delay_us,
        "preferred_batch_sizes": [b for b in buckets if b > 1],
        "max_queue_size": 4096,
        "instances": args.instances,
    }))
    http_port, grpc_port = _free_port(), _free_port()
    url, grpc_addr = f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}"
    own_ports: list[str] = []
    if args.grpc_worker_ports:  # the clients balance calls over the workers' own ports
        first = _free_ports(args.workers, (http_port, grpc_port))
        own_ports = ["--grpc-worker-ports", str(first)]
        grpc_addr = "ipv4:" + ",".join(f"127.0.0.1:{first + i}" for i in range(args.workers))
    log = (work / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "kiln", "serve", "--repo", str(repo), "--http-port", str(http_port), "--grpc-port", str(grpc_port),
         "--workers", str(args.workers), *(["--shared-engines"] if args.shared_engines else []), *own_ports],
        stdout=subprocess.DEVNULL, stderr=log, env=dict(os.environ),
    )
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "hardware": fingerprint(),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "build_seconds": round(build_seconds, 1),
        # how the clients' calls reach the workers: each worker's own port in turn, or connections the kernel shares out
        "balance": ("round_robin" if args.grpc_worker_ports else "reuseport") if args.workers > 1 else None,
        "grpc_target": grpc_addr,
    }
    try:
        start_wait = time.perf_counter()
        wait_ready(url, 600, workers=args.workers, process=server)  # a server that fails to start ends the run
        result["server_ready_seconds"] = round(time.perf_counter() - start_wait, 1)
        print(f"built in {build_seconds:.0f}s, server ready in {result['server_ready_seconds']}s", flush=True)
        single = []
        for concurrency in () if args.skip_single else (1, 64):
            out = work / f"single-{concurrency}.json"
            proc = _bench(grpc_addr, args.model, concurrency, 1, args.duration, out)
            proc.wait()
            row = {"concurrency": concurrency, "rows_per_request": 1, **_collect([out])}
            single.append(row)
            print(json.dumps(row), flush=True)
        result["single_image_requests"] = single
        sweep = []
        counts = [int(c) for c in args.client_counts.split(",")] if args.client_counts else [args.clients]
        for clients, per_client in [(n, c) for n in counts for c in (int(c) for c in args.sweep.split(","))]:
            outs = [work / f"sweep-{clients}-{per_client}-{i}.json" for i in range(clients)]
            procs = [_bench(grpc_addr, args.model, per_client, args.rows, args.duration, o) for o in outs]
            utilization: list[float] = []
            stop = threading.Event()

            def sample(stop: threading.Event = stop, utilization: list[float] = utilization) -> None:
                time.sleep(3)
                while not stop.wait(1.0):
                    value = _gpu_utilization(url)
                    if value is not None:
                        utilization.append(value)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            profiler = _profile(args, server.pid) if per_client == args.profile_at else None
            for p in procs:
                p.wait()
            if profiler is not None:
                profiler.wait()
                result["profile"] = _profile_summary(args.out.with_suffix(".pyspy.txt"), 200 * args.profile_seconds)
                print(result["profile"]["table"], flush=True)
            stop.set()
            sampler.join()
            row = {
                "total_concurrency": per_client * clients, "client_processes": clients, "rows_per_request": args.rows,
                **_collect(outs),
                "gpu_utilization_mean": round(sum(utilization) / len(utilization), 3) if utilization else None,
            }
            sweep.append(row)
            print(json.dumps(row), flush=True)
            args.out.write_text(json.dumps(result | {"sweep": sweep}, indent=2))
        result["sweep"] = sweep
        within = [r for r in sweep if r["p99_ms"] <= args.p99_ms and r["errors"] == 0]
        result["best_within_p99"] = max(within, key=lambda r: r["items_per_s"]) if within else None
        print("best within p99:", json.dumps(result["best_within_p99"]), flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        result["server_log_tail"] = (work / "server.log").read_text()[-3000:]
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
