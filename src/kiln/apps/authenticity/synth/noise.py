"""Procedural noise and shading primitives on float32 arrays (fast: numpy and OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

Array = np.ndarray


def value_noise(rng: np.random.Generator, size: int, cells: float) -> Array:
    """Smooth noise in [0, 1] with about ``cells`` features across the image."""
    n = max(2, round(cells) + 2)
    grid = rng.random((n, n), dtype=np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)


def fbm(rng: np.random.Generator, size: int, cells: float, octaves: int = 3, gain: float = 0.5) -> Array:
    """Fractal noise (sum of octaves), normalised to [0, 1]."""
    total = np.zeros((size, size), np.float32)
    amplitude, weight = 1.0, 0.0
    for octave in range(octaves):
        total += amplitude * value_noise(rng, size, cells * (2**octave))
        weight += amplitude
        amplitude *= gain
    total /= weight
    low, high = float(total.min()), float(total.max())
    return (total - low) / max(high - low, 1e-6)


def pebble(rng: np.random.Generator, size: int, cell_px: float) -> Array:
    """Pebbled-leather height field: domes around random seeds with creases between them (Worley F1)."""
    count = max(4, int((size / max(cell_px, 1.0)) ** 2 * 1.3))
    seeds = np.full((size, size), 255, np.uint8)
    xs = rng.integers(0, size, count)
    ys = rng.integers(0, size, count)
    seeds[ys, xs] = 0
    distance = cv2.distanceTransform(seeds, cv2.DIST_L2, 3)
    height = 1.0 - np.clip(distance / max(cell_px * 0.75, 1.0), 0.0, 1.0)
    return np.sqrt(height).astype(np.float32)


def shade(height: Array, strength: float, light: tuple[float, float, float] = (-0.5, -0.6, 0.62)) -> Array:
    """Lambert shading of a height field lit from ``light`` (x, y, z); 1.0 on a flat surface."""
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) * strength
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) * strength
    lx, ly, lz = light
    norm = float(np.sqrt(lx * lx + ly * ly + lz * lz))
    lx, ly, lz = lx / norm, ly / norm, lz / norm
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    lambert = (-gx * lx - gy * ly + lz) * inv
    return (lambert / lz).astype(np.float32)


def specular(height: Array, strength: float, shininess: float, light: tuple[float, float, float] = (-0.4, -0.5, 0.77)) -> Array:
    """Blinn-Phong highlight of a height field seen from straight above."""
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) * strength
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) * strength
    lx, ly, lz = light
    hx, hy, hz = lx, ly, lz + 1.0
    hn = float(np.sqrt(hx * hx + hy * hy + hz * hz))
    inv = 1.0 / np.sqrt(gx * gx + gy * gy + 1.0)
    cos = np.clip((-gx * hx - gy * hy + hz) * inv / hn, 0.0, 1.0)
    return (cos**shininess).astype(np.float32)


def blur(image: Array, sigma: float) -> Array:
    if sigma <= 0.05:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigma)


def colorize(gray: Array, color: Array | tuple[float, float, float]) -> Array:
    """HxW intensity times an RGB colour → HxWx3."""
    return np.multiply(gray[..., None], np.asarray(color, np.float32)[None, None, :], dtype=np.float32)


def mix(base: Array, top: Array | Array, alpha: Array) -> Array:
    """Alpha-composite ``top`` (HxWx3 or RGB) over ``base`` with an HxW alpha in [0, 1]."""
    out = np.subtract(np.asarray(top, np.float32), base, dtype=np.float32)
    out *= alpha[..., None]
    out += base
    return out
