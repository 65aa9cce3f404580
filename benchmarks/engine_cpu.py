"""CPU engine benchmark (issue 2, acceptance 1): PyTorch eager FP32 vs onnxruntime FP32 vs INT8.

All in one run, on this machine, with kiln's own build and profiler: for each model, build the
onnxruntime FP32 and INT8 (QDQ, per-channel, calibrated) engines, then time eager FP32 (the source
model), FP32 and INT8 at each batch size. Writes JSON and the markdown table.

    python benchmarks/engine_cpu.py --models resnet18,resnet50,convnext_tiny,vit_small_patch16_224 \
        --batches 1,8 --calib DIR --md docs/benchmarks/engine.md
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _make_calibration(folder: Path, count: int = 64) -> Path:
    """Photo-like calibration images (smooth gradients, shapes, texture), made offline."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        base = np.linspace(rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), 256)[:, None, :].repeat(256, axis=1)
        image = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(6):
            x, y = rng.integers(0, 200, 2)
            w, h = rng.integers(20, 120, 2)
            colour = tuple(int(c) for c in rng.integers(0, 255, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((int(x), int(y), int(x + w), int(y + h)), fill=colour)
        image.filter(ImageFilter.GaussianBlur(1.2)).save(folder / f"calib_{i:03d}.jpg", quality=90)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,resnet50,convnext_tiny,vit_small_patch16_224")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--calib", type=Path, help="calibration images (default: made offline)")
    parser.add_argument("--calib-method", default="percentile")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks/engine_cpu.json"))
    parser.add_argument("--md", type=Path, default=Path("docs/benchmarks/engine.md"))
    args = parser.parse_args()

    import torch

    from kiln.engine.artifact import EngineCache
    from kiln.engine.build import BuildSettings, build_engine
    from kiln.engine.hardware import fingerprint
    from kiln.engine.loader import load_engine
    from kiln.engine.profile import profile_engine
    from kiln.engine.reference import reference_for
    from kiln.engine.spec import BatchProfile, CalibrationMethod, ModelSource, Precision

    batches = [int(b) for b in args.batches.split(",")]
    work = Path(tempfile.mkdtemp(prefix="kiln-cpu-bench-"))
    calib = args.calib or _make_calibration(work / "calib")
    cache = EngineCache(work / "cache")
    hw = fingerprint()
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        engines = {}
        for precision in (Precision.FP32, Precision.INT8):
            outcome = build_engine(
                BuildSettings(
                    source=ModelSource.parse(f"timm:{name}"),
                    precision=precision,
                    batch=BatchProfile(min=1, opt=max(batches), max=max(batches)),
                    calibration_dir=calib if precision is Precision.INT8 else None,
                    calibration_method=CalibrationMethod(args.calib_method),
                    calibration_limit=64,
                ),
                cache=cache,
                output=work / f"{name}-{precision.value}",
            )
            engines[precision] = outcome.path
        timings: dict[str, Any] = {}
        for precision, path in engines.items():
            runner = load_engine(path)
            baseline = reference_for(path, runner.manifest, native_inputs=True) if precision is Precision.FP32 else None
            report = profile_engine(
                runner, batches, iterations=args.iterations, warmup=3, max_seconds=args.max_seconds,
                baseline=baseline, baseline_label="PyTorch eager FP32",
            )
            runner.deactivate()
            timings[precision.value] = report.results
            if baseline is not None:
                timings["eager"] = report.baseline
        for i, batch in enumerate(batches):
            eager, fp32, int8 = timings["eager"][i], timings["fp32"][i], timings["int8"][i]
            rows.append({
                "model": name, "batch": batch,
                "eager_p50_ms": eager.p50_ms, "ort_fp32_p50_ms": fp32.p50_ms, "ort_int8_p50_ms": int8.p50_ms,
                "eager_per_s": eager.throughput, "ort_fp32_per_s": fp32.throughput, "ort_int8_per_s": int8.throughput,
                "fp32_speedup": round(eager.p50_ms / fp32.p50_ms, 2), "int8_speedup": round(eager.p50_ms / int8.p50_ms, 2),
            })
            print(json.dumps(rows[-1]), flush=True)
        torch.cuda.empty_cache() if torch.cuda.is_available() else None

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join(sys.argv),
        "machine": {"cpu": hw["cpu"]["model"], "cores": hw["cpu"]["cores"], "isa": hw["cpu"]["isa"], "os": platform.platform()},
        "runtime": {k: hw["runtime"][k] for k in ("torch", "onnxruntime", "timm")},
        "torch_threads": torch.get_num_threads(),
        "rows": rows,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| model | batch | eager FP32 p50 ms | ORT FP32 p50 ms | ORT INT8 p50 ms | FP32 × | INT8 × | INT8 img/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['eager_p50_ms']:.2f} | {r['ort_fp32_p50_ms']:.2f} | {r['ort_int8_p50_ms']:.2f} "
            f"| {r['fp32_speedup']:.2f} | {r['int8_speedup']:.2f} | {r['ort_int8_per_s']:.1f} |"
        )
    section = "\n".join([
        "## CPU: eager FP32 vs onnxruntime FP32 vs INT8 (acceptance 1)",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, ISA {' '.join(result['machine']['isa'])}",
        f"- runtimes: torch {result['runtime']['torch']} ({result['torch_threads']} threads), onnxruntime {result['runtime']['onnxruntime']}, timm {result['runtime']['timm']}",
        f"- date: {result['date']}",
        "- × is eager FP32 p50 / engine p50 in the same run; INT8 is static QDQ, per-channel weights,"
        f" {args.calib_method} calibration on 64 images; inputs are random tensors, copies included.",
        "",
        *lines,
        "",
    ])
    _replace_section(args.md, "## CPU: eager FP32 vs onnxruntime FP32 vs INT8", section)
    print(section)


def _replace_section(path: Path, heading: str, section: str) -> None:
    """Rewrite one '## ' section of a markdown file, keeping the others."""
    text = path.read_text() if path.exists() else "# Engine benchmarks\n\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


if __name__ == "__main__":
    main()
