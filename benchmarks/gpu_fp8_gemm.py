"""Probe: resnet50 with its 1×1 convolutions as FP8 GEMMs (``torch._scaled_mm``), everything else FP16.

In channels-last layout a 1×1 convolution is a GEMM over [N·H·W, C]; about half of resnet50's
FLOPs are in them. Hopper's FP8 tensor cores run GEMMs at twice the FP16 rate, and FP8
activations halve the bytes moved into them. This script builds that network by hand from a timm
resnet50 (batch norm folded into weights and bias; per-tensor E4M3 scales for weights and, from
calibration batches, for activations; the activation cast fused by inductor into the preceding
ReLU/add), compiles it and the plain FP16 network with the same inductor settings, and compares
device-resident throughput and agreement with the FP32 network in one run.

    python benchmarks/gpu_fp8_gemm.py --batch 512,1024 --out result.json
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

E4M3_MAX = 448.0
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight * scale[:, None, None, None]
    bias = bn.bias - bn.running_mean * scale
    return weight.detach(), bias.detach()


class Pointwise(nn.Module):
    """A 1×1 convolution (optionally stride 2) on NHWC activations as one GEMM, FP8 or FP16."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, fp8: bool) -> None:
        super().__init__()
        weight, bias = fold(conv, bn)
        self.stride = conv.stride[0]
        self.fp8 = fp8
        w = weight[:, :, 0, 0].float()  # [out, in]
        self.register_buffer("bias", bias.half())
        self.register_buffer("amax", torch.zeros((), device=w.device))
        self.calibrating = False
        if fp8:
            w_scale = (w.abs().max() / E4M3_MAX).clamp(min=1e-12)  # timm zero-initialises the last BN of a block
            self.register_buffer("w_scale", w_scale.float().reshape(()))
            self.register_buffer("w_t", (w / w_scale).to(torch.float8_e4m3fn).t())  # [in, out], column-major
            self.register_buffer("x_scale", torch.ones((), device=w.device))
        else:
            self.register_buffer("w_t", w.half().t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != 1:
            x = x[:, :: self.stride, :: self.stride, :]
        n, h, w, c = x.shape
        a = x.reshape(n * h * w, c)
        if self.calibrating:
            self.amax = torch.maximum(self.amax, a.abs().max().float())
        if not self.fp8 or self.calibrating:
            w_t = self.w_t if not self.fp8 else (self.w_t.float() * self.w_scale).half()
            out = torch.addmm(self.bias, a.half(), w_t)
        else:
            q = (a.float() / self.x_scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
            out = torch._scaled_mm(q, self.w_t, scale_a=self.x_scale, scale_b=self.w_scale, bias=self.bias,
                                   out_dtype=torch.float16)
        return out.reshape(n, h, w, -1)


class Spatial(nn.Module):
    """A k×k convolution with folded batch norm, FP16, on NHWC activations (cuDNN, channels-last)."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
        super().__init__()
        weight, bias = fold(conv, bn)
        self.register_buffer("weight", weight.half().contiguous(memory_format=torch.channels_last))
        self.register_buffer("bias", bias.half())
        self.stride, self.padding = conv.stride, conv.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x.permute(0, 3, 1, 2), self.weight, self.bias, self.stride, self.padding)
        return y.permute(0, 2, 3, 1)


class Block(nn.Module):
    def __init__(self, block: Any, fp8: bool) -> None:
        super().__init__()
        self.conv1 = Pointwise(block.conv1, block.bn1, fp8)
        self.conv2 = Spatial(block.conv2, block.bn2)
        self.conv3 = Pointwise(block.conv3, block.bn3, fp8)
        self.down = Pointwise(block.downsample[0], block.downsample[1], fp8) if block.downsample is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.down(x) if self.down is not None else x
        y = torch.relu(self.conv1(x))
        y = torch.relu(self.conv2(y))
        return torch.relu(self.conv3(y) + shortcut)


class Net(nn.Module):
    """uint8 NHWC images in, logits out."""

    def __init__(self, model: Any, fp8: bool) -> None:
        super().__init__()
        self.stem = Spatial(model.conv1, model.bn1)
        self.blocks = nn.Sequential(*[Block(b, fp8) for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer])
        self.fc_w = nn.Parameter(model.fc.weight.detach().half(), requires_grad=False)
        self.fc_b = nn.Parameter(model.fc.bias.detach().half(), requires_grad=False)
        device = model.fc.weight.device
        self.register_buffer("mean", torch.tensor(MEAN, device=device).mul(255))
        self.register_buffer("inv_std", 1 / torch.tensor(STD, device=device).mul(255))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = ((images.float() - self.mean) * self.inv_std).half()
        x = torch.relu(self.stem(x))
        x = F.max_pool2d(x.permute(0, 3, 1, 2), 3, 2, 1).permute(0, 2, 3, 1)
        x = self.blocks(x)
        return F.linear(x.mean((1, 2)), self.fc_w, self.fc_b)

    def pointwise(self) -> list[Pointwise]:
        return [m for m in self.modules() if isinstance(m, Pointwise)]


def calibrate(net: Net, batches: list[torch.Tensor]) -> None:
    layers = net.pointwise()
    for layer in layers:
        layer.calibrating = True
    with torch.no_grad():
        for images in batches:
            net(images)
    for layer in layers:
        layer.calibrating = False
        layer.x_scale = (layer.amax / E4M3_MAX).clamp(min=1e-8).reshape(())


def throughput(fn: Any, images: torch.Tensor, seconds: float) -> float:
    with torch.no_grad():
        for _ in range(5):
            fn(images)
        torch.cuda.synchronize()
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(10):
                fn(images)
            n += 10
            torch.cuda.synchronize()
        return n * images.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", default="512,1024")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--modes", default="reduce-overhead,max-autotune", help="torch.compile modes to try (comma-separated)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="stop starting new variants after this many seconds")
    parser.add_argument("--out", type=Path, default=Path("gpu_fp8_gemm.json"))
    args = parser.parse_args()

    import timm

    torch.manual_seed(0)
    begin = time.monotonic()
    torch.backends.cudnn.benchmark = True
    torch._inductor.config.freezing = True
    reference = timm.create_model("resnet50").eval()
    for module in reference.modules():  # timm zero-initialises each block's last BN: make every branch count
        if isinstance(module, nn.BatchNorm2d):
            nn.init.uniform_(module.weight, 0.5, 1.5)
            nn.init.normal_(module.running_mean, 0.0, 0.1)
    reference = reference.cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    calib = [torch.randint(0, 256, (64, 224, 224, 3), dtype=torch.uint8, device="cuda", generator=generator) for _ in range(4)]
    check = torch.randint(0, 256, (64, 224, 224, 3), dtype=torch.uint8, device="cuda", generator=generator)
    with torch.no_grad():
        x = (check.float() - torch.tensor(MEAN, device="cuda") * 255) / (torch.tensor(STD, device="cuda") * 255)
        want = reference(x.permute(0, 3, 1, 2).contiguous()).float()

    variants = {"fp16 gemm": Net(reference, fp8=False).eval(), "fp8 gemm": Net(reference, fp8=True).eval()}
    calibrate(variants["fp8 gemm"], calib)
    rows: list[dict[str, Any]] = []
    for name, net in variants.items():
        with torch.no_grad():
            got = net(check).float()
        cosine = F.cosine_similarity(got, want).mean().item()
        agree = (got.argmax(1) == want.argmax(1)).float().mean().item()
        print(f"{name}: eager cosine vs fp32 {cosine:.5f}, top-1 agreement {agree:.3f}", flush=True)
        rows.append({"variant": name, "mode": "eager", "cosine": cosine, "top1_agreement": agree})

    baseline = reference.half().to(memory_format=torch.channels_last)

    def timm_fp16(images: torch.Tensor, model: Any = baseline) -> torch.Tensor:
        x = ((images.float() - torch.tensor(MEAN, device="cuda") * 255) / (torch.tensor(STD, device="cuda") * 255)).half()
        return model(x.permute(0, 3, 1, 2))

    candidates = {"timm fp16 (kiln's current path)": timm_fp16, **variants}
    for mode in args.modes.split(","):
        for name, fn in candidates.items():
            if time.monotonic() - begin > args.budget_s:
                print(f"budget reached; skipping {name} {mode}", flush=True)
                continue
            torch._dynamo.reset()
            compiled = torch.compile(fn, mode=mode)
            start = time.monotonic()
            for batch in (int(b) for b in args.batch.split(",")):
                images = torch.randint(0, 256, (batch, 224, 224, 3), dtype=torch.uint8, device="cuda", generator=generator)
                try:
                    rate = throughput(compiled, images, args.seconds)
                except Exception as exc:  # a variant that fails to compile is reported, not fatal
                    print(f"{name} {mode} b{batch}: failed: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
                    rows.append({"variant": name, "mode": mode, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:500]})
                    break
                print(f"{name:36s} {mode:16s} b{batch:5d} {rate:9.0f} img/s (compile+run {time.monotonic() - start:.0f} s)", flush=True)
                rows.append({"variant": name, "mode": mode, "batch": batch, "img_per_s": rate})
            args.out.write_text(json.dumps({"rows": rows}, indent=2))
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "cudnn": torch.backends.cudnn.version(),
        "rows": rows,
    }
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
