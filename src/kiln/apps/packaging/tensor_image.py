"""The style scorer's features and the panel saliency, computed with torch where the image already is.

A reference JPEG decoded on the GPU (``references.decode_reference`` with a device) leaves its
≤ 512 px working copy there; these functions compute from that tensor what ``stylescore.
image_features`` and ``pipeline.panel_image`` compute from the Pillow copy, so that no resize or
per-pixel statistic runs on the CPU and only a few hundred numbers come back. The operations are
the same (CIELAB statistics, spectral residual plus colour contrast, Sobel on the layout grid);
Pillow's resampling and Gaussian blur are matched by torch's antialiased bilinear interpolation
(with ``thumbnail``'s reduce step) and Pillow's own extended-box blur, so the results agree with the
CPU functions to within rounding of 8-bit pixels (tests/apps/packaging/test_tensor_image.py runs
both on the CPU and bounds the difference). On a GPU the fixed-size part of each (the statistics
of the 64×64 copy, the saliency of the ≤ 64 px thumbnail) replays from a CUDA graph
(``engine.cuda_graphs``): eagerly they are ~100 tiny kernels whose launches cost more than the work.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kiln.apps.packaging.colour import _RGB_TO_XYZ, _WHITE
from kiln.apps.packaging.layout_metrics import gradient_map
from kiln.apps.packaging.references import thumbnail_size
from kiln.apps.packaging.saliency import WORK_SIZE
from kiln.apps.packaging.stylescore import FEATURE_SIZE, HUE_BINS, LIGHTNESS_BINS
from kiln.engine.cuda_graphs import GraphedFunction, device_constant

GREY_WEIGHTS = (0.299, 0.587, 0.114)


def _resize(x: Any, height: int, width: int) -> Any:
    """CHW float in [0, 255] → CHW of (height, width), rounded to 8-bit values as Pillow's resize gives."""
    import torch.nn.functional as F

    if tuple(x.shape[1:]) != (height, width):
        x = F.interpolate(x.unsqueeze(0), size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]
    return x.round().clamp(0, 255)


def _thumbnail(x: Any, height: int, width: int) -> Any:
    """Pillow's ``thumbnail`` resampling: a box ``reduce`` by the whole factor over 2 (its reducing_gap), then bilinear."""
    import torch.nn.functional as F

    factor_x = max(1, int(x.shape[2] / width / 2.0))
    factor_y = max(1, int(x.shape[1] / height / 2.0))
    if factor_x > 1 or factor_y > 1:
        x = F.avg_pool2d(x.unsqueeze(0), (factor_y, factor_x), ceil_mode=True)[0].round()
    return _resize(x, height, width)


def _quantile(sorted_values: Any, q: float) -> Any:
    """numpy's default (linear) percentile of a sorted 1-D tensor; the index arithmetic is on the host."""
    position = q * (sorted_values.numel() - 1)
    low = math.floor(position)
    high = min(low + 1, sorted_values.numel() - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def _srgb_to_lab(rgb: Any) -> Any:
    """[..., 3] sRGB in [0, 1] → CIELAB (D65), the formulas of ``colour.srgb_to_lab``."""
    import torch

    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    t = (linear @ device_constant("rgb_to_xyz_T", _RGB_TO_XYZ.T, rgb)) / device_constant("white", _WHITE, rgb)
    delta = 6 / 29
    f = torch.where(t > delta**3, t.clamp_min(0) ** (1 / 3), t / (3 * delta**2) + 4 / 29)
    fx, fy, fz = f[..., 0], f[..., 1], f[..., 2]
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-1)


def image_features(working: Any) -> np.ndarray:
    """``stylescore.image_features`` of the working copy (CHW float in [0, 255] on any device)."""
    small = _resize(working.double(), FEATURE_SIZE, FEATURE_SIZE)
    return np.asarray(_FEATURES(small).cpu().numpy())


def _features_tensor(small: Any) -> Any:
    """The 34 features of the 64×64 copy (CHW float64, 8-bit values) as a float32 tensor on its device, with
    no host synchronisation (fixed-size scatters instead of bincount, quantiles by index into a sort)."""
    import torch

    rgb = small.permute(1, 2, 0).reshape(-1, 3) / 255.0
    lab = _srgb_to_lab(rgb)
    lightness, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    chroma = torch.hypot(a, b)
    hue = torch.remainder(torch.rad2deg(torch.atan2(b, a)), 360.0)
    chromatic = chroma > 12
    # a weighted histogram over every pixel (weight 0 where achromatic): no data-dependent shapes
    hue_bins = torch.div(hue, 360 / HUE_BINS, rounding_mode="floor").long().clamp(0, HUE_BINS - 1)
    weights = torch.where(chromatic, chroma, torch.zeros_like(chroma))
    hue_hist = torch.zeros(HUE_BINS, dtype=lab.dtype, device=lab.device).scatter_add_(0, hue_bins, weights)
    hue_hist = hue_hist / weights.sum().clamp_min(1e-6)
    l_bins = (lightness / (100 / LIGHTNESS_BINS)).long().clamp(0, LIGHTNESS_BINS - 1)
    l_hist = torch.zeros(LIGHTNESS_BINS, dtype=lab.dtype, device=lab.device).scatter_add_(0, l_bins, torch.ones_like(lightness))
    l_hist = l_hist / lightness.numel()
    grid = lightness.reshape(FEATURE_SIZE, FEATURE_SIZE)
    gx = (grid[:, 1:] - grid[:, :-1]).abs()[:-1, :]
    gy = (grid[1:, :] - grid[:-1, :]).abs()[:, :-1]
    edges = torch.hypot(gx, gy)
    r, g, bl = rgb[:, 0] * 255, rgb[:, 1] * 255, rgb[:, 2] * 255
    rg, yb = r - g, 0.5 * (r + g) - bl
    colourfulness = torch.hypot(rg.std(unbiased=False), yb.std(unbiased=False)) + 0.3 * torch.hypot(rg.mean(), yb.mean())
    gold = (hue >= 60) & (hue <= 100) & (chroma > 25) & (lightness > 45) & (lightness < 88)
    sorted_l, sorted_c = torch.sort(lightness).values, torch.sort(chroma).values
    values = torch.cat([
        torch.stack([
            lightness.mean() / 100, lightness.std(unbiased=False) / 50, _quantile(sorted_l, 0.1) / 100,
            _quantile(sorted_l, 0.9) / 100, chroma.mean() / 100, chroma.std(unbiased=False) / 50,
            _quantile(sorted_c, 0.9) / 100, a.mean() / 100, b.mean() / 100,
        ]),
        hue_hist, chromatic.to(lab.dtype).mean().reshape(1),
        l_hist,
        torch.stack([
            edges.mean() / 20, (edges > 15).to(lab.dtype).mean(), colourfulness / 100, gold.to(lab.dtype).mean(),
            (lightness < 20).to(lab.dtype).mean(), (lightness > 90).to(lab.dtype).mean(),
        ]),
    ])
    return values.float()


