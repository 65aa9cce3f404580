"""Offline throughput on a GPU, MLPerf style (issue 9, acceptance 1): all data in host memory,
decode excluded, as many images per second as the engine sustains.

The data set is preprocessed uint8 pixels in page-locked host memory. N engine instances (each
with its own CUDA stream and CUDA graphs) run on N threads; each copies its next batch to the GPU
inside its graph's input buffer and replays the graph, so copies of one instance overlap compute of
another. GPU utilization is sampled through NVML while it runs.

    python benchmarks/gpu_offline.py --model resnet50 --batch 256 --instances 1,2,3 --seconds 10 --out r.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _utilization_sampler(stop: threading.Event, samples: list[float]) -> None:
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    except Exception:  # no NVML: utilization is reported as unknown
        return
    while not stop.wait(0.2):
        samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)


def run_offline(engine_dir: Path, batch: int, instances: int, seconds: float, dataset_batches: int) -> dict[str, Any]:
    import torch

    from kiln.engine.loader import load_engine

    runners = [load_engine(engine_dir) for _ in range(instances)]
    manifest = runners[0].manifest
    _, h, w = manifest.preprocessing.input_size
    generator = torch.Generator().manual_seed(0)
    data = [
        torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, generator=generator).pin_memory()
        for _ in range(dataset_batches)
    ]
    counter = [0]
    lock = threading.Lock()
    stop = threading.Event()

    def worker(runner: Any, offset: int) -> None:
        index = offset
        while not stop.is_set():
            runner.infer_tensors({"input": data[index % len(data)]})
            runner.stream.synchronize()
            index += instances
            with lock:
                counter[0] += batch

    for runner in runners:  # warm: first replay after capture
        runner.infer_tensors({"input": data[0]})
        runner.stream.synchronize()
    samples: list[float] = []
    sampler_stop = threading.Event()
    sampler = threading.Thread(target=_utilization_sampler, args=(sampler_stop, samples), daemon=True)
    threads = [threading.Thread(target=worker, args=(r, i), daemon=True) for i, r in enumerate(runners)]
    sampler.start()
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    sampler_stop.set()
    sampler.join()
    for runner in runners:
        runner.deactivate()
    return {
        "batch": batch,
        "instances": instances,
        "images": counter[0],
        "seconds": round(elapsed, 3),
        "images_per_s": round(counter[0] / elapsed, 1),
        "gpu_utilization_mean": round(sum(samples) / len(samples), 3) if samples else None,
    }


def _resident_runner(engine_dir: Path, batch: int) -> tuple[Any, Any]:
    """A loaded engine, warmed on one batch of random pixels that already lie on the GPU, and that batch."""
    import torch

    from kiln.engine.loader import load_engine

    runner = load_engine(engine_dir)
    _, h, w = runner.manifest.preprocessing.input_size
    x = torch.randint(0, 256, (batch, h, w, 3), dtype=torch.uint8, device="cuda")
    for _ in range(3):
        runner.infer_tensors({"input": x})
    runner.stream.synchronize()
    return runner, x


def device_resident(engine_dir: Path, batch: int, seconds: float) -> dict[str, Any]:
    """The ceiling: inputs already on the GPU, one instance, back-to-back replays."""
    runner, x = _resident_runner(engine_dir, batch)
    count = 0
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            runner.infer_tensors({"input": x})  # type: ignore[attr-defined]
        runner.stream.synchronize()  # type: ignore[attr-defined]
        count += 10 * batch
    elapsed = time.perf_counter() - started
    runner.deactivate()
    return {"batch": batch, "images_per_s": round(count / elapsed, 1), "seconds": round(elapsed, 3)}


def kernel_table(engine_dir: Path, batch: int, replays: int, top: int) -> dict[str, Any]:
    """Where a replay's GPU time goes: the ``top`` kernels by total CUDA time over ``replays`` replays."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    runner, x = _resident_runner(engine_dir, batch)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(replays):
            runner.infer_tensors({"input": x})  # type: ignore[attr-defined]
        runner.stream.synchronize()  # type: ignore[attr-defined]
    runner.deactivate()
    rows = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA and e.device_time_total > 0]
    total = sum(e.device_time_total for e in rows) or 1.0
    rows.sort(key=lambda e: e.device_time_total, reverse=True)
    return {
        "batch": batch,
        "replays": replays,
        "gpu_ms_per_replay": round(total / 1000.0 / replays, 3),
        # inductor's own pointwise kernels: the bias/ReLU/residual passes that the convolutions do not fuse
        "pointwise_share": round(sum(e.device_time_total for e in rows if e.key.startswith("triton_poi")) / total, 4),
        "kernels": [
            {"name": e.key[:160], "calls_per_replay": e.count / replays, "ms_per_replay": round(e.device_time_total / 1000.0 / replays, 4),
             "share": round(e.device_time_total / total, 4)}
            for e in rows[:top]
        ],
    }


