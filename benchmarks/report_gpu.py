"""Render the GPU sections of docs/benchmarks/*.md from the JSON that the GPU scripts wrote.

The GPU scripts run on a lent GPU machine and write JSON; the files are kept under
docs/benchmarks/data/ so every figure in the markdown can be traced to a measured run.

    python benchmarks/report_gpu.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path("docs/benchmarks/data")


def _load(name: str) -> dict[str, Any] | None:
    path = DATA / name
    return json.loads(path.read_text()) if path.exists() else None


def _machine(d: dict[str, Any]) -> str:
    gpu = d["hardware"]["gpus"][0]
    rt = d["hardware"]["runtime"]
    return (
        f"{gpu['name']} (compute capability {gpu['compute_capability']}, driver {gpu['driver']}), "
        f"{d['hardware']['cpu']['cores']} CPU cores; torch {rt['torch']}, CUDA {rt['cuda']}, cuDNN {rt['cudnn']}, timm {rt['timm']}"
    )


def replace_section(path: Path, heading: str, section: str) -> None:
    text = path.read_text() if path.exists() else f"# {path.stem} benchmarks\n\n"
    start = text.find(heading)
    if start < 0:
        text = text.rstrip() + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1 :] if end >= 0 else "")
    path.write_text(text.rstrip() + "\n")


def engine_gpu_section() -> str | None:
    files = ["gpu_engine_resnet50.json", "gpu_engine_convnext_vit.json"]
    runs = [d for f in files if (d := _load(f))]
    if not runs:
        return None
    lines = [
        "## GPU: PyTorch eager FP32 vs kiln torch engine (acceptance 2)",
        "",
        f"- machine: {_machine(runs[0])}",
        "- engine: `--backend torch --precision fp16 --input-format uint8`, torch.compile (inductor, no CUDA-graph",
        "  trees) wrapped in kiln's own CUDA graph per batch bucket (1, 8, 64, 256), channels-last, cudnn.benchmark.",
        "- timing: kiln's profiler, host numpy in and out (copies included), p50 of up to 100 iterations; eager FP32",
        "  gets normalised float input from the host as a user would feed it; same process, same run.",
        "",
        "| model | batch | eager FP32 p50 ms | engine p50 ms | eager img/s | engine img/s | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    starts = ["", "| model | cold compile s (first build) | warm start s (fresh process, compile cache from the artifact) |", "|---|---:|---:|"]
    commands = []
    for d in runs:
        commands.append(f"`python {d['command']}` ({d['date']})")
        for name, m in d["models"].items():
            p = m["profile"]
            for e, b in zip(p["results"], p["baseline"], strict=True):
                lines.append(
                    f"| {name} | {e['batch']} | {b['p50_ms']:.3f} | {e['p50_ms']:.3f} | {b['throughput']:,.0f} | "
                    f"{e['throughput']:,.0f} | {p['speedup'][str(e['batch'])]:.2f}× |"
                )
            warm = m.get("warm_start", {}).get("start_seconds")
            starts.append(f"| {name} | {m['cold_compile_seconds']} | {warm:.1f} |" if warm else f"| {name} | {m['cold_compile_seconds']} | - |")
    return "\n".join([*lines[:3], *[f"- command: {c}" for c in commands], *lines[3:], *starts, ""])


def offline_section() -> str | None:
    files = [
        ("gpu_offline_b256.json", "fp16, batch 256"),
        ("gpu_offline_b256_frozen.json", "fp16, batch 256, freezing"),
        ("gpu_offline_b256_frozen_1x1mm.json", "fp16, batch 256, freezing, 1×1 conv as matmul"),
        ("gpu_offline_b512_frozen.json", "fp16, batch 512, freezing"),
    ]
    rows = []
    first = None
    for name, label in files:
        d = _load(name)
        if d is None:
            continue
        first = first or d
        resident = d["device_resident"][0]["images_per_s"]
        for run in d["runs"]:
            util = run["gpu_utilization_mean"]
            rows.append(
                f"| {label} | {run['instances']} | {resident:,.0f} | {run['images_per_s']:,.0f} | "
                f"{util * 100:.1f}% |" if util is not None else f"| {label} | {run['instances']} | {resident:,.0f} | {run['images_per_s']:,.0f} | - |"
            )
    if first is None:
        return None
    return "\n".join([
        "## GPU offline throughput, resnet50 (MLPerf-style; issue 9 acceptance 1)",
        "",
        f"- machine: {_machine(first)}; date {first['date']}",
        "- command: `python benchmarks/gpu_offline.py --model resnet50 --compile reduce-overhead [--freezing] "
        "[--inductor '{\"conv_1x1_as_mm\": true}'] --batch B --instances N --seconds 6 --out F`",
        "- data: preprocessed uint8 224×224 images in page-locked host memory (decode excluded); N engine instances",
        "  on N threads, each with its own stream and CUDA graph, copy their next batch in and replay; GPU",
        "  utilization sampled from NVML every 0.2 s. Device-resident: inputs already on the GPU (the ceiling).",
        "",
        "| engine | instances | device-resident img/s | offline img/s | GPU utilization |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
    ])


def main() -> None:
    if section := engine_gpu_section():
        replace_section(Path("docs/benchmarks/engine.md"), "## GPU: PyTorch eager FP32 vs kiln torch engine", section)
    if section := offline_section():
        replace_section(Path("docs/benchmarks/gpu.md"), "## GPU offline throughput, resnet50", section)


if __name__ == "__main__":
    main()
