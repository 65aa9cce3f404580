"""Exact graph rewrites applied to a model before export, the kind TensorRT's builder does itself.

``space_to_depth_stem``: a stride-2 stem convolution over a few input channels (resnet's 7×7 over RGB)
is rewritten as a 2×2 space-to-depth of the padded input followed by a stride-1 convolution over 4×
the channels with a ⌈k/2⌉ kernel. The arithmetic is the same sum over the same products (the extra
kernel taps are zeros), so the outputs agree up to rounding; what changes is the shape the
convolution kernel sees: 3 input channels leave a GPU's tensor cores mostly idle, 12 (padded to 16)
do not.
"""

from __future__ import annotations

import math
from typing import Any

from kiln.errors import KilnError


def _stem_conv(module: Any) -> tuple[Any, str] | None:
    """The first Conv2d of ``module`` (in registration order) and its attribute path."""
    import torch

    for name, child in module.named_modules():
        if isinstance(child, torch.nn.Conv2d):
            return child, name
    return None


def _rewritable(conv: Any) -> str | None:
    """Why ``conv`` cannot be rewritten, or None when it can."""
    if conv.stride != (2, 2):
        return f"stride {conv.stride}, not 2"
    if conv.groups != 1 or conv.dilation != (1, 1):
        return "grouped or dilated"
    if not isinstance(conv.padding, tuple) or conv.padding_mode != "zeros":
        return f"padding {conv.padding!r} ({conv.padding_mode})"
    if conv.in_channels > 4:
        return f"{conv.in_channels} input channels (the rewrite pays for 1–4)"
    return None


def space_to_depth_weight(weight: Any, channel_multiple: int) -> Any:
    """[O, C, k, k] stride-2 weights → [O, C'·, ⌈k/2⌉, ⌈k/2⌉] stride-1 weights over the space-to-depth input.

    Input channel (c, p, q) of the rewritten convolution holds pixel offset (p, q) of channel c; it is
    padded with zero weights up to a multiple of ``channel_multiple``."""
    import torch

    out_ch, in_ch, kh, kw = weight.shape
    half_h, half_w = math.ceil(kh / 2), math.ceil(kw / 2)
    padded = torch.nn.functional.pad(weight, (0, 2 * half_w - kw, 0, 2 * half_h - kh))
    # [O, C, a, p, b, q] with tap (2a + p, 2b + q) → [O, C, p, q, a, b] → [O, C·4, a, b]
    folded = padded.reshape(out_ch, in_ch, half_h, 2, half_w, 2).permute(0, 1, 3, 5, 2, 4)
    folded = folded.reshape(out_ch, in_ch * 4, half_h, half_w)
    channels = -(-in_ch * 4 // channel_multiple) * channel_multiple
    if channels > in_ch * 4:
        folded = torch.nn.functional.pad(folded, (0, 0, 0, 0, 0, channels - in_ch * 4))
    return folded.contiguous()


def _space_to_depth_conv(conv: Any, channel_multiple: int) -> Any:
    import torch

    class SpaceToDepthConv(torch.nn.Module):
        """pad → 2×2 space-to-depth → [channel pad] → stride-1 convolution, cropped to the original output."""

        def __init__(self) -> None:
            super().__init__()
            weight = space_to_depth_weight(conv.weight.detach(), channel_multiple)
            self.inner = torch.nn.Conv2d(
                weight.shape[1], weight.shape[0], kernel_size=tuple(weight.shape[2:]), bias=conv.bias is not None
            )
            with torch.no_grad():
                self.inner.weight.copy_(weight)
                if conv.bias is not None:
                    self.inner.bias.copy_(conv.bias.detach())
            self.kernel = conv.kernel_size
            self.pad_h, self.pad_w = conv.padding
            self.in_channels = conv.in_channels
            self.extra_channels = weight.shape[1] - conv.in_channels * 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n, c, h, w = x.shape
            padded_h, padded_w = h + 2 * self.pad_h, w + 2 * self.pad_w
            out_h = (padded_h - self.kernel[0]) // 2 + 1
            out_w = (padded_w - self.kernel[1]) // 2 + 1
            # zero rows/columns beyond the original padding make both sides even; they meet only zero taps
            x = torch.nn.functional.pad(
                x, (self.pad_w, self.pad_w + padded_w % 2, self.pad_h, self.pad_h + padded_h % 2)
            )
            hh, ww = x.shape[2] // 2, x.shape[3] // 2
            x = x.reshape(n, c, hh, 2, ww, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, c * 4, hh, ww)
            if self.extra_channels:
                x = torch.nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra_channels))
            return self.inner(x)[:, :, :out_h, :out_w]

    return SpaceToDepthConv()


def space_to_depth_stem(module: Any, channel_multiple: int = 8) -> str:
    """Rewrites ``module``'s stem convolution in place; returns the rewritten module's path.

    Raises KilnError naming the reason when the model's first convolution is not a stride-2 stem over
    at most 4 channels."""
    found = _stem_conv(module)
    if found is None:
        raise KilnError("the stem rewrite needs a model with a Conv2d; this one has none")
    conv, path = found
    reason = _rewritable(conv)
    if reason is not None:
        raise KilnError(f"the stem rewrite does not apply to {path}: {reason}")
    parent = module
    *parents, leaf = path.split(".")
    for part in parents:
        parent = getattr(parent, part)
    setattr(parent, leaf, _space_to_depth_conv(conv, channel_multiple))
    return path
