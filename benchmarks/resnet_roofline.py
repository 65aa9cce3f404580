"""How fast could kiln's fused FP16 resnet50 be on an H100 or H200? A roofline per layer (issue 9 acceptance 1).

Runs on a CPU: builds timm's resnet50, applies kiln's ``--fuse-conv`` rewrite (what the GPU engine runs), and records
every convolution's bytes (input, residual and output activations in FP16; weights are left out, since a batch of
1,024 reads them once) and FLOPs, plus the max-pool and the classifier. Each layer's floor is the larger of its
bytes over the memory bandwidth and its FLOPs over the tensor-core rate; the network's floor is their sum (layers
run one after the other). With ``--measured`` (a ``gpu_conv_epilogue.py`` JSON) it also sets the measured fused
layer times beside their floors.

    python benchmarks/resnet_roofline.py --measured docs/benchmarks/data/gpu-offline-2026-12-07/conv_epilogue_b1024.json \
        --out docs/benchmarks/resnet50_roofline.md
"""

from __future__ import annotations

import argparse
import functools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BATCH = 1024
# dense FP16 tensor-core rate and HBM bandwidth from NVIDIA's data sheets (SXM parts)
GPUS = {"H100 SXM (HBM3)": (989e12, 3.35e12), "H200 (HBM3e)": (989e12, 4.8e12)}
ACHIEVED_TFLOPS = 727e12  # the best rate a cuDNN convolution reached in gpu_conv_epilogue.py (stage 3 3×3, H100)


@dataclass
class Layer:
    stage: str  # stem, layer1..layer4, head (timm's module names)
    name: str
    stride: int
    bytes_per_image: float
    flops_per_image: float

    def floor_ms(self, flops_per_s: float, bytes_per_s: float) -> float:
        return max(self.bytes_per_image * BATCH / bytes_per_s, self.flops_per_image * BATCH / flops_per_s) * 1e3


