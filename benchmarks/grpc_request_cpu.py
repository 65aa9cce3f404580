"""Server CPU per gRPC inference request, for the current tree and an earlier commit, in one run →
docs/benchmarks/grpc_cpu.md.

What it isolates: the work ``kiln serve`` does per ``ModelInfer`` request outside the engine
(grpc.aio, protobuf, tensor views, batcher hand-off, response). The engine is a trivial ONNX graph
(uint8 N×3×224×224 → the first 1000 values as fp16), so nearly all server CPU is the request path.
A closed loop of --concurrency clients sends --rows images per request (raw_input_contents, as
tritonclient does). CPU is read from /proc (user + system, whole process and the event-loop thread)
before and after each measured window; CPU per request is the figure that matters, because the
event-loop thread bounds how many requests one server process can take. The servers of the two
trees run one after the other, alternating for --rounds rounds (the median round is reported), from
``git worktree`` checkouts, so both use this machine's interpreter and packages.

    python benchmarks/grpc_request_cpu.py --baseline-ref 64c7603 [--duration 10] [--rounds 3]

A second table times only the request parse (protobuf plus reading the raw tensors) both ways.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serving import free_port, machine, stop, wait_ready  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def tiny_engine(work: Path) -> Path:
    """A model repository with one trivial engine ``tiny`` (max batch 64, 2 ms queue delay, 2 instances)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from kiln.engine.artifact import EngineCache
    from kiln.engine.build import BuildSettings, build_engine
    from kiln.engine.spec import BatchProfile, ModelSource

    x = helper.make_tensor_value_info("x", TensorProto.UINT8, ["batch", 3, 224, 224])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["batch", 1000])
    constants = [numpy_helper.from_array(np.array(v, np.int64), name)
                 for name, v in (("shape", [0, -1]), ("starts", [0]), ("ends", [1000]), ("axes", [1]))]
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
             helper.make_node("Slice", ["flat", "starts", "ends", "axes"], ["first"]),
             helper.make_node("Cast", ["first"], ["y"], to=TensorProto.FLOAT16)]
    model = helper.make_model(helper.make_graph(nodes, "tiny", [x], [y], initializer=constants),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(work / "tiny.onnx"))
    built = build_engine(BuildSettings(source=ModelSource.parse(str(work / "tiny.onnx")), batch=BatchProfile(min=1, opt=64, max=64),
                                       name="tiny"), cache=EngineCache(work / "cache"))
    repo = work / "repo"
    shutil.copytree(built.path, repo / "tiny" / "1")
    (repo / "tiny" / "config.json").write_text(json.dumps({"max_batch_size": 64, "max_queue_delay_us": 2000, "instances": 2}))
    return repo


def cpu_ticks(pid: int, thread: int | None = None) -> int:
    path = f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def load(url: str, concurrency: int, rows: int, seconds: float) -> dict[str, Any]:
    from kiln.serve import loadgen

    async def go() -> dict[str, Any]:
        metadata = await loadgen.fetch_metadata(url, "tiny", "grpc")
        inputs = loadgen.make_inputs(metadata, rows)
        target = loadgen.make_target(url, "tiny", "grpc", inputs, connections=concurrency)
        try:
            result = await loadgen.closed_loop(target, concurrency, seconds, batch=rows, protocol="grpc", warmup_s=0.0)
        finally:
            await target.close()
        return result.summary()

    return asyncio.run(go())


def measure(src: Path, repo: Path, args: argparse.Namespace) -> dict[str, Any]:
    http_port, grpc_port = free_port(), free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kiln", "serve", "--repo", str(repo), "--http-port", str(http_port), "--grpc-port", str(grpc_port),
         "--no-access-log", "--log-level", "warning"],
        env={**os.environ, "PYTHONPATH": str(src)},
    )
    try:
        wait_ready(f"http://127.0.0.1:{http_port}", server, model="tiny")
        url = f"127.0.0.1:{grpc_port}"
        load(url, args.concurrency, args.rows, 2.0)  # warm-up, not measured
        before, loop_before, started = cpu_ticks(server.pid), cpu_ticks(server.pid, server.pid), time.monotonic()
        summary = load(url, args.concurrency, args.rows, args.duration)
        cpu_s = (cpu_ticks(server.pid) - before) / TICK
        loop_s = (cpu_ticks(server.pid, server.pid) - loop_before) / TICK
        wall = time.monotonic() - started
    finally:
        stop(server)
    requests = max(summary["requests"], 1)
    return {
        "requests": summary["requests"], "errors": summary["errors"], "requests_per_s": summary["throughput_rps"],
        "images_per_s": summary["items_per_s"], "p50_ms": summary["latency_ms"]["p50"], "p99_ms": summary["latency_ms"]["p99"],
        "server_cpu_ms_per_request": round(1e3 * cpu_s / requests, 3), "event_loop_cpu_ms_per_request": round(1e3 * loop_s / requests, 3),
        "server_cores": round(cpu_s / wall, 2),
    }


