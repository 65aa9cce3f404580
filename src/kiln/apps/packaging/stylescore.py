"""Main-image style score: colour and texture statistics of an image → probability per style.

The features (``image_features``) are computed here in numpy from a small copy of the image; the
learned part is an MLP served as a kiln engine (``style_scorer``, see ``models.py``). It is trained
at engine-build time on images rendered from the style taxonomy (``synthetic_style_images``):
each image is a panel in one style's generated palette with that style's decoration motif, a
product silhouette and text bars, so no data set is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from kiln.apps.packaging.colour import srgb_to_lab
from kiln.apps.packaging.palettes import ColourIntent, default_needs, generate_palette
from kiln.apps.packaging.styles import Style, taxonomy

FEATURE_SIZE = 64  # features are computed on a 64×64 copy
HUE_BINS = 12
LIGHTNESS_BINS = 6
FEATURE_NAMES: tuple[str, ...] = (
    "L_mean", "L_std", "L_p10", "L_p90", "C_mean", "C_std", "C_p90", "a_mean", "b_mean",
    *(f"hue_{i * 30}" for i in range(HUE_BINS)), "chromatic_fraction",
    *(f"L_bin_{i}" for i in range(LIGHTNESS_BINS)),
    "edge_mean", "edge_strong_fraction", "colourfulness", "gold_fraction", "dark_fraction", "bright_fraction",
)
FEATURES = len(FEATURE_NAMES)
# bump when features, synthetic data or training change: the engine is retrained
TRAINING_VERSION = 1


def image_features(image: Image.Image) -> np.ndarray:
    """34 statistics of colour (CIELAB), hue distribution, lightness distribution and texture."""
    small = image.convert("RGB")
    if small.size != (FEATURE_SIZE, FEATURE_SIZE):
        small = small.resize((FEATURE_SIZE, FEATURE_SIZE), Image.Resampling.BILINEAR)
    rgb = np.asarray(small, dtype=np.float64).reshape(-1, 3) / 255.0
    lab = srgb_to_lab(rgb)
    lightness, a, b = lab[:, 0], lab[:, 1], lab[:, 2]
    chroma = np.hypot(a, b)
    hue = np.degrees(np.arctan2(b, a)) % 360
    chromatic = chroma > 12
    hue_counts = np.bincount((hue[chromatic] // (360 / HUE_BINS)).astype(int), weights=chroma[chromatic], minlength=HUE_BINS)
    hue_hist = hue_counts / max(float(chroma[chromatic].sum()), 1e-6)
    l_counts = np.bincount(np.clip((lightness / (100 / LIGHTNESS_BINS)).astype(int), 0, LIGHTNESS_BINS - 1), minlength=LIGHTNESS_BINS)
    l_hist = l_counts / lightness.size
    grid = lightness.reshape(FEATURE_SIZE, FEATURE_SIZE)
    gx = np.abs(np.diff(grid, axis=1))[:-1, :]
    gy = np.abs(np.diff(grid, axis=0))[:, :-1]
    edges = np.hypot(gx, gy)
    r, g, bl = rgb[:, 0] * 255, rgb[:, 1] * 255, rgb[:, 2] * 255
    rg, yb = r - g, 0.5 * (r + g) - bl
    colourfulness = np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean())
    gold = (hue >= 60) & (hue <= 100) & (chroma > 25) & (lightness > 45) & (lightness < 88)
    values = [
        lightness.mean() / 100, lightness.std() / 50, np.percentile(lightness, 10) / 100, np.percentile(lightness, 90) / 100,
        chroma.mean() / 100, chroma.std() / 50, np.percentile(chroma, 90) / 100, a.mean() / 100, b.mean() / 100,
        *hue_hist, chromatic.mean(),
        *l_hist,
        edges.mean() / 20, (edges > 15).mean(), colourfulness / 100, gold.mean(), (lightness < 20).mean(), (lightness > 90).mean(),
    ]
    return np.asarray(values, dtype=np.float32)


# --- synthetic training images -----------------------------------------------------------------
class _IntDraws:
    """Python ints from a numpy generator (PIL's drawing calls want plain numbers)."""

    def __init__(self, generator: np.random.Generator) -> None:
        self.generator = generator

    def integers(self, low: int, high: int) -> int:
        return int(self.generator.integers(low, high))

    def uniform(self, low: float, high: float) -> float:
        return float(self.generator.uniform(low, high))


def _motif(draw: ImageDraw.ImageDraw, kind: str, size: tuple[int, int], colour: tuple[int, int, int], generator: np.random.Generator) -> None:
    width, height = size
    rng = _IntDraws(generator)
    if kind == "stripes":
        step = int(rng.integers(8, 16))
        for x in range(-height, width, step * 2):
            draw.polygon([(x, 0), (x + step, 0), (x + step + height, height), (x + height, height)], fill=colour)
    elif kind == "dots":
        for _ in range(int(rng.integers(12, 30))):
            x, y, r = rng.integers(0, width), rng.integers(0, height), rng.integers(3, 9)
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
    elif kind in ("frame", "badge", "stamp"):
        inset = int(rng.integers(4, 9))
        draw.rectangle([inset, inset, width - inset, height - inset], outline=colour, width=2 if kind == "frame" else 3)
        if kind != "frame":
            cx, cy, r = width // 2, int(height * 0.3), int(min(width, height) * 0.18)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=colour, width=3)
    elif kind == "waves":
        for row in range(3):
            base = int(height * (0.65 + 0.1 * row))
            points = [(x, base + 5 * np.sin(x / 9 + row)) for x in range(0, width + 1, 3)]
            draw.line(points, fill=colour, width=3)
    elif kind == "grid":
        step = int(rng.integers(10, 18))
        for x in range(0, width, step):
            draw.line([(x, 0), (x, height)], fill=colour, width=1)
        for y in range(0, height, step):
            draw.line([(0, y), (width, y)], fill=colour, width=1)
    elif kind == "leaves":
        for _ in range(int(rng.integers(4, 8))):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            w, h = int(rng.integers(8, 16)), int(rng.integers(16, 28))
            draw.ellipse([x, y, x + w, y + h], fill=colour)
    elif kind == "clouds":
        for _ in range(int(rng.integers(3, 6))):
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            for k in range(3):
                draw.arc([x + 6 * k, y, x + 6 * k + 14, y + 14], 180, 360, fill=colour, width=2)
    elif kind == "sparkle":
        for _ in range(int(rng.integers(8, 16))):
            x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(2, 5))
            draw.line([(x - r, y), (x + r, y)], fill=colour, width=1)
            draw.line([(x, y - r), (x, y + r)], fill=colour, width=1)
    elif kind == "blocks":
        for _ in range(2):
            x, y = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
            draw.rectangle([x, y, x + int(rng.integers(20, 50)), y + int(rng.integers(20, 60))], fill=colour)
    elif kind == "rule":
        y = int(height * rng.uniform(0.2, 0.8))
        draw.line([(6, y), (width - 6, y)], fill=colour, width=1)


