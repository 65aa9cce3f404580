"""The quality gate's metrics of a case's photos, measured on the GPU where they were decoded.

``quality.measure`` computes nine statistics of each model-size crop with OpenCV on the CPU
(grey level, Laplacian and Sobel responses, exposure, glare, colour). When the photos are decoded on
the GPU (``gpu_imaging``), their crops are already there as one uint8 batch: this module computes
the same statistics for the whole batch in one CUDA-graph replay (``engine.cuda_graphs``) and only
nine numbers per photo come back, so the gate costs no CPU time per photo. The operations are
OpenCV's: ``COLOR_RGB2GRAY`` in its fixed point, 3×3 Laplacian and Sobel kernels with its
default border (reflect-101), float32 statistics; tests/apps/authenticity/test_gpu_quality.py holds
them to ``quality.measure`` on the CPU. The limits the gate applies (learned from CPU-measured
training photos) therefore mean the same on both paths.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kiln.apps.authenticity.quality import QualityMetrics
from kiln.engine.cuda_graphs import GraphedFunction, device_constant

_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))
_SOBEL_X = ((-1.0, 0.0, 1.0), (-2.0, 0.0, 2.0), (-1.0, 0.0, 1.0))
FIELDS = ("brightness", "contrast", "sharpness", "dark_fraction", "clipped_fraction", "glare_fraction", "saturation",
          "edge_density", "warmth")


def _metrics_tensor(crops: Any) -> Any:
    """uint8 [N, H, W, 3] RGB → float32 [N, 9] in ``FIELDS`` order, with no host synchronisation."""
    import torch
    import torch.nn.functional as F

    x = crops.permute(0, 3, 1, 2).to(torch.int32)
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    # OpenCV 5's RGB2GRAY for 8-bit in 15-bit fixed point (pyproject requires 5: 4.x rounded in 14 bits)
    grey = ((r * 9798 + g * 19235 + b * 3735 + 16384) >> 15).to(torch.float32)
    scale = 1.0 / 255.0
    lum = grey * scale
    padded = F.pad(grey.unsqueeze(1), (1, 1, 1, 1), mode="reflect")  # OpenCV's BORDER_REFLECT_101
    laplacian = device_constant("laplacian_3x3", _LAPLACIAN, grey).reshape(1, 1, 3, 3)
    sobel_x = device_constant("sobel_x_3x3", _SOBEL_X, grey).reshape(1, 1, 3, 3)
    sobel_y = device_constant("sobel_y_3x3", np.asarray(_SOBEL_X).T, grey).reshape(1, 1, 3, 3)
    lap = F.conv2d(padded, laplacian)[:, 0]
    edges = F.conv2d(padded, sobel_x)[:, 0].abs() + F.conv2d(padded, sobel_y)[:, 0].abs()
    high = torch.maximum(torch.maximum(r, g), b).to(torch.float32) * scale
    low = torch.minimum(torch.minimum(r, g), b).to(torch.float32) * scale
    chroma = high - low
    dims = (1, 2)
    return torch.stack([
        lum.mean(dims),
        lum.std(dims, unbiased=False),
        lap.var(dims, unbiased=False),
        (lum < 0.06).to(torch.float32).mean(dims),
        (lum > 0.97).to(torch.float32).mean(dims),
        ((lum > 0.92) & (chroma < 0.08)).to(torch.float32).mean(dims),
        (chroma / high.clamp_min(1e-3)).mean(dims),
        (edges > 160.0).to(torch.float32).mean(dims),
        (r.to(torch.float32) * scale - b.to(torch.float32) * scale).mean(dims),
    ], dim=1)


_METRICS = GraphedFunction(_metrics_tensor)


def measure_batch(crops: Any) -> Any:
    """The metrics of a uint8 [N, H, W, 3] batch as a float32 [N, 9] tensor on its device (a graph replay on CUDA)."""
    return _METRICS(crops)


def to_metrics(values: np.ndarray, width: int, height: int) -> QualityMetrics:
    """One row of ``measure_batch`` (copied to the host) as the gate's ``QualityMetrics``."""
    return QualityMetrics(width=int(width), height=int(height), **{name: float(v) for name, v in zip(FIELDS, values, strict=True)})
