"""Fast saliency maps: spectral residual (Hou & Zhang, CVPR 2007) plus frequency-tuned colour
contrast (Achanta et al., CVPR 2009), averaged and normalised to [0, 1].

Spectral residual finds what stands out from the image's own statistics (edges, objects);
the colour term finds what differs from the mean colour (a product on a plain background).
Both run on a small copy (64 px on the long side), so a map costs about a millisecond.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from kiln.apps.packaging.colour import srgb_to_lab

WORK_SIZE = 64


def _pad_edge(array: np.ndarray, radius: int) -> np.ndarray:
    """``np.pad(array, radius, mode="edge")`` for a 2-D array, without np.pad's per-call cost."""
    h, w = array.shape
    out = np.empty((h + 2 * radius, w + 2 * radius), dtype=array.dtype)
    out[radius : radius + h, radius : radius + w] = array
    out[:radius, radius : radius + w] = array[0]
    out[radius + h :, radius : radius + w] = array[-1]
    out[:, :radius] = out[:, radius : radius + 1]
    out[:, radius + w :] = out[:, radius + w - 1 : radius + w]
    return out


def _box_blur(array: np.ndarray, radius: int) -> np.ndarray:
    padded = _pad_edge(array, radius)
    summed = padded.cumsum(0).cumsum(1)
    cumulative = np.zeros((summed.shape[0] + 1, summed.shape[1] + 1), dtype=summed.dtype)
    cumulative[1:, 1:] = summed
    size = 2 * radius + 1
    h, w = array.shape
    total = (
        cumulative[size : size + h, size : size + w]
        - cumulative[0:h, size : size + w]
        - cumulative[size : size + h, 0:w]
        + cumulative[0:h, 0:w]
    )
    return total / (size * size)


def _normalise(array: np.ndarray) -> np.ndarray:
    low, high = float(array.min()), float(array.max())
    return (array - low) / (high - low) if high - low > 1e-9 else np.zeros_like(array)


def spectral_residual(grey: np.ndarray) -> np.ndarray:
    spectrum = np.fft.fft2(grey)
    amplitude = np.log(np.abs(spectrum) + 1e-9)
    phase = np.angle(spectrum)
    residual = amplitude - _box_blur(amplitude, 1)
    saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * phase))) ** 2
    return _normalise(saliency)


def colour_contrast(rgb: np.ndarray) -> np.ndarray:
    """Distance in CIELAB of each (slightly blurred) pixel from the image's mean colour."""
    lab = srgb_to_lab(rgb.reshape(-1, 3)).reshape(rgb.shape)
    blurred = np.stack([_box_blur(lab[..., c], 1) for c in range(3)], axis=-1)
    return _normalise(np.linalg.norm(blurred - lab.reshape(-1, 3).mean(0), axis=-1))


def saliency_map(image: Image.Image, size: tuple[int, int] | None = None) -> np.ndarray:
    """Saliency in [0, 1] as a float32 array of ``size`` (width, height), default the work size."""
    small = image.convert("RGB").copy()
    small.thumbnail((WORK_SIZE, WORK_SIZE), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float64) / 255.0
    grey = rgb @ np.array([0.299, 0.587, 0.114])
    combined = 0.4 * spectral_residual(grey) + 0.6 * colour_contrast(rgb)
    smooth = Image.fromarray((_normalise(combined) * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(radius=2))
    if size is not None:
        smooth = smooth.resize(size, Image.Resampling.BILINEAR)
    return _normalise(np.asarray(smooth, dtype=np.float32))


def centre_prior(size: tuple[int, int], box: tuple[float, float, float, float]) -> np.ndarray:
    """Without an image: saliency where the product photo will go (a soft box), for a (w, h) grid."""
    width, height = size
    xs = (np.arange(width) + 0.5) / width
    ys = (np.arange(height) + 0.5) / height
    left, top, right, bottom = box
    cx, cy = (left + right) / 2, (top + bottom) / 2
    sx, sy = max((right - left) / 2, 1e-3), max((bottom - top) / 2, 1e-3)
    dx = np.clip(np.abs(xs - cx) / sx, 0, None)[None, :]
    dy = np.clip(np.abs(ys - cy) / sy, 0, None)[:, None]
    return np.exp(-0.5 * (np.maximum(dx, dy) / 0.9) ** 6).astype(np.float32)
