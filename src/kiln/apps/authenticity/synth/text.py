"""Text masks with controllable tracking, per-letter kerning, baseline, rotation and stroke weight.

Fonts come from matplotlib's bundled TrueType files (a kiln dependency), so the generator gives
the same images on every machine without system fonts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kiln.errors import KilnError


@lru_cache(maxsize=1)
def font_dir() -> Path:
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    if not path.is_dir():
        raise KilnError(f"matplotlib's font folder {path} is missing", hint="reinstall matplotlib")
    return path


@lru_cache(maxsize=256)
def load_font(name: str, px: int) -> ImageFont.FreeTypeFont:
    path = font_dir() / name
    if not path.is_file():
        raise KilnError(f"font {name} not found in {font_dir()}")
    return ImageFont.truetype(str(path), max(4, px))


@dataclass
class TextStyle:
    """How a string is set: font file, size in pixels, tracking (fraction of size) and distortions."""

    font: str
    px: int
    tracking: float = 0.0
    kerning: list[float] = field(default_factory=list)  # extra advance per gap, fraction of px
    baseline: list[float] = field(default_factory=list)  # vertical offset per letter, fraction of px
    rotation: list[float] = field(default_factory=list)  # degrees per letter
    weight: int = 0  # >0 dilates (bolder, ink bleed), <0 erodes (thinner)
    stretch: float = 1.0  # horizontal scale of the whole word


def text_mask(text: str, style: TextStyle) -> np.ndarray:
    """Float32 mask in [0, 1], cropped to the ink with a small margin."""
    font = load_font(style.font, style.px)
    px = style.px
    pad = px
    advances = [font.getlength(ch) for ch in text]
    width = int(sum(advances) + abs(style.tracking) * px * len(text) + px * (2 + len(text) * 0.6)) + 2 * pad
    height = int(px * 2.2) + 2 * pad
    canvas = Image.new("L", (width, height), 0)
    x = float(pad)
    baseline_y = pad + px * 0.2
    for index, ch in enumerate(text):
        dy = style.baseline[index] * px if index < len(style.baseline) else 0.0
        angle = style.rotation[index] if index < len(style.rotation) else 0.0
        if ch != " ":
            if abs(angle) > 0.05:
                glyph = Image.new("L", (int(px * 1.6), int(px * 1.8)), 0)
                ImageDraw.Draw(glyph).text((int(px * 0.3), int(px * 0.2)), ch, fill=255, font=font)
                glyph = glyph.rotate(angle, resample=Image.Resampling.BILINEAR, center=(px * 0.8, px * 0.9))
                canvas.paste(glyph, (int(x - px * 0.3), int(baseline_y + dy - px * 0.2)), glyph)
            else:
                ImageDraw.Draw(canvas).text((x, baseline_y + dy), ch, fill=255, font=font)
        x += advances[index] + style.tracking * px
        if index < len(style.kerning):
            x += style.kerning[index] * px
    mask: np.ndarray = np.asarray(canvas, np.float32) * (1.0 / 255.0)
    if style.weight:
        k = 2 * abs(style.weight) + 1
        kernel = np.ones((k, k), np.uint8)
        mask = cv2.dilate(mask, kernel) if style.weight > 0 else cv2.erode(mask, kernel)
    ys, xs = np.nonzero(mask > 0.05)
    if len(xs) == 0:
        return np.zeros((max(1, px), max(1, px)), np.float32)
    margin = max(2, px // 6)
    y0, y1 = max(0, ys.min() - margin), min(mask.shape[0], ys.max() + margin + 1)
    x0, x1 = max(0, xs.min() - margin), min(mask.shape[1], xs.max() + margin + 1)
    mask = mask[y0:y1, x0:x1]
    if abs(style.stretch - 1.0) > 1e-3:
        mask = cv2.resize(mask, (max(1, int(mask.shape[1] * style.stretch)), mask.shape[0]), interpolation=cv2.INTER_LINEAR)
    return mask


def place(mask: np.ndarray, size: int, center: tuple[float, float], width: float | None = None, angle: float = 0.0) -> np.ndarray:
    """Puts ``mask`` on a size×size canvas centred at ``center`` (pixels), scaled to ``width``, rotated."""
    scale = (width / mask.shape[1]) if width else 1.0
    h, w = mask.shape
    matrix = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    matrix[0, 2] += center[0] - w / 2.0
    matrix[1, 2] += center[1] - h / 2.0
    return cv2.warpAffine(mask, matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0.0)