def _normalise(x: Any) -> Any:
    """To [0, 1] over the whole map; zeros where it is flat (``saliency._normalise``)."""
    import torch

    low, span = x.min(), x.max() - x.min()
    return torch.where(span > 1e-9, (x - low) / span.clamp_min(1e-9), torch.zeros_like(x))


def _box_blur3(x: Any) -> Any:
    """3×3 mean with edge padding over the last two dimensions (``saliency._box_blur(·, 1)``)."""
    import torch.nn.functional as F

    padded = F.pad(x.reshape(-1, 1, *x.shape[-2:]), (1, 1, 1, 1), mode="replicate")
    return F.avg_pool2d(padded, 3, stride=1).reshape(x.shape)


def _gaussian_blur(x: Any, sigma: float, passes: int = 3) -> Any:
    """Pillow's ``GaussianBlur(radius=sigma)`` of an [h, w] 8-bit map: ``passes`` extended box blurs per axis
    (Gwosdek et al. 2011, the radius Pillow derives from sigma), edges extended, 8-bit rounding after each pass."""
    import torch
    import torch.nn.functional as F

    variance = sigma * sigma / passes
    length = math.sqrt(12.0 * variance + 1.0)
    whole = math.floor((length - 1.0) / 2.0)
    fraction = (2 * whole + 1) * (whole * (whole + 1) - 3 * variance) / (6 * (variance - (whole + 1) ** 2))
    kernel_1d = np.ones(2 * whole + 3)
    kernel_1d[0] = kernel_1d[-1] = fraction
    weights = device_constant(f"box_blur_{sigma}_{passes}", kernel_1d / (2 * (whole + fraction) + 1), x)
    pad = whole + 1
    y = x[None, None]
    for kernel, padding in ((weights.reshape(1, 1, 1, -1), (pad, pad, 0, 0)), (weights.reshape(1, 1, -1, 1), (0, 0, pad, pad))):
        for _ in range(passes):
            y = torch.floor(F.conv2d(F.pad(y, padding, mode="replicate"), kernel) + 0.5)
    return y[0, 0]


def _saliency_tensor(thumb: Any, width: int, height: int) -> Any:
    """``saliency.saliency_map`` of the ≤ 64 px thumbnail (CHW float64, 8-bit values) on the (width, height) grid."""
    import torch

    rgb = (thumb / 255.0).permute(1, 2, 0)
    grey = rgb @ device_constant("grey", GREY_WEIGHTS, rgb)
    spectrum = torch.fft.fft2(grey)
    amplitude = torch.log(spectrum.abs() + 1e-9)
    residual = amplitude - _box_blur3(amplitude)
    spectral = _normalise(torch.fft.ifft2(torch.polar(torch.exp(residual), spectrum.angle())).abs() ** 2)
    lab = _srgb_to_lab(rgb)
    blurred = _box_blur3(lab.permute(2, 0, 1)).permute(1, 2, 0)
    contrast = _normalise(torch.linalg.vector_norm(blurred - lab.reshape(-1, 3).mean(0), dim=-1))
    combined = torch.floor(_normalise(0.4 * spectral + 0.6 * contrast) * 255)
    smooth = _gaussian_blur(combined, 2.0).round().clamp(0, 255)
    return _normalise(_resize(smooth[None], height, width)[0])


def panel_maps(main: Any, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(saliency, Sobel gradient) on the (width, height) layout grid from the cover-fit working copy, as
    ``pipeline.panel_image`` computes them."""
    import torch

    width, height = grid
    x = main.double()
    thumb_w, thumb_h = thumbnail_size(int(x.shape[2]), int(x.shape[1]), WORK_SIZE)
    saliency = _SALIENCY(_thumbnail(x, thumb_h, thumb_w), width, height)
    weights = device_constant("grey", GREY_WEIGHTS, x)
    grey = _resize((x * weights[:, None, None]).sum(0, keepdim=True).round(), height, width)[0]
    both = torch.stack([saliency, grey]).cpu().numpy()
    return both[0].astype(np.float32), gradient_map(both[1])


_FEATURES = GraphedFunction(_features_tensor)
_SALIENCY = GraphedFunction(_saliency_tensor, max_graphs=32)