def render_style_sample(style: Style, rng: np.random.Generator, size: tuple[int, int] = (96, 128)) -> Image.Image:
    """A small panel in one style: its palette, motif, a product silhouette and text bars."""
    intent = ColourIntent(light=float(rng.normal(0, 0.3)), cool=float(rng.normal(0, 0.4)), vivid=float(rng.normal(0, 0.3)))
    palette = generate_palette(style, intent, [], default_needs(), rng)
    c = palette.colours
    width, height = size
    image = Image.new("RGB", size, c["background"])
    draw = ImageDraw.Draw(image)
    _motif(draw, style.decoration, size, c["secondary"], rng)
    # product silhouette: bottle or box
    cx = int(width * rng.uniform(0.35, 0.65))
    w = int(width * rng.uniform(0.22, 0.4))
    top = int(height * rng.uniform(0.3, 0.45))
    if rng.random() < 0.5:
        draw.rounded_rectangle([cx - w // 2, top, cx + w // 2, height - 8], radius=w // 3, fill=c["primary"])
        draw.rectangle([cx - w // 6, top - 12, cx + w // 6, top], fill=c["primary"])
    else:
        draw.rectangle([cx - w // 2, top, cx + w // 2, height - 10], fill=c["primary"])
    draw.rectangle([cx - w // 3, top + 12, cx + w // 3, top + 22], fill=c["accent"])
    # heading and text bars
    x0 = 8 if style.align == "left" else width // 4
    draw.rectangle([x0, 10, x0 + int(width * 0.5), 20], fill=c["primary"])
    for row in range(int(rng.integers(1, 4))):
        y = 26 + row * 6
        draw.rectangle([x0, y, x0 + int(width * rng.uniform(0.25, 0.5)), y + 2], fill=c["text"])
    if style.id in ("vintage", "artisan"):
        noise = rng.normal(0, 10, (height, width, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
    if rng.random() < 0.3:
        image = image.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    return image


@dataclass
class StyleDataset:
    features: np.ndarray  # [n, FEATURES] float32
    labels: np.ndarray  # [n] int64 style index


def synthetic_dataset(per_style: int, seed: int) -> StyleDataset:
    rng = np.random.default_rng(seed)
    features, labels = [], []
    for index, style in enumerate(taxonomy()):
        for _ in range(per_style):
            features.append(image_features(render_style_sample(style, rng)))
            labels.append(index)
    return StyleDataset(np.stack(features), np.asarray(labels, dtype=np.int64))


def train_style_scorer(train: StyleDataset, *, epochs: int = 400, seed: int = 0) -> Any:
    """Full-batch Adam on the MLP of ``models.style_scorer``; deterministic for a given seed."""
    import torch

    from kiln.apps.packaging.models import StyleScorer

    torch.manual_seed(seed)
    model = StyleScorer(features=FEATURES, classes=len(taxonomy()))
    x = torch.from_numpy(train.features)
    y = torch.from_numpy(train.labels)
    with torch.no_grad():
        model.mean.copy_(x.mean(0))
        model.std.copy_(x.std(0).clamp(min=1e-3))
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(model.logits(x), y)
        loss.backward()
        optimiser.step()
    return model.eval()
