"""Preprocessing fused into the engine: raw uint8 NHWC pixels in, normalisation inside the graph."""

from __future__ import annotations

from typing import Any

from kiln.engine.spec import Preprocessing


def fuse_normalisation(module: Any, pre: Preprocessing) -> Any:
    """Wraps ``module`` so it takes uint8 [B, H, W, C] and applies /255, mean and std itself."""
    import torch

    class FusedNormalise(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner
            scale = torch.tensor([1.0 / (255.0 * s) for s in pre.std]).view(1, -1, 1, 1)
            shift = torch.tensor([-m / s for m, s in zip(pre.mean, pre.std, strict=True)]).view(1, -1, 1, 1)
            self.scale: torch.Tensor
            self.shift: torch.Tensor
            self.register_buffer("scale", scale)
            self.register_buffer("shift", shift)

        def forward(self, pixels: torch.Tensor) -> Any:
            # no explicit cast: type promotion follows the buffers' dtype, which the engine's
            # precision sets after export (a traced .to(dtype) would freeze float32 in the graph)
            return self.inner(pixels.permute(0, 3, 1, 2) * self.scale + self.shift)

    return FusedNormalise(module).eval()
