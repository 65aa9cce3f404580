"""Convolution epilogue fusion for ResNet-style models: batch norm folded into each convolution, and the
bias, the residual add and the ReLU done inside cuDNN's fused convolution kernel on CUDA.

Why: in kiln's FP16 resnet50 engine ~45 % of the GPU time was inductor's pointwise kernels that read a
convolution's output back to add its bias (and the residual) and apply ReLU (docs/benchmarks/gpu.md,
2026-12-07). ``torch.cudnn_convolution_relu`` / ``torch.cudnn_convolution_add_relu`` do that in the
convolution's own epilogue: 1.24-1.76x faster per layer on an H100 (benchmarks/gpu_conv_epilogue.py).

The fused convolutions are two custom ops (``kiln::conv_relu``, ``kiln::conv_add_relu``) so that the exported
program carries them on any device: on CUDA they call cuDNN's fused kernels, elsewhere the same arithmetic
in plain ops (which is what CI tests). Blocks are rewritten only where the rewrite is exact: ReLU
activations, no squeeze-excitation or anti-aliasing, drop-block and drop-path only in eval mode (identities there),
batch norm in eval mode.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass, field
from typing import Any

from kiln.errors import KilnError

# What the rewrite produces; part of a fused engine's cache key, so that a rebuild after a change to the rewrite does
# not reuse an engine made by the old one. 2: shortcut convolutions bias-free, their bias in the last convolution.
REWRITE_VERSION = 2

_REGISTERED = threading.Lock()
_OPS: dict[str, Any] = {}


def _memory_format(x: Any) -> Any:
    """The layout both implementations (and the fake one) give their output: the input's, by one rule."""
    import torch

    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


