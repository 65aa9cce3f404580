"""Surface materials: pebbled leather, coated canvas with a monogram, woven lining, plated metal."""

from __future__ import annotations

import cv2
import numpy as np

from kiln.apps.authenticity.synth.noise import blur, colorize, fbm, pebble, shade, specular
from kiln.apps.authenticity.synth.text import TextStyle, text_mask

Array = np.ndarray


def jitter_color(rng: np.random.Generator, color: tuple[float, float, float] | Array, amount: float) -> Array:
    """A colour with small natural variation (dye lots, lighting): ``amount`` is the relative spread."""
    c = np.asarray(color, np.float32)
    return np.clip(c * (1.0 + rng.normal(0.0, amount, 3).astype(np.float32)), 0.0, 1.0)


def leather(rng: np.random.Generator, size: int, color: Array, grain_px: float, relief: Array | None = None,
            relief_depth: float = 0.0) -> tuple[Array, Array]:
    """Pebbled leather lit from the upper left; ``relief`` (HxW in [0,1]) is pressed into it.

    Returns (RGB image, height field) so callers can add more relief and reshade.
    """
    grain = pebble(rng, size, grain_px) * 0.7 + fbm(rng, size, size / (grain_px * 5.0), octaves=2) * 0.3
    # Grain relief scales with the cell size so that the slope (and so the shading) stays the same.
    height = blur(grain, grain_px * 0.12) * (grain_px * 0.045)
    if relief is not None:
        height = height - blur(relief, max(0.8, size / 400.0)) * relief_depth * (size / 320.0)
    light = shade(height, strength=1.0)
    mottling = 0.92 + 0.08 * fbm(rng, size, 3.0, octaves=2)
    gloss = specular(height, 1.0, 10.0) * 0.12
    image = colorize(np.clip(light, 0.35, 1.5) * mottling, color) + gloss[..., None]
    return image.astype(np.float32), height


def canvas(rng: np.random.Generator, size: int, color: Array, motif: Array | None, motif_pitch: float) -> Array:
    """Coated canvas: fine cross-weave grain plus a printed, tiled monogram in ``motif`` colour."""
    axis = np.arange(size, dtype=np.float32)
    y, x = axis[:, None], axis[None, :]
    period = max(2.2, size / 110.0)
    weave = 0.5 + 0.25 * np.sin(x * (2 * np.pi / period)) * np.sin(y * (2 * np.pi / period) + 1.3)
    grain = fbm(rng, size, size / 18.0, octaves=2)
    base = colorize(0.86 + 0.1 * weave + 0.08 * grain, color)
    if motif is not None:
        tile = _monogram_tile(rng, size, motif_pitch)
        base = base * (1.0 - tile[..., None] * 0.85) + colorize(tile * 0.85, motif)
    height = grain * 0.3 + weave * 0.2
    return (base * np.clip(shade(height, 1.5), 0.6, 1.3)[..., None]).astype(np.float32)