def agreement(engine_dir: Path, images: int = 8) -> dict[str, Any]:
    """The engine's logits against the FP32 source model (kiln's accuracy-gate reference) on random pixels."""
    import numpy as np

    from kiln.engine.loader import load_engine
    from kiln.engine.reference import reference_for
    from kiln.engine.validate import cosine_rows

    with load_engine(engine_dir) as runner:
        _, h, w = runner.manifest.preprocessing.input_size
        x = np.random.default_rng(1).integers(0, 256, (images, h, w, 3), dtype=np.uint8)
        got = next(iter(runner.infer({"input": x}).values())).astype(np.float64)
        want = next(iter(reference_for(engine_dir, runner.manifest)({"input": x}).values())).astype(np.float64)
    cosine = cosine_rows(got, want)
    return {"images": images, "min_cosine": round(float(cosine.min()), 5),
            "top1_agreement": float((got.argmax(1) == want.argmax(1)).mean())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--compile", default="max-autotune")
    parser.add_argument("--freezing", action="store_true")
    parser.add_argument("--inductor", default="{}", help='JSON of torch._inductor.config overrides, e.g. {"conv_1x1_as_mm": true}')
    parser.add_argument("--batch", default="256")
    parser.add_argument("--instances", default="1,2,3")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--fuse-conv", action="store_true", help="conv + bn + residual + ReLU as cuDNN fused convolutions")
    parser.add_argument("--cudnn-benchmark-limit", type=int, default=None,
                        help="cuDNN plans timed per convolution shape when the engine loads (0: all; torch's default: 10)")
    parser.add_argument("--kernels", type=int, default=0, help="also profile device-resident replays: the top N kernels")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from kiln.engine.artifact import EngineCache
    from kiln.engine.build import BuildSettings, build_engine
    from kiln.engine.hardware import fingerprint
    from kiln.engine.spec import BatchProfile, ModelSource, Precision

    work = Path(tempfile.mkdtemp(prefix="kiln-offline-"))
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": {k: str(v) for k, v in vars(args).items()},
        "hardware": fingerprint(),
        "runs": [],
        "device_resident": [],
        "builds": [],
        "kernels": [],
        "agreement": [],
    }
    for batch in [int(b) for b in args.batch.split(",")]:
        started = time.perf_counter()
        outcome = build_engine(
            BuildSettings(
                source=ModelSource.parse(f"timm:{args.model}"),
                backend="torch",
                precision=Precision(args.precision),
                batch=BatchProfile(min=1, opt=batch, max=batch, buckets=(batch,)),
                device="cuda",
                options={
                    "compile": args.compile, "input_format": "uint8", "freezing": args.freezing,
                    "inductor": json.loads(args.inductor), "fuse_conv": args.fuse_conv,
                    **({"cudnn_benchmark_limit": args.cudnn_benchmark_limit} if args.cudnn_benchmark_limit is not None else {}),
                },
            ),
            cache=EngineCache(work / "cache"),
            output=work / f"engine-{batch}",
        )
        build_s = round(time.perf_counter() - started, 1)
        result["builds"].append({"batch": batch, "seconds": build_s})
        print(f"engine b{batch} built in {build_s}s", flush=True)
        check = agreement(outcome.path)
        result["agreement"].append({"batch": batch, **check})
        print(f"  vs FP32 eager: min cosine {check['min_cosine']}, top-1 agreement {check['top1_agreement']:.2f}", flush=True)
        resident = device_resident(outcome.path, batch, args.seconds / 2)
        result["device_resident"].append(resident)
        print(f"device-resident b{batch}: {resident['images_per_s']:.0f} img/s", flush=True)
        if args.kernels:
            table = kernel_table(outcome.path, batch, replays=5, top=args.kernels)
            result["kernels"].append(table)
            print(f"  GPU {table['gpu_ms_per_replay']} ms per replay, {table['pointwise_share']:.1%} in inductor pointwise kernels; top:", flush=True)
            for k in table["kernels"]:
                print(f"    {k['share']:6.1%} {k['ms_per_replay']:8.3f} ms x{k['calls_per_replay']:.0f} {k['name'][:90]}", flush=True)
        for instances in [int(i) for i in args.instances.split(",")]:
            run = run_offline(outcome.path, batch, instances, args.seconds, dataset_batches=8)
            result["runs"].append(run)
            print(f"offline b{batch} x{instances}: {run['images_per_s']:.0f} img/s, GPU util {run['gpu_utilization_mean']}", flush=True)
            args.out.write_text(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