def parse_timings(rows: int) -> dict[str, float]:
    """µs per request for the parse alone: protobuf with copies of the raw tensors vs the wire scanner."""
    import numpy as np

    from kiln.serve import loadgen
    from kiln.serve.oip_wire import parse_infer_request
    from kiln.serve.protos import grpc_service_pb2 as pb

    inputs = {"x": np.random.default_rng(0).integers(0, 255, (rows, 3, 224, 224), dtype=np.uint8)}
    data = loadgen.grpc_payload("tiny", inputs)

    def protobuf() -> None:
        message = pb.ModelInferRequest.FromString(data)
        for i in range(len(message.raw_input_contents)):
            np.frombuffer(message.raw_input_contents[i], np.uint8)

    def scanner() -> None:
        for raw in parse_infer_request(data).raw_input_contents:
            np.frombuffer(raw, np.uint8)

    best = {name: min(timeit.repeat(fn, number=50, repeat=7)) / 50 * 1e6 for name, fn in (("protobuf", protobuf), ("scanner", scanner))}
    return {"request_bytes": len(data), **{f"{k}_us": round(v, 1) for k, v in best.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline-ref", required=True, help="the earlier commit to compare with (e.g. main before a change)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per server and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rows", type=int, default=8, help="images per request")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "grpc_cpu.md")
    parser.add_argument("--note", default="", help="a line for the page (e.g. about other load on the machine)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kiln-grpc-cpu-"))
    baseline = work / "baseline"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(baseline), args.baseline_ref], check=True)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True).stdout.strip())
    current_label = f"{head}{' + uncommitted changes' if dirty else ''}"
    try:
        repo = tiny_engine(work)
        trees = {f"baseline {args.baseline_ref}": baseline / "src", f"current {current_label}": ROOT / "src"}
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        load_before = os.getloadavg()
        for round_ in range(args.rounds):
            order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
            for name in order:
                result = measure(trees[name], repo, args)
                runs[name].append(result)
                print(f"round {round_ + 1} {name}: {result}", flush=True)
        parse = parse_timings(args.rows)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline)], check=False)
        shutil.rmtree(work, ignore_errors=True)

    def median(name: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs[name]))

    base_name, current_name = list(trees)
    command = "python benchmarks/grpc_request_cpu.py " + " ".join(sys.argv[1:])
    lines = [
        "# Server CPU per gRPC inference request",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}; load average before the run {load_before[0]:.2f}",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- load: {args.concurrency} clients in a closed loop (kiln's load generator, in the benchmark's process), {args.rows} images "
        f"of 3×224×224 uint8 per request ({parse['request_bytes']:,} bytes), {args.duration:g} s per window, {args.rounds} rounds "
        "alternating the two servers; a trivial ONNX engine (2 instances, max batch 64, 2 ms queue delay)",
        "- CPU from /proc (user + system): the whole server process, and its event-loop thread alone",
    ]
    if args.note:
        lines.append(f"- note: {args.note}")
    lines += [
        "",
        "| server | requests/s | images/s | p50 ms | p99 ms | server CPU ms / request | event-loop CPU ms / request | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in trees:
        lines.append(f"| {name} | {median(name, 'requests_per_s'):,.1f} | {median(name, 'images_per_s'):,.0f} | {median(name, 'p50_ms'):.2f} | "
                     f"{median(name, 'p99_ms'):.2f} | {median(name, 'server_cpu_ms_per_request'):.3f} | "
                     f"{median(name, 'event_loop_cpu_ms_per_request'):.3f} | {sum(r['errors'] for r in runs[name])} |")
    ratio_loop = median(base_name, "event_loop_cpu_ms_per_request") / max(median(current_name, "event_loop_cpu_ms_per_request"), 1e-9)
    ratio_cpu = median(base_name, "server_cpu_ms_per_request") / max(median(current_name, "server_cpu_ms_per_request"), 1e-9)
    lines += [
        "",
        f"Baseline / current (medians of {args.rounds} rounds): event-loop CPU per request **{ratio_loop:.2f}×**, server CPU per "
        f"request {ratio_cpu:.2f}×. The event loop's CPU per request bounds one process at about "
        f"{1e3 / max(median(current_name, 'event_loop_cpu_ms_per_request'), 1e-9):,.0f} requests/s "
        f"(baseline {1e3 / max(median(base_name, 'event_loop_cpu_ms_per_request'), 1e-9):,.0f}).",
        "",
        f"The parse alone, {parse['request_bytes']:,} bytes, best of 7 × 50 (µs per request): protobuf with its copies of the raw "
        f"tensors {parse['protobuf_us']:,.1f}; kiln's wire scanner (views into the received bytes) {parse['scanner_us']:,.1f} "
        f"({parse['protobuf_us'] / max(parse['scanner_us'], 1e-9):.1f}× less).",
        "",
        "Per round:",
        "",
        "```json",
        json.dumps(runs, indent=1),
        "```",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