def _monogram_tile(rng: np.random.Generator, size: int, pitch: float) -> Array:
    """A repeating diamond-and-quatrefoil print; ``pitch`` is the repeat in pixels."""
    p = max(8, int(pitch))
    tile = np.zeros((p, p), np.float32)
    c = p / 2.0
    diamond = np.array([[c, p * 0.12], [p * 0.88, c], [c, p * 0.88], [p * 0.12, c]], np.int32)
    cv2.polylines(tile, [diamond], True, 1.0, max(1, p // 18), cv2.LINE_AA)
    cv2.circle(tile, (int(c), int(c)), max(1, p // 9), 1.0, -1, cv2.LINE_AA)
    for dx, dy in ((0, 0), (p, 0), (0, p), (p, p)):
        cv2.circle(tile, (dx, dy), max(1, p // 7), 1.0, max(1, p // 20), cv2.LINE_AA)
    reps = size // p + 2
    offset = int(rng.integers(0, p))
    tiled = np.tile(tile, (reps, reps))
    return tiled[offset : offset + size, offset : offset + size]


def fabric(rng: np.random.Generator, size: int, pattern: str, colors: tuple[Array, Array], pitch: float,
           monogram: str, font: str, registration: tuple[float, float] = (0.0, 0.0), motif_scale: float = 1.0,
           wobble: float = 0.0, ghost: float = 0.0, flaw_rng: np.random.Generator | None = None) -> Array:
    """Woven lining with a printed ``pattern``; ``registration`` offsets the print layer (pixels).

    ``wobble`` (fraction of the pitch) makes the repeat irregular, as a badly tensioned print does;
    ``ghost`` (pixels) prints a misregistered second pass beside the pattern.
    """
    axis = np.arange(size, dtype=np.float32)
    y, x = axis[:, None], axis[None, :]
    thread = max(1.6, size / 150.0)
    warp = 0.5 + 0.5 * np.cos(x * (2 * np.pi / thread))
    weft = 0.5 + 0.5 * np.cos(y * (2 * np.pi / thread))
    weave = 0.82 + 0.1 * np.where((np.floor(x / thread) + np.floor(y / thread)) % 2 == 0, warp, weft)
    slub = 0.95 + 0.05 * fbm(rng, size, size / 40.0, octaves=2)
    bg, fg = colors
    px, py = registration
    xx, yy = x + px, y + py
    p = max(6.0, pitch)
    mask: np.ndarray
    if pattern == "stripes":
        mask = ((xx + yy * 0.0) % p < p * 0.35 * motif_scale).astype(np.float32)
    elif pattern == "dots":
        cx = (xx % p) - p / 2
        cy = ((yy + (np.floor(xx / p) % 2) * p / 2) % p) - p / 2
        mask = (cx * cx + cy * cy < (p * 0.18 * motif_scale) ** 2).astype(np.float32)
    elif pattern == "diamonds":
        u = np.abs((xx % p) - p / 2) + np.abs((yy % p) - p / 2)
        mask = ((u > p * 0.36 * motif_scale) & (u < p * 0.48)).astype(np.float32)
    else:  # monogram: the brand initials repeated in a half-drop
        glyph = text_mask(monogram, TextStyle(font=font, px=max(8, int(p * 0.45 * motif_scale))))
        tile = np.zeros((int(p), int(p)), np.float32)
        gh, gw = glyph.shape
        gh, gw = min(gh, tile.shape[0]), min(gw, tile.shape[1])
        oy, ox = (tile.shape[0] - gh) // 2, (tile.shape[1] - gw) // 2
        tile[oy : oy + gh, ox : ox + gw] = glyph[:gh, :gw]
        reps = size // tile.shape[0] + 3
        big = np.tile(tile, (reps, reps))
        offset = np.array([[1, 0, -px - p], [0, 1, -py - p]], dtype=np.float32)
        mask = cv2.warpAffine(big, offset, (size, size), flags=cv2.INTER_LINEAR)
    if wobble > 0:
        frng = flaw_rng or rng
        dx = (fbm(frng, size, size / (p * 1.5), octaves=2) - 0.5) * 2.0 * wobble * p
        dy = (fbm(frng, size, size / (p * 1.5), octaves=2) - 0.5) * 2.0 * wobble * p
        grid = np.arange(size, dtype=np.float32)
        mask = cv2.remap(mask.astype(np.float32), grid[None, :] + dx, grid[:, None] + dy, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT101)
    mask = blur(mask, thread * 0.35)
    cloth = weave * slub
    image = colorize(cloth, bg) * (1 - mask[..., None]) + colorize(cloth, fg) * mask[..., None]
    if ghost > 0:
        shift = (round(ghost), round(ghost * 0.6))
        halo = np.clip(np.roll(mask, shift, axis=(0, 1)) - mask, 0.0, 1.0)
        image = image * (1 - 0.75 * halo[..., None]) + colorize(cloth, fg * 0.8) * (0.75 * halo[..., None])
    return image.astype(np.float32)


def metal(rng: np.random.Generator, mask: Array, finish: Array, engraving: Array | None, *, sheen: float = 1.0,
          pitting: float = 0.0, brushed: bool = True, flaw_rng: np.random.Generator | None = None) -> tuple[Array, Array]:
    """Plated metal inside ``mask``: bevelled edges, brushed grain, engraving grooves, highlights.

    Returns (RGB, alpha). ``sheen`` < 1 gives a duller, cheaper plating; ``pitting`` adds dark flaws.
    """
    size = mask.shape[0]
    binary = (mask > 0.5).astype(np.uint8)
    bevel = cv2.distanceTransform(binary, cv2.DIST_L2, 3)
    bevel = np.clip(bevel / max(size * 0.025, 1.0), 0.0, 1.0)
    height = np.sqrt(bevel)
    if brushed:
        streaks = cv2.blur(rng.random((size, size), dtype=np.float32), (max(3, size // 12), 1))
        height = height + (streaks - 0.5) * 0.04
    if engraving is not None:
        height = height - blur(engraving, max(0.6, size / 500.0)) * 0.35
    diffuse = np.clip(shade(height, 6.0), 0.15, 1.8)
    highlight = specular(height, 6.0, 40.0 * max(sheen, 0.2)) * 1.1 * sheen
    sky = 0.75 + 0.35 * np.linspace(1.0, 0.0, size, dtype=np.float32)[:, None]
    body = colorize(diffuse * 0.68 * sky, finish)
    tint = np.clip(np.asarray(finish, np.float32) * 0.4 + 0.6, 0.0, 1.0)
    image = body + colorize(highlight, tint)
    if engraving is not None:
        image = image * (1.0 - 0.45 * engraving[..., None])
    if pitting > 0:
        flaws = (fbm(flaw_rng or rng, size, size / 9.0, octaves=3) > 1.0 - 0.25 * pitting).astype(np.float32)
        image = image * (1.0 - 0.5 * blur(flaws, 1.0)[..., None])
    alpha = blur(binary.astype(np.float32), 0.8)
    return np.clip(image, 0.0, 1.5).astype(np.float32), alpha