def layers() -> list[Layer]:
    import timm
    import torch

    from kiln.engine.conv_fusion import fuse_conv_epilogues

    model = timm.create_model("resnet50").eval()
    fuse_conv_epilogues(model)
    found: list[Layer] = []

    def conv_hook(stage: str, module: Any, inputs: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        x, residual = inputs[0], (inputs[1] if len(inputs) > 1 else kwargs.get("residual"))
        kernel, stride = module.weight.shape[-1], module.stride[0]
        read = x.numel() / stride**2 if kernel == 1 else x.numel()  # a strided 1×1 reads only the pixels it samples
        elements = read + output.numel() + (residual.numel() if residual is not None else 0)
        name = f"{kernel}x{kernel}/{stride} {x.shape[1]}->{output.shape[1]} at {output.shape[2]}x{output.shape[3]}"
        found.append(Layer(stage, name + (" + residual" if residual is not None else ""), stride, 2.0 * elements,
                           2.0 * output.numel() * module.weight[0].numel()))

    def plain_hook(stage: str, module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        x = inputs[0]
        flops = 2.0 * module.in_features * module.out_features if isinstance(module, torch.nn.Linear) else 0.0
        found.append(Layer(stage, type(module).__name__, 1, 2.0 * (x.numel() + output.numel()), flops))

    for path, module in model.named_modules():
        stage = path.split(".")[0] if path.startswith("layer") else ("stem" if path in ("conv1", "maxpool") else "head")
        kind = type(module).__name__
        if kind == "FoldedConv" or isinstance(module, torch.nn.Conv2d):
            module.register_forward_hook(functools.partial(conv_hook, stage), with_kwargs=True)
        elif isinstance(module, torch.nn.MaxPool2d | torch.nn.Linear) or path == "global_pool":
            module.register_forward_hook(functools.partial(plain_hook, stage))
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    return found


def report(found: list[Layer], measured: dict[str, Any] | None) -> str:
    lines = [
        "# resnet50 FP16 roofline per layer (issue 9 acceptance 1)", "",
        f"- command: `python benchmarks/resnet_roofline.py{' --measured ' + measured['_path'] if measured else ''} --out F`",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}; computed on a CPU from kiln's `--fuse-conv` rewrite of "
        "timm's resnet50 (the graph the GPU engine runs), batch 1,024, FP16 activations, weights not counted (a batch of "
        "1,024 reads them once)",
        "- each layer's floor: max(bytes / HBM bandwidth, FLOPs / dense FP16 tensor-core rate), data-sheet figures; "
        "the network's floor is the sum (one layer after the other)", "",
        f"{len(found)} layers; per image {sum(x.bytes_per_image for x in found) / 1e6:.1f} MB of activations moved, "
        f"{sum(x.flops_per_image for x in found) / 1e9:.2f} GFLOP.", "",
        "| GPU | bandwidth | FP16 tensor rate | floor ms per 1,024 | img/s at the floor | floor at the best measured conv rate (727 TFLOP/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for gpu, (flops, bandwidth) in GPUS.items():
        floor = sum(x.floor_ms(flops, bandwidth) for x in found)
        achieved = sum(x.floor_ms(ACHIEVED_TFLOPS, bandwidth) for x in found)
        lines.append(f"| {gpu} | {bandwidth / 1e12:.2f} TB/s | {flops / 1e12:.0f} TFLOP/s | {floor:.1f} | "
                     f"{BATCH / floor * 1e3:,.0f} | {achieved:.1f} ms, {BATCH / achieved * 1e3:,.0f} img/s |")
    lines += ["", "Per stage (timm's modules: stem = conv1 + maxpool, head = pool + classifier), H100 floors:", "",
              "| stage | layers | MB per image | GFLOP per image | memory ms | compute ms | floor ms |", "|---|---:|---:|---:|---:|---:|---:|"]
    flops, bandwidth = GPUS["H100 SXM (HBM3)"]
    for stage in dict.fromkeys(x.stage for x in found):
        group = [x for x in found if x.stage == stage]
        mb = sum(x.bytes_per_image for x in group)
        gf = sum(x.flops_per_image for x in group)
        lines.append(f"| {stage} | {len(group)} | {mb / 1e6:.1f} | {gf / 1e9:.2f} | {mb * BATCH / bandwidth * 1e3:.2f} | "
                     f"{gf * BATCH / flops * 1e3:.2f} | {sum(x.floor_ms(flops, bandwidth) for x in group):.2f} |")
    if measured:
        lines += ["", f"Measured fused layers ({measured['_path']}, {measured['hardware']['gpus'][0]['name']}, "
                  f"{measured['date']}) against their H100 floors:", "",
                  "| layer | matched | measured fused ms | floor ms | of the floor |", "|---|---|---:|---:|---:|"]
        for row in measured["layers"]:
            layer = _layer_of(row["layer"], found)
            if layer is not None:
                floor = layer.floor_ms(flops, bandwidth)
                lines.append(f"| {row['layer']} | {layer.stage} {layer.name} | {row['fused_ms']:.3f} | {floor:.3f} | "
                             f"{floor / row['fused_ms']:.0%} |")
    return "\n".join(lines) + "\n"


def _layer_of(name: str, found: list[Layer]) -> Layer | None:
    """The stride-1 layer that a gpu_conv_epilogue.py row measured ("stage2 3x3", "stage1 1x1 expand + residual")."""
    stage = "layer" + name.split()[0].removeprefix("stage")
    kind = "3x3" if "3x3" in name else "1x1"
    for layer in found:
        if layer.stage != stage or layer.stride != 1 or not layer.name.startswith(kind):
            continue
        if ("residual" in layer.name) != ("residual" in name):
            continue
        ins, outs = (int(v) for v in layer.name.split()[1].split("->"))
        if ("reduce" in name and ins > outs) or ("expand" in name and outs > ins) or (kind == "3x3" and ins == outs):
            return layer
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--measured", type=Path, default=None, help="gpu_conv_epilogue.py JSON to compare with")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    measured = None
    if args.measured is not None:
        measured = json.loads(args.measured.read_text())
        measured["_path"] = str(args.measured)
    text = report(layers(), measured)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
