"""What the engine host's link costs per call (``kiln serve --shared-engines``), on this machine.

One served model (ONNX: uint8 images [-1,3,224,224] → their mean per image, so the engine's own work
is small), called with batches of 8 images (1.2 MB) through (a) its batcher in this process and (b) a
``RemoteRunner`` to an engine host in another process, which runs the same batcher there. The
difference per call is the link: writing the batch into shared memory, two frames over a Unix socket,
the host's hand-off to its event loop and back. Closed loop, one call at a time.

    python benchmarks/engine_link.py [--calls 2000] [--rows 8] [--out docs/benchmarks/engine_link.md]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def _model(root: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.UINT8, ["batch", 3, 224, 224])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["f"], ["y"], axes=[1, 2, 3], keepdims=0)]
    graph = helper.make_graph(nodes, "mean", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = root / "mean.onnx"
    onnx.save(model, str(path))
    return path


def _engine(root: Path) -> Path:
    from kiln.engine.artifact import EngineCache
    from kiln.engine.build import BuildSettings, build_engine
    from kiln.engine.spec import BatchProfile, ModelSource

    settings = BuildSettings(source=ModelSource.parse(str(_model(root))), batch=BatchProfile(min=1, opt=8, max=64), name="mean")
    return build_engine(settings, cache=EngineCache(root / "cache"), output=root / "repo" / "mean" / "1").path


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(pick(0.5) * 1e3, 3), "p99_ms": round(pick(0.99) * 1e3, 3), "mean_ms": round(statistics.fmean(ordered) * 1e3, 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="markdown report (default: print only)")
    args = parser.parse_args()

    from kiln.serve.engine_host import host_main
    from kiln.serve.model import ServedModel
    from kiln.serve.model_config import ModelConfig
    from kiln.serve.remote_runner import RemoteRunner

    root = Path(tempfile.mkdtemp(prefix="kiln-engine-link-"))
    engine = _engine(root)
    (root / "repo" / "mean" / "config.json").write_text(json.dumps({"max_queue_delay_us": 0, "engine_options": {"threads": 1}}))
    config = ModelConfig.read(root / "repo" / "mean")
    batch = {"x": np.random.default_rng(0).integers(0, 255, (args.rows, 3, 224, 224), dtype=np.uint8)}

    async def local() -> list[float]:
        served = ServedModel("mean", "1", engine, config)
        served.start(await asyncio.to_thread(served.load), None)
        times = []
        for i in range(args.calls + 50):
            start = time.perf_counter()
            await served.infer(batch)
            if i >= 50:
                times.append(time.perf_counter() - start)
        await served.close()
        return times

    local_times = asyncio.run(local())

    context = multiprocessing.get_context("spawn")
    address = str(root / "engines.sock")
    receiver, sender = context.Pipe(duplex=False)
    host = context.Process(target=host_main, args=(address, sender, "warning"))
    host.start()
    assert receiver.poll(60), "the engine host did not start"
    runner = RemoteRunner(address, "mean", "1", engine, config)
    remote_times = []
    for i in range(args.calls + 50):
        start = time.perf_counter()
        runner.infer(batch)
        if i >= 50:
            remote_times.append(time.perf_counter() - start)
    expected = batch["x"].reshape(args.rows, -1).mean(axis=1)
    assert np.allclose(runner.infer(batch)["y"], expected, rtol=1e-4)
    runner.close()
    host.terminate()
    host.join(10)

    loc, rem = _percentiles(local_times), _percentiles(remote_times)
    link = {k: round(rem[k] - loc[k], 3) for k in loc}
    rows = [("in-process batcher (baseline)", loc), ("through the engine host", rem), ("difference: the link", link)]
    table = "\n".join(f"| {name} | {v['p50_ms']} | {v['p99_ms']} | {v['mean_ms']} |" for name, v in rows)
    megabytes = batch["x"].nbytes / 1e6
    report = f"""# The engine host's link: cost per call

Command: `python benchmarks/engine_link.py --calls {args.calls} --rows {args.rows}` · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC ·
{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the end.

One call = a batch of {args.rows} uint8 images of 3×224×224 ({megabytes:.2f} MB) to an ONNX model that returns each
image's mean (onnxruntime, one thread), one call at a time, {args.calls} calls after 50 warm-up calls.

| path | p50 ms | p99 ms | mean ms |
|---|---:|---:|---:|
{table}

Ratio (engine host ÷ in-process, p50): {rem['p50_ms'] / loc['p50_ms']:.2f}×. The link adds the copy into shared memory,
two frames over a Unix socket and the host's hand-off to its event loop; what it buys on a GPU is one CUDA context
and one batcher for all workers (docs/benchmarks/gpu.md).
"""
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
