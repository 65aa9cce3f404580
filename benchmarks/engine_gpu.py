"""GPU engine benchmark (issue 2, acceptance 2): eager FP32 vs kiln's torch engine, one run.

For each model: build the torch engine (fp16/bf16, channels-last, torch.compile with CUDA graphs,
uint8 input with normalisation fused in), record the cold compile time, measure a warm start in a
fresh process (compile cache carried by the artifact, empty inductor cache), then time eager FP32
and the engine with kiln's own profiler at each batch size, data on the host (copies included).

    python benchmarks/engine_gpu.py --models resnet50 --batches 1,8,64,256 --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

WARM_START = """
import sys, time, json
t0 = time.perf_counter()
from kiln.engine.loader import load_engine
runner = load_engine(sys.argv[1])
print(json.dumps({"start_seconds": time.perf_counter() - t0, "load_seconds": runner.load_seconds,
                  "warmup_seconds": runner.warmup_seconds}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet50,convnext_tiny,vit_base_patch16_224")
    parser.add_argument("--batches", default="1,8,64,256")
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--compile", default="max-autotune")
    parser.add_argument("--input-format", default="uint8")
    parser.add_argument("--freezing", action="store_true")
    parser.add_argument("--fuse-conv", default="", help="comma list of models built with --fuse-conv (ResNets), e.g. resnet50")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--max-seconds", type=float, default=8.0)
    parser.add_argument("--device", default="cuda", help="cpu only to check this script without a GPU")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    from kiln.engine.artifact import EngineCache
    from kiln.engine.build import BuildSettings, build_engine
    from kiln.engine.hardware import fingerprint
    from kiln.engine.loader import load_engine
    from kiln.engine.profile import profile_engine
    from kiln.engine.reference import reference_for
    from kiln.engine.spec import BatchProfile, ModelSource, Precision

    batches = [int(b) for b in args.batches.split(",")]
    results: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "hardware": fingerprint(),
        "settings": vars(args) | {"out": str(args.out)},
        "models": {},
    }
    work = Path(tempfile.mkdtemp(prefix="kiln-gpu-"))
    for name in args.models.split(","):
        print(f"== {name}", flush=True)
        settings = BuildSettings(
            source=ModelSource.parse(f"timm:{name}"),
            backend="torch",
            precision=Precision(args.precision),
            batch=BatchProfile(min=1, opt=max(batches), max=max(batches), buckets=tuple(batches)),
            device=args.device,
            options={"compile": args.compile, "input_format": args.input_format, "freezing": args.freezing,
                     "fuse_conv": name in args.fuse_conv.split(",")},
        )
        started = time.perf_counter()
        outcome = build_engine(settings, cache=EngineCache(work / "cache"), output=work / name)
        build_seconds = time.perf_counter() - started
        entry: dict = {
            "build_seconds": round(build_seconds, 2),
            "cold_compile_seconds": outcome.manifest.build_options.get("compile_seconds"),
        }
        print(f"built in {build_seconds:.1f}s (compile {entry['cold_compile_seconds']}s)", flush=True)
        env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(work / f"fresh-inductor-{name}"))
        warm = subprocess.run(
            [sys.executable, "-c", WARM_START, str(work / name)], capture_output=True, text=True, env=env, timeout=600
        )
        if warm.returncode == 0:
            entry["warm_start"] = json.loads(warm.stdout.strip().splitlines()[-1])
            print(f"warm start {entry['warm_start']}", flush=True)
        else:
            entry["warm_start_error"] = warm.stderr[-2000:]
        runner = load_engine(work / name)
        baseline = reference_for(work / name, runner.manifest, args.device, native_inputs=True)
        report = profile_engine(
            runner, batches, iterations=args.iterations, warmup=10, max_seconds=args.max_seconds,
            baseline=baseline, baseline_label="PyTorch eager FP32",
        )
        runner.deactivate()
        entry["profile"] = report.model_dump()
        results["models"][name] = entry
        args.out.write_text(json.dumps(results, indent=2))
        for e, b in zip(report.results, report.baseline, strict=True):
            print(
                f"{name:24s} b{e.batch:<4d} eager {b.p50_ms:8.3f} ms {b.throughput:9.0f}/s | engine {e.p50_ms:8.3f} ms "
                f"{e.throughput:9.0f}/s | x{report.speedup[str(e.batch)]:.2f}",
                flush=True,
            )
        import torch

        torch._dynamo.reset()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