def register_ops() -> dict[str, Any]:
    """Defines the two custom ops once per process (loading an exported program that uses them needs this)."""
    with _REGISTERED:
        if _OPS:
            return _OPS
        import torch
        import torch.nn.functional as F

        # explicit schemas: this module's annotations are strings (from __future__ import annotations)
        @torch.library.custom_op("kiln::conv_relu", mutates_args=(), schema=(
            "(Tensor x, Tensor weight, Tensor bias, int[] stride, int[] padding, int[] dilation, int groups) -> Tensor"))
        def conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: list[int], padding: list[int],
                      dilation: list[int], groups: int) -> torch.Tensor:
            out = torch.relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups))
            return out.contiguous(memory_format=_memory_format(x))

        @conv_relu.register_kernel("cuda")
        def _conv_relu_cuda(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: list[int],
                            padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
            fmt = _memory_format(x)
            out = torch.cudnn_convolution_relu(x, weight.contiguous(memory_format=fmt), bias, stride, padding, dilation, groups)
            return out.contiguous(memory_format=fmt)

        @conv_relu.register_fake
        def _conv_relu_fake(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: list[int],
                            padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
            return F.conv2d(x, weight, bias, stride, padding, dilation, groups).contiguous(memory_format=_memory_format(x))

        @torch.library.custom_op("kiln::conv_add_relu", mutates_args=(), schema=(
            "(Tensor x, Tensor weight, Tensor bias, Tensor residual, int[] stride, int[] padding, int[] dilation, "
            "int groups) -> Tensor"))
        def conv_add_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
                          stride: list[int], padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
            out = torch.relu(F.conv2d(x, weight, bias, stride, padding, dilation, groups) + residual)
            return out.contiguous(memory_format=_memory_format(x))

        @conv_add_relu.register_kernel("cuda")
        def _conv_add_relu_cuda(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
                                stride: list[int], padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
            fmt = _memory_format(x)
            out = torch.cudnn_convolution_add_relu(
                x, weight.contiguous(memory_format=fmt), residual.contiguous(memory_format=fmt), 1.0, bias,
                stride, padding, dilation, groups,
            )
            return out.contiguous(memory_format=fmt)

        @conv_add_relu.register_fake
        def _conv_add_relu_fake(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor,
                                stride: list[int], padding: list[int], dilation: list[int], groups: int) -> torch.Tensor:
            return F.conv2d(x, weight, bias, stride, padding, dilation, groups).contiguous(memory_format=_memory_format(x))

        _OPS.update(conv_relu=conv_relu, conv_add_relu=conv_add_relu)
        return _OPS


def _folded(conv: Any, bn: Any) -> tuple[Any, Any]:
    """``conv`` followed by eval-mode ``bn`` as one convolution's weight and bias."""
    import torch

    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(bn.running_var)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(bn.running_mean)
    scale = gamma / torch.sqrt(bn.running_var + bn.eps)
    weight = conv.weight.detach() * scale.view(-1, 1, 1, 1)
    bias = beta - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach() * scale
    return weight, bias


def _foldable(conv: Any, bn: Any) -> bool:
    """A zero-padded 2-D convolution followed by a batch norm with running statistics."""
    import torch

    return (
        # exact types: subclasses (timm's BatchNormAct2d, Conv2dSame, StdConv2d) do more in their forward
        type(conv) is torch.nn.Conv2d and type(bn) is torch.nn.BatchNorm2d and not bn.training
        and isinstance(conv.padding, tuple) and conv.padding_mode == "zeros"
        and bn.running_mean is not None and bn.running_var is not None
    )


@functools.cache
def _modules() -> tuple[Any, Any]:
    """The two module classes of the rewrite (defined once, on first use: this module imports no torch)."""
    import torch
    import torch.nn.functional as F

    ops = register_ops()

    class FoldedConv(torch.nn.Module):
        """A convolution with its batch norm folded in; ``relu`` and a residual fused where asked."""

        def __init__(self, conv: Any, bn: Any, relu: bool, extra_bias: Any = None) -> None:
            super().__init__()
            weight, bias = _folded(conv, bn)
            self.weight = torch.nn.Parameter(weight, requires_grad=False)
            if extra_bias is not None:
                bias = bias + extra_bias
            self.bias: torch.nn.Parameter | None = torch.nn.Parameter(bias, requires_grad=False)
            self.stride, self.padding = list(conv.stride), list(conv.padding)
            self.dilation, self.groups, self.relu = list(conv.dilation), conv.groups, relu

        def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
            args = (self.stride, self.padding, self.dilation, self.groups)
            if residual is not None:
                return ops["conv_add_relu"](x, self.weight, self.bias, residual, *args)
            if self.relu:
                return ops["conv_relu"](x, self.weight, self.bias, *args)
            return F.conv2d(x, self.weight, self.bias, *args)

        def take_bias(self) -> Any:
            """Removes this convolution's bias and returns it, for a later convolution to add instead."""
            bias, self.bias = self.bias, None
            return bias.detach() if bias is not None else None

    class FusedBlock(torch.nn.Module):
        """timm's BasicBlock/Bottleneck with every conv + bn (+ ReLU) folded, the last one fused with the residual add."""

        def __init__(self, block: Any, bottleneck: bool) -> None:
            super().__init__()
            shortcut = _downsample(block.downsample) if block.downsample is not None else None
            self.pool = shortcut[0] if shortcut is not None else None
            # the shortcut convolution's bias joins the last convolution's, which adds the shortcut in its epilogue:
            # on CUDA inductor adds a convolution's bias in a separate pass over its output (by their bytes, ~2 ms of
            # 30 per resnet50 batch of 1024 on an H100 for the four shortcuts); a bias-free convolution has none
            self.downsample = FoldedConv(shortcut[1], shortcut[2], relu=False) if shortcut is not None else None
            moved = self.downsample.take_bias() if self.downsample is not None else None
            self.conv1 = FoldedConv(block.conv1, block.bn1, relu=True)
            self.conv2 = FoldedConv(block.conv2, block.bn2, relu=True, extra_bias=None if bottleneck else moved)
            self.conv3 = FoldedConv(block.conv3, block.bn3, relu=True, extra_bias=moved) if bottleneck else None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            shortcut = x
            if self.downsample is not None:
                shortcut = self.downsample(self.pool(x) if self.pool is not None else x)
            y = self.conv1(x)
            if self.conv3 is not None:
                return self.conv3(self.conv2(y), residual=shortcut)
            return self.conv2(y, residual=shortcut)

    return FoldedConv, FusedBlock


def _plain(module: Any) -> bool:
    """Nothing, or a module that is the identity in eval mode (timm's DropPath and DropBlock2d are)."""
    import torch
    from timm.layers.drop import DropBlock2d, DropPath

    if module is None or type(module) is torch.nn.Identity:
        return True
    return type(module) in (DropPath, DropBlock2d) and not module.training


def _relu(module: Any) -> bool:
    import torch

    return type(module) is torch.nn.ReLU


def _downsample(ds: Any) -> tuple[Any, Any, Any] | None:
    """(pool or None, conv, bn) of a timm shortcut: conv + bn, or avg-pool + conv + bn (the "-d" variants)."""
    import torch

    if not isinstance(ds, torch.nn.Sequential):
        return None
    parts = list(ds)
    pool = parts.pop(0) if len(parts) == 3 and isinstance(parts[0], (torch.nn.AvgPool2d, torch.nn.Identity)) else None
    if len(parts) == 2 and _foldable(*parts):
        return pool, parts[0], parts[1]
    return None


def _why_not(block: Any, bottleneck: bool) -> str | None:
    """Why a timm BasicBlock/Bottleneck cannot be rewritten exactly, or None when it can."""
    if block.training:
        return "in training mode"
    if getattr(block, "se", None) is not None:
        return "has squeeze-excitation"
    for name in ("drop_block", "aa", "drop_path"):
        if not _plain(getattr(block, name, None)):
            return f"has {name}"
    acts = [getattr(block, n) for n in ("act1", "act2", "act3") if hasattr(block, n)]
    if not all(_relu(a) for a in acts):
        return "has a non-ReLU activation"
    pairs = [("conv1", "bn1"), ("conv2", "bn2")] + ([("conv3", "bn3")] if bottleneck else [])
    if not all(_foldable(getattr(block, c), getattr(block, b)) for c, b in pairs):
        return "has a convolution or batch norm that cannot be folded"
    if block.downsample is not None and _downsample(block.downsample) is None:
        return "has a shortcut other than [avg-pool +] conv + batch norm"
    return None


def _fuse_stem(model: Any) -> int:
    """timm ResNet stems: conv1 (one conv, or the deep stem's conv-bn-ReLU ×2 + conv) with bn1 and act1."""
    import torch

    conv1, bn1, act1 = (getattr(model, n, None) for n in ("conv1", "bn1", "act1"))
    if model.training or not hasattr(model, "layer1") or type(bn1) is not torch.nn.BatchNorm2d or not _relu(act1):
        return 0
    folded_conv = _modules()[0]
    if _foldable(conv1, bn1):
        model.conv1 = folded_conv(conv1, bn1, relu=True)
    elif type(conv1) is torch.nn.Sequential and len(conv1) == 7:
        parts = list(conv1)
        triples = [(parts[0], parts[1], parts[2]), (parts[3], parts[4], parts[5])]
        if not (all(_foldable(c, b) and _relu(r) for c, b, r in triples) and _foldable(parts[6], bn1)):
            return 0
        model.conv1 = torch.nn.Sequential(*(folded_conv(c, b, relu=True) for c, b, _ in triples),
                                          folded_conv(parts[6], bn1, relu=True))
    else:
        return 0
    model.bn1, model.act1 = torch.nn.Identity(), torch.nn.Identity()
    return len(model.conv1) if isinstance(model.conv1, torch.nn.Sequential) else 1


@dataclass
class FusionReport:
    """What ``fuse_conv_epilogues`` did: convolutions folded, and each kind of block it left alone with the reason."""

    folded: int
    skipped: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"folded": self.folded, "skipped": dict(sorted(self.skipped.items())), "version": REWRITE_VERSION}


def fuse_conv_epilogues(module: Any) -> FusionReport:
    """Rewrites ``module``'s timm ResNet blocks (and the stem's conv + bn + ReLU) in place. Raises KilnError when
    there is nothing it can rewrite; blocks it cannot rewrite exactly stay as they are, counted in the report."""
    from timm.models.resnet import BasicBlock, Bottleneck

    report = FusionReport(folded=0)
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) in (BasicBlock, Bottleneck):  # subclasses may change forward
                bottleneck = type(child) is Bottleneck
                reason = _why_not(child, bottleneck)
                if reason is not None:
                    key = f"{type(child).__name__} {reason}"
                    report.skipped[key] = report.skipped.get(key, 0) + 1
                    continue
                setattr(parent, name, _modules()[1](child, bottleneck).eval())
                report.folded += (3 if bottleneck else 2) + (child.downsample is not None)
        report.folded += _fuse_stem(parent)
    if report.folded == 0:
        why = f" ({'; '.join(sorted(report.skipped))})" if report.skipped else ""
        raise KilnError(f"conv fusion found no ResNet block it can rewrite exactly{why}",
                        hint="it applies to timm ResNet models with ReLU and no squeeze-excitation")
    return report
