"""Photo quality gate: resolution, blur, exposure and glare, measured on the model-size image.

Measuring on the pixels the model sees keeps the gate cheap (well under a millisecond per photo)
and consistent with training: the limits are learned per view from the training photos (see
``calibration.QualityLimits``) with absolute floors, so a black-leather close-up is not "too dark"
and a white studio backdrop is not "glare".
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import BaseModel

STAT_NAMES = ("brightness", "contrast", "log_sharpness", "saturation", "edge_density", "warmth")


@dataclass(frozen=True)
class QualityMetrics:
    width: int
    height: int
    brightness: float  # mean luminance in [0, 1]
    contrast: float  # std of luminance
    sharpness: float  # variance of the Laplacian of the luminance (0-255 scale)
    dark_fraction: float  # pixels below 6% luminance
    clipped_fraction: float  # pixels above 97% luminance
    glare_fraction: float  # near-white, colourless pixels (specular highlights)
    saturation: float
    edge_density: float  # share of pixels on a strong edge
    warmth: float  # mean (R - B), a cheap colour-cast statistic

    def stats(self) -> list[float]:
        """The image-statistics vector the out-of-distribution check compares with training."""
        return [self.brightness, self.contrast, float(np.log1p(self.sharpness)), self.saturation, self.edge_density, self.warmth]

    def as_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def measure(pixels: np.ndarray, width: int, height: int) -> QualityMetrics:
    """Metrics of a uint8 RGB image (the model-size crop); ``width``/``height`` are the original's."""
    rgb = pixels.astype(np.float32) * (1.0 / 255.0)
    gray = cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    lum = gray.astype(np.float32) * (1.0 / 255.0)
    laplacian = cv2.Laplacian(gray, cv2.CV_32F)
    # Channel max/min on uint8 planes: numpy's reduction over a length-3 last axis is ~50x slower.
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    high = np.maximum(np.maximum(r, g), b).astype(np.float32) * (1.0 / 255.0)
    low = np.minimum(np.minimum(r, g), b).astype(np.float32) * (1.0 / 255.0)
    chroma = high - low
    edges = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1))
    return QualityMetrics(
        width=int(width),
        height=int(height),
        brightness=float(lum.mean()),
        contrast=float(lum.std()),
        sharpness=float(laplacian.var()),
        dark_fraction=float((lum < 0.06).mean()),
        clipped_fraction=float((lum > 0.97).mean()),
        glare_fraction=float(((lum > 0.92) & (chroma < 0.08)).mean()),
        saturation=float((chroma / np.maximum(high, 1e-3)).mean()),
        edge_density=float((edges > 160.0).mean()),
        warmth=float((rgb[..., 0] - rgb[..., 2]).mean()),
    )


class QualityLimits(BaseModel):
    """Per-view limits; the defaults are absolute floors used when no training data set them."""

    min_side: int = 224
    min_sharpness: float = 8.0
    min_brightness: float = 0.08
    max_brightness: float = 0.94
    max_dark_fraction: float = 0.6
    max_clipped_fraction: float = 0.25
    max_glare_fraction: float = 0.08


@dataclass(frozen=True)
class Finding:
    code: str  # resolution | blur | underexposed | overexposed | glare | wrong_view | out_of_distribution
    message: str
    guidance: str


def check_quality(metrics: QualityMetrics, limits: QualityLimits) -> list[Finding]:
    """Every reason the photo is unusable, each with what to do about it (empty when usable)."""
    findings: list[Finding] = []
    if min(metrics.width, metrics.height) < limits.min_side:
        findings.append(Finding(
            "resolution",
            f"the photo is {metrics.width}x{metrics.height} pixels; at least {limits.min_side} per side is needed",
            "take the photo with the phone's main camera at full resolution, without cropping it small",
        ))
    if metrics.sharpness < limits.min_sharpness:
        findings.append(Finding(
            "blur",
            f"the photo is blurred (sharpness {metrics.sharpness:.1f}, needs {limits.min_sharpness:.1f})",
            "hold the camera still, tap to focus on the detail, and keep about 15 cm away",
        ))
    if metrics.brightness < limits.min_brightness or metrics.dark_fraction > limits.max_dark_fraction:
        findings.append(Finding(
            "underexposed",
            f"the photo is too dark (brightness {metrics.brightness:.2f}, {metrics.dark_fraction:.0%} nearly black)",
            "photograph in daylight or under an even lamp; avoid shadows over the detail",
        ))
    if metrics.brightness > limits.max_brightness or metrics.clipped_fraction > limits.max_clipped_fraction:
        findings.append(Finding(
            "overexposed",
            f"the photo is too bright (brightness {metrics.brightness:.2f}, {metrics.clipped_fraction:.0%} washed out)",
            "turn off the flash and move out of direct sunlight",
        ))
    if metrics.glare_fraction > limits.max_glare_fraction:
        findings.append(Finding(
            "glare",
            f"glare covers {metrics.glare_fraction:.0%} of the photo",
            "tilt the item or the camera slightly so that reflections leave the detail; turn off the flash",
        ))
    return findings


def learn_limits(metrics: list[QualityMetrics], min_side: int) -> QualityLimits:
    """Per-view limits from training photos: generous margins outside what good photos show."""
    defaults = QualityLimits(min_side=min_side)
    if len(metrics) < 10:
        return defaults
    sharp = np.array([m.sharpness for m in metrics])
    bright = np.array([m.brightness for m in metrics])
    dark = np.array([m.dark_fraction for m in metrics])
    clipped = np.array([m.clipped_fraction for m in metrics])
    glare = np.array([m.glare_fraction for m in metrics])
    return QualityLimits(
        min_side=min_side,
        min_sharpness=float(max(defaults.min_sharpness * 0.5, np.quantile(sharp, 0.005) * 0.35)),
        min_brightness=float(np.clip(np.quantile(bright, 0.002) - 0.05, 0.03, defaults.min_brightness)),
        max_brightness=float(np.clip(np.quantile(bright, 0.998) + 0.05, defaults.max_brightness, 0.985)),
        max_dark_fraction=float(np.clip(np.quantile(dark, 0.998) + 0.15, defaults.max_dark_fraction, 0.95)),
        max_clipped_fraction=float(np.clip(np.quantile(clipped, 0.998) + 0.1, defaults.max_clipped_fraction, 0.9)),
        max_glare_fraction=float(np.clip(np.quantile(glare, 0.998) + 0.05, defaults.max_glare_fraction, 0.9)),
    )
