"""Serving benchmarks (issue 3 acceptance) → docs/benchmarks/serving.md.

1. Dynamic batching on vs off: the same onnxruntime engine served by ``kiln serve`` twice in one
   repository ("batched": max_batch_size 32 + queue delay; "single": dynamic_batching off), the
   same closed-loop load at concurrency 32 over gRPC; plus the unloaded single-request latency.
2. kiln vs NVIDIA Triton (PyTriton): the same engine file run by onnxruntime from Python on both
   sides (same session options), the same dynamic-batching settings, concurrency 1/8/32 over HTTP
   and gRPC; both servers run side by side and every point is measured on each, back to back in
   alternating order (``--rounds`` pairs, median reported), so outside load hits both alike.

    PYTHONPATH=src python benchmarks/serving.py [--duration 10] [--triton-python VENV/bin/python]

PyTriton needs numpy<2, so it runs from its own environment:
``python -m venv V && V/bin/pip install nvidia-pytriton onnxruntime``; without
``--triton-python`` part 2 is skipped and the page says so. Both servers bind 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 180, model: str = "batched") -> None:
    """Waits for the model itself (PyTriton reports the server ready before it binds its models)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/v2/models/{model}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready within {timeout_s} s")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_load(url: str, model: str, protocol: str, concurrency: int, duration: float, shape: list[int]) -> dict[str, Any]:
    from kiln.serve import loadgen

    async def go() -> dict[str, Any]:
        meta_url = url if protocol == "grpc" else f"http://{url}"
        metadata = await loadgen.fetch_metadata(meta_url, model, protocol)
        inputs = loadgen.make_inputs(metadata, 1, {metadata["inputs"][0]["name"]: shape})
        target = loadgen.make_target(url, model, protocol, inputs, connections=concurrency)
        try:
            result = await loadgen.closed_loop(target, concurrency, duration, protocol=protocol, warmup_s=min(2.0, duration / 4))
        finally:
            await target.close()
        return result.summary()

    summary = asyncio.run(go())
    lat = summary["latency_ms"]
    print(f"  {model:8s} {protocol:4s} c={concurrency:<3d} {summary['throughput_rps']:9.1f} req/s  p50 {lat['p50']:7.2f} ms  "
          f"p99 {lat['p99']:7.2f} ms  errors {summary['errors']}", flush=True)
    return summary


