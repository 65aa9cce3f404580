"""``kiln profile``: latency percentiles, throughput and memory per batch size, with an eager baseline."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from pydantic import BaseModel

from kiln.engine.backends.base import Runner
from kiln.engine.inputs import InputSpec, example_arrays, image_input
from kiln.engine.manifest import EngineManifest
from kiln.engine.reference import ReferenceFn
from kiln.progress import NullReporter, Reporter


class BatchTiming(BaseModel):
    batch: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float  # items per second
    iterations: int
    peak_memory_mb: float | None = None


class ProfileReport(BaseModel):
    engine: str
    backend: str
    precision: str
    device: str
    load_seconds: float
    warmup_seconds: float
    results: list[BatchTiming]
    baseline: list[BatchTiming] = []
    baseline_label: str | None = None
    speedup: dict[str, float] = {}


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def _gpu_peak_mb(reset: bool = False) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats()
        return None
    return torch.cuda.max_memory_allocated() / 2**20


def time_batches(
    fn: Callable[[dict[str, np.ndarray]], Any],
    make_inputs: Callable[[int, int], dict[str, np.ndarray]],
    batches: list[int],
    *,
    iterations: int,
    warmup: int,
    max_seconds: float,
    device: str,
    reporter: Reporter,
    label: str,
) -> list[BatchTiming]:
    results = []
    for batch in batches:
        # several input sets, rotated, so caches do not hold one input across iterations
        inputs = [make_inputs(batch, seed) for seed in range(3)]
        for i in range(warmup):
            fn(inputs[i % 3])
        if device == "cuda":
            _gpu_peak_mb(reset=True)
        latencies: list[float] = []
        started = time.perf_counter()
        with reporter.task(f"{label} batch {batch}", total=iterations) as task:
            for i in range(iterations):
                t0 = time.perf_counter()
                fn(inputs[i % 3])
                latencies.append((time.perf_counter() - t0) * 1e3)
                task.advance()
                if time.perf_counter() - started > max_seconds and len(latencies) >= 5:
                    break
        lat = np.asarray(latencies)
        results.append(BatchTiming(
            batch=batch,
            p50_ms=round(float(np.percentile(lat, 50)), 4),
            p95_ms=round(float(np.percentile(lat, 95)), 4),
            p99_ms=round(float(np.percentile(lat, 99)), 4),
            mean_ms=round(float(lat.mean()), 4),
            throughput=round(batch * len(lat) / (lat.sum() / 1e3), 2),
            iterations=len(lat),
            peak_memory_mb=round(_gpu_peak_mb() or _peak_rss_mb(), 1),
        ))
    return results


def example_maker(manifest: EngineManifest, native: bool = False) -> Callable[[int, int], dict[str, np.ndarray]]:
    """Random inputs shaped like the engine's, from the input description stored at build.

    ``native``: float NCHW inputs of the source model even where the engine takes uint8 pixels."""
    dims = manifest.build_options.get("input_dims")
    if native and manifest.preprocessing.input_format == "uint8":
        _, height, width = manifest.preprocessing.input_size
        specs = [image_input(manifest.inputs[0].name, height, width, dynamic_hw=False)]
    elif dims:
        specs = [InputSpec.model_validate(d) for d in dims]
    else:
        _, height, width = manifest.preprocessing.input_size
        specs = [image_input(manifest.inputs[0].name, height, width, dynamic_hw=False,
                             input_format=manifest.preprocessing.input_format)]
    sizes = dict(manifest.build_options.get("example_sizes", {}))
    _, sizes["height"], sizes["width"] = manifest.preprocessing.input_size
    return lambda batch, seed: example_arrays(specs, sizes, batch, seed)


def profile_engine(
    runner: Runner,
    batches: list[int],
    *,
    iterations: int = 50,
    warmup: int = 5,
    max_seconds: float = 30.0,
    load_seconds: float = 0.0,
    baseline: ReferenceFn | None = None,
    baseline_label: str | None = None,
    reporter: Reporter | None = None,
) -> ProfileReport:
    reporter = reporter or NullReporter()
    manifest = runner.manifest
    make_inputs = example_maker(manifest)
    usable = [b for b in batches if b <= runner.max_batch_size]
    results = time_batches(
        lambda x: runner.infer(x, check=False), make_inputs, usable,
        iterations=iterations, warmup=warmup, max_seconds=max_seconds, device=manifest.device,
        reporter=reporter, label="engine",
    )
    report = ProfileReport(
        engine=manifest.name,
        backend=manifest.backend,
        precision=manifest.precision.value,
        device=manifest.device,
        load_seconds=round(load_seconds, 3),
        warmup_seconds=round(float(getattr(runner, "warmup_seconds", 0.0)), 3),
        results=results,
    )
    if baseline is not None:
        report.baseline = time_batches(
            baseline, example_maker(manifest, native=True), usable, iterations=iterations, warmup=warmup, max_seconds=max_seconds,
            device=manifest.device, reporter=reporter, label="baseline",
        )
        report.baseline_label = baseline_label
        report.speedup = {
            str(e.batch): round(b.p50_ms / e.p50_ms, 3) for e, b in zip(report.results, report.baseline, strict=True)
        }
    return report
