"""Does fusing a convolution's bias/ReLU/residual epilogue pay, layer by layer, on a GPU? (issue 9 acceptance 1)

The profile of kiln's FP16 resnet50 engine (docs/benchmarks/gpu.md, 2026-12-07) shows ~45 % of the GPU time in
inductor's pointwise kernels: the library convolution writes its output, then a Triton kernel reads it back to
add the bias (and the residual) and apply ReLU. This script times resnet50's layer shapes three ways, FP16,
channels-last, at one batch size, in one run:

- ``unfused``: cuDNN convolution without bias, then one compiled pointwise kernel (what the engine runs today)
- ``fused``: cuDNN's fused convolution + bias (+ residual) + ReLU (``torch.cudnn_convolution_relu`` /
  ``torch.cudnn_convolution_add_relu``)
- ``conv only``: the convolution with its bias alone, the floor that a perfect epilogue fusion reaches

and checks that ``fused`` equals ``unfused``. It writes the table as JSON.

    python benchmarks/gpu_conv_epilogue.py --batch 1024 --out conv_epilogue.json
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# (name, in channels, out channels, kernel, stride, spatial size of the input, residual)
LAYERS = [
    ("stage1 1x1 expand + residual", 64, 256, 1, 1, 56, True),
    ("stage1 1x1 reduce", 256, 64, 1, 1, 56, False),
    ("stage1 3x3", 64, 64, 3, 1, 56, False),
    ("stage2 1x1 expand + residual", 128, 512, 1, 1, 28, True),
    ("stage2 3x3", 128, 128, 3, 1, 28, False),
    ("stage3 1x1 expand + residual", 256, 1024, 1, 1, 14, True),
    ("stage3 3x3", 256, 256, 3, 1, 14, False),
    ("stage4 1x1 expand + residual", 512, 2048, 1, 1, 7, True),
]


def _timed(fn: Any, iterations: int) -> float:
    """Median milliseconds of ``fn`` over ``iterations`` CUDA-event-timed calls, after warm-up."""
    import torch

    for _ in range(5):
        fn()
    times = []
    for _ in range(iterations):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    return times[len(times) // 2]


def measure(batch: int, iterations: int) -> list[dict[str, Any]]:
    import torch

    torch.backends.cudnn.benchmark = True

    @torch.compile(dynamic=False)
    def epilogue_residual(y: torch.Tensor, b: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.relu(y + b.view(1, -1, 1, 1) + z)

    @torch.compile(dynamic=False)
    def epilogue(y: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.relu(y + b.view(1, -1, 1, 1))

    return [measure_layer(layer, batch, iterations, epilogue, epilogue_residual) for layer in LAYERS]


def measure_layer(layer: tuple[Any, ...], batch: int, iterations: int, epilogue: Any, epilogue_residual: Any) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    name, cin, cout, k, stride, size, residual = layer
    dev, dt, cl = "cuda", torch.float16, torch.channels_last
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(batch, cin, size, size, device=dev, dtype=dt, generator=g).to(memory_format=cl)
    w = (torch.randn(cout, cin, k, k, device=dev, dtype=dt, generator=g) / (cin * k * k) ** 0.5).to(memory_format=cl)
    b = torch.randn(cout, device=dev, dtype=dt, generator=g) * 0.1
    pad = k // 2
    out = size // stride
    z = torch.randn(batch, cout, out, out, device=dev, dtype=dt, generator=g).to(memory_format=cl) if residual else None

    def unfused() -> torch.Tensor:
        y = F.conv2d(x, w, None, stride, pad)
        return epilogue_residual(y, b, z) if z is not None else epilogue(y, b)

    def fused() -> torch.Tensor:
        if z is not None:
            return torch.cudnn_convolution_add_relu(x, w, z, 1.0, b, [stride] * 2, [pad] * 2, [1, 1], 1)
        return torch.cudnn_convolution_relu(x, w, b, [stride] * 2, [pad] * 2, [1, 1], 1)

    def conv_only() -> torch.Tensor:
        return F.conv2d(x, w, b, stride, pad)

    with torch.inference_mode():
        want = unfused().float()
        try:
            got = fused().float()
        except RuntimeError as exc:  # cuDNN has no fused engine for this shape/type here
            print(f"{name:32s} fused: {exc}".splitlines()[0][:200], flush=True)
            return {"layer": name, "batch": batch, "fused_error": str(exc).splitlines()[0][:300],
                    "unfused_ms": round(_timed(unfused, iterations), 4), "conv_only_ms": round(_timed(conv_only, iterations), 4)}
        error = ((got - want).abs().max() / want.abs().max()).item()
        times = {label: _timed(fn, iterations) for label, fn in (("unfused", unfused), ("fused", fused), ("conv_only", conv_only))}
    gflop = 2 * batch * cout * out * out * cin * k * k / 1e9
    row = {
        "layer": name, "batch": batch, "max_rel_error": round(error, 5),
        **{f"{label}_ms": round(ms, 4) for label, ms in times.items()},
        "fused_speedup": round(times["unfused"] / times["fused"], 3),
        "floor_speedup": round(times["unfused"] / times["conv_only"], 3),
        "fused_tflops": round(gflop / times["fused"], 1),
    }
    print(
        f"{name:32s} unfused {times['unfused']:7.3f}  fused {times['fused']:7.3f}  conv only {times['conv_only']:7.3f} ms"
        f"  fused {row['fused_speedup']:.2f}x  floor {row['floor_speedup']:.2f}x  err {error:.1e}",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch

    from kiln.engine.hardware import fingerprint

    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "hardware": fingerprint(),
        "layers": measure(args.batch, args.iterations),
    }
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