def machine() -> str:
    from kiln.engine.hardware import cpu_info

    cpu = cpu_info()
    return f"{cpu.get('model', platform.processor())}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="timm:resnet18?num_classes=10")
    parser.add_argument("--input-size", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per point")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    parser.add_argument("--no-spin", action="store_true",
                        help="onnxruntime intra-op threads sleep between calls instead of spinning (both servers)")
    parser.add_argument("--triton-python", type=Path, default=None, help="interpreter with nvidia-pytriton installed")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "serving.md")
    parser.add_argument("--rounds", type=int, default=1, help="kiln/Triton pairs per point (the median round is reported)")
    parser.add_argument("--note", default="", help="a line added to the page (e.g. about machine load)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    from kiln.engine.artifact import EngineCache
    from kiln.engine.build import BuildSettings, build_engine
    from kiln.engine.spec import BatchProfile, ModelSource

    work = Path(tempfile.mkdtemp(prefix="kiln-bench-serving-"))
    print(f"building {args.model} at {args.input_size}px ...", flush=True)
    outcome = build_engine(
        BuildSettings(
            source=ModelSource.parse(args.model),
            input_size=(args.input_size, args.input_size),
            batch=BatchProfile(min=1, opt=16, max=32),
            options={"threads": args.threads} if args.threads else {},
        ),
        cache=EngineCache(work / "cache"),
    )
    manifest = outcome.manifest
    input_spec, output_spec = manifest.inputs[0], manifest.outputs[0]
    shape = [1, 3, args.input_size, args.input_size]
    engine_options: dict[str, Any] = {"threads": args.threads} if args.threads else {}
    if args.no_spin:
        engine_options["spin"] = False
    repo = work / "repo"
    for name, config in {
        "batched": {"max_batch_size": 32, "max_queue_delay_us": args.delay_us, "max_queue_size": 1024, "engine_options": engine_options},
        "single": {"dynamic_batching": False, "max_queue_size": 1024, "engine_options": engine_options},
    }.items():
        shutil.copytree(outcome.path, repo / name / "1")
        (repo / name / "config.json").write_text(json.dumps(config))

    results: dict[str, Any] = {"batching": {}, "kiln": {}, "triton": {}, "load_average": {"start": os.getloadavg()}}
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    servers: list[subprocess.Popen[bytes]] = []
    triton_note = ""
    try:
        kiln = subprocess.Popen(
            [sys.executable, "-m", "kiln", "serve", "--repo", str(repo), "--http-port", str(http_port), "--grpc-port", str(grpc_port),
             "--no-access-log", "--log-level", "warning"],
            env=env,
        )
        servers.append(kiln)
        urls = {"kiln": {"http": f"127.0.0.1:{http_port}", "grpc": f"127.0.0.1:{grpc_port}"}}
        if args.triton_python is None:
            triton_note = "Triton was not measured in this run (no --triton-python given)."
        else:
            t_http, t_grpc = free_port(), free_port()
            triton = subprocess.Popen(
                [str(args.triton_python), str(ROOT / "benchmarks" / "serving_triton.py"), "--onnx",
                 str(outcome.path / manifest.build_options.get("runtime_model", "model.opt.onnx")),
                 "--http-port", str(t_http), "--grpc-port", str(t_grpc), "--metrics-port", str(free_port()),
                 "--max-batch", "32", "--delay-us", str(args.delay_us), "--threads", str(args.threads),
                 "--input-name", input_spec.name, "--output-name", output_spec.name,
                 "--input-shape", "x".join(str(d) for d in shape[1:]),
                 "--output-shape", "x".join(str(d) for d in output_spec.shape[1:]),
                 *(["--no-spin"] if args.no_spin else [])],
            )
            servers.append(triton)
            urls["triton"] = {"http": f"127.0.0.1:{t_http}", "grpc": f"127.0.0.1:{t_grpc}"}
        for name, server in zip(urls, servers, strict=True):
            wait_ready(f"http://{urls[name]['http']}", server)
        grpc_url = urls["kiln"]["grpc"]
        print("part 1: dynamic batching on vs off (gRPC)", flush=True)
        results["batching"]["unloaded"] = run_load(grpc_url, "batched", "grpc", 1, args.duration, shape)
        results["batching"]["on"] = run_load(grpc_url, "batched", "grpc", 32, args.duration, shape)
        results["batching"]["off"] = run_load(grpc_url, "single", "grpc", 32, args.duration, shape)
        # Part 2 interleaves the servers point by point (order alternating, each pair repeated
        # --rounds times) so that load from elsewhere on the machine hits both alike.
        print(f"part 2: {' vs '.join(urls)}, interleaved", flush=True)
        turn = 0
        for protocol in ("http", "grpc"):
            for c in levels:
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in urls}
                for _ in range(args.rounds):
                    order = list(urls) if turn % 2 == 0 else list(reversed(urls))
                    turn += 1
                    for name in order:
                        print(f"  {name:6s}", end="", flush=True)
                        summary = run_load(urls[name][protocol], "batched", protocol, c, args.duration, shape)
                        summary["load_average_1m"] = round(os.getloadavg()[0], 2)
                        runs[name].append(summary)
                for name, rounds in runs.items():
                    chosen = sorted(rounds, key=lambda r: r["throughput_rps"])[len(rounds) // 2]  # the median round
                    results[name][f"{protocol}/{c}"] = {**chosen, "rounds": rounds}
    finally:
        for server in servers:
            stop(server)
    results["load_average"]["end"] = os.getloadavg()

    command = "PYTHONPATH=src python benchmarks/serving.py " + " ".join(sys.argv[1:])
    write_page(args, results, manifest.source.describe(), machine(), command, triton_note)
    (args.out.with_suffix(".json")).write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")


def write_page(args: argparse.Namespace, results: dict[str, Any], model: str, host: str, command: str, triton_note: str) -> None:
    import numpy as np
    import onnxruntime

    from kiln import __version__

    b = results["batching"]
    on, off, unloaded = b["on"], b["off"], b["unloaded"]
    ratio = on["throughput_rps"] / off["throughput_rps"] if off["throughput_rps"] else float("nan")
    p99_bound = 2 * unloaded["latency_ms"]["p50"]
    lines = [
        "# Serving benchmarks",
        "",
        f"- command: `{command}`",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- machine: {host}",
        f"- kiln {__version__}, onnxruntime {onnxruntime.__version__}, numpy {np.__version__}, Python {platform.python_version()}",
        f"- model: `{model}` at {args.input_size}×{args.input_size}, onnxruntime FP32 engine (batch profile 1:16:32), "
        f"{'onnxruntime default' if not args.threads else args.threads} intra-op threads"
        f"{' (not spinning between calls)' if args.no_spin else ''}, one instance, the same session options on both servers",
        f"- load: closed loop, {args.duration:g} s measured per point after a warm-up, 1 row per request, "
        "binary tensors (HTTP binary extension / gRPC raw contents), client `kiln.serve.loadgen` on the same machine",
        "- load average (1, 5, 15 min) at start: " + ", ".join(f"{v:.2f}" for v in results["load_average"]["start"])
        + "; at end: " + ", ".join(f"{v:.2f}" for v in results["load_average"]["end"]),
    ]
    if args.note:
        lines.append(f"- note: {args.note}")
    lines += [
        "",
        "## 1. Dynamic batching on vs off (gRPC, concurrency 32)",
        "",
        "| configuration | throughput (req/s) | p50 (ms) | p99 (ms) | errors |",
        "|---|---:|---:|---:|---:|",
        f"| unloaded, concurrency 1 (batching on) | {unloaded['throughput_rps']:.1f} | {unloaded['latency_ms']['p50']:.2f} | {unloaded['latency_ms']['p99']:.2f} | {unloaded['errors']} |",
        f"| batching off (`dynamic_batching: false`) | {off['throughput_rps']:.1f} | {off['latency_ms']['p50']:.2f} | {off['latency_ms']['p99']:.2f} | {off['errors']} |",
        f"| batching on (max 32, delay {args.delay_us} µs) | {on['throughput_rps']:.1f} | {on['latency_ms']['p50']:.2f} | {on['latency_ms']['p99']:.2f} | {on['errors']} |",
        "",
        f"Throughput ratio on/off: **{ratio:.2f}×** (target ≥ 4×). p99 with batching {on['latency_ms']['p99']:.2f} ms vs "
        f"2 × unloaded p50 = {p99_bound:.2f} ms (target: p99 ≤ that bound): "
        f"**{'met' if on['latency_ms']['p99'] <= p99_bound else 'not met'}**.",
        "",
        "## 2. kiln vs NVIDIA Triton (PyTriton), same engine, same batching settings",
        "",
        f"Both servers run side by side; each point runs kiln and Triton back to back (order alternating, "
        f"{args.rounds} round(s) per point, the median round reported), so load from elsewhere hits both alike.",
        "",
    ]
    if triton_note:
        lines += [triton_note, ""]
    lines += [
        "| protocol | concurrency | kiln req/s | kiln p99 (ms) | Triton req/s | Triton p99 (ms) | kiln/Triton throughput | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, k in results["kiln"].items():
        protocol, c = key.split("/")
        t = results["triton"].get(key)
        if t:
            share = k["throughput_rps"] / t["throughput_rps"] if t["throughput_rps"] else float("nan")
            lines.append(f"| {protocol} | {c} | {k['throughput_rps']:.1f} | {k['latency_ms']['p99']:.2f} | {t['throughput_rps']:.1f} | "
                         f"{t['latency_ms']['p99']:.2f} | {share:.2f}× | {k['load_average_1m']:.1f} |")
        else:
            lines.append(f"| {protocol} | {c} | {k['throughput_rps']:.1f} | {k['latency_ms']['p99']:.2f} | – | – | – | {k['load_average_1m']:.1f} |")
    lines += [
        "",
        f"Raw figures: `{args.out.with_suffix('.json').name}` next to this page (written by the same run).",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    main()
