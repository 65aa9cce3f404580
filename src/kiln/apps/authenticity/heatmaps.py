"""Heatmap images: the engine's class-activation map drawn over the region of the photo it saw.

Colours: red where the photo looked counterfeit to the model, blue where it looked authentic;
opacity grows with the strength of the evidence. The model saw the centre square of the photo,
so the map covers that square and the margins stay transparent. Rendered on request (lazily),
never on the authentication hot path.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Diverging colour stops from authentic (-1) to counterfeit (+1).
_STOPS = np.array([
    [-1.0, 33, 102, 172],
    [-0.4, 103, 169, 207],
    [0.0, 247, 247, 247],
    [0.4, 239, 138, 98],
    [1.0, 178, 24, 43],
], dtype=np.float32)

DISPLAY_SIZE = 512


def _colour(values: np.ndarray) -> np.ndarray:
    """Values in [-1, 1] → uint8 RGB."""
    channels = [np.interp(values, _STOPS[:, 0], _STOPS[:, i]) for i in (1, 2, 3)]
    return np.stack(channels, axis=-1).astype(np.uint8)


def heatmap_rgba(heatmap: list[list[float]] | np.ndarray, width: int, height: int, scale: float | None = None) -> Image.Image:
    """An RGBA image of ``width``×``height`` with the map over the centre square (the model's view)."""
    grid = np.asarray(heatmap, dtype=np.float32)
    if grid.ndim != 2 or grid.size == 0:
        return Image.new("RGBA", (width, height), (0, 0, 0, 0))
    scale = scale or float(max(np.abs(grid).max(), 1e-6))
    norm = np.clip(grid / scale, -1.0, 1.0)
    side = min(width, height)
    small = Image.fromarray(((norm + 1.0) * 127.5).astype(np.uint8), mode="L")
    smooth = np.asarray(small.resize((side, side), Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1.0
    rgba = np.zeros((side, side, 4), np.uint8)
    rgba[..., :3] = _colour(smooth)
    rgba[..., 3] = (40 + 170 * np.abs(smooth)).astype(np.uint8)
    canvas = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    canvas.paste(Image.fromarray(rgba, mode="RGBA"), ((width - side) // 2, (height - side) // 2))
    return canvas


def display_photo(data: bytes, max_side: int = DISPLAY_SIZE) -> Image.Image:
    """The uploaded photo, upright and downscaled for display (JPEG decoded in the DCT domain)."""
    from kiln.engine.images import to_rgb

    with Image.open(io.BytesIO(data)) as image:
        if image.format == "JPEG":
            image.draft("RGB", (max_side, max_side))
        image.load()
        rgb = to_rgb(image)
    rgb.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
    return rgb


def heatmap_png(heatmap: list[list[float]], photo: bytes, max_side: int = DISPLAY_SIZE, scale: float | None = None) -> bytes:
    """Transparent heatmap PNG sized like the displayed photo, for layering in a page."""
    shown = display_photo(photo, max_side)
    buffer = io.BytesIO()
    heatmap_rgba(heatmap, *shown.size, scale=scale).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def overlay_jpeg(heatmap: list[list[float]], photo: bytes, max_side: int = DISPLAY_SIZE, quality: int = 85,
                 scale: float | None = None) -> bytes:
    """The photo with its heatmap blended in (reports and quick looks)."""
    shown = display_photo(photo, max_side).convert("RGBA")
    blended = Image.alpha_composite(shown, heatmap_rgba(heatmap, *shown.size, scale=scale)).convert("RGB")
    buffer = io.BytesIO()
    blended.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def thumbnail_jpeg(photo: bytes, max_side: int = 256, quality: int = 82) -> bytes:
    buffer = io.BytesIO()
    display_photo(photo, max_side).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
