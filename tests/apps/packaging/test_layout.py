"""Acceptance 3: PosterLayout metrics on 60 synthetic product shots.

Criteria (means over the 60 images, the figures DS-GAN reports on PosterLayout): overlap ≤ 0.022,
alignment ≤ 0.0046, occlusion of the salient area ≤ 0.21. Each image is a product silhouette
(bottle, box or jar, with a label band and a soft shadow) at a random position and size on a
gradient background with sensor noise, rendered offline by the test.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from kiln.apps.packaging.layout import grid_shape, plan_layout
from kiln.apps.packaging.layout_metrics import alignment, gradient_map, iou, layout_metrics, overlap
from kiln.apps.packaging.saliency import saliency_map


def product_shot(rng: np.random.Generator, size: tuple[int, int] = (480, 640)) -> Image.Image:
    width, height = size
    top, bottom = rng.integers(150, 256, 3), rng.integers(120, 230, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    background = (top * (1 - ramp) + bottom * ramp) * np.ones((height, width, 3))
    image = Image.fromarray(np.clip(background + rng.normal(0, 4, background.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    scale = float(rng.uniform(0.2, 0.5))
    w, h = scale * width, scale * height * float(rng.uniform(0.8, 1.5))
    cx, cy = float(rng.uniform(w / 2 + 10, width - w / 2 - 10)), float(rng.uniform(h / 2 + 10, height - h / 2 - 10))
    shadow = Image.new("L", size, 0)
    ImageDraw.Draw(shadow).ellipse([cx - w / 2, cy + h / 2 - 12, cx + w / 2, cy + h / 2 + 12], fill=90)
    image.paste((40, 40, 40), mask=shadow.filter(ImageFilter.GaussianBlur(8)))
    colour = tuple(int(v) for v in rng.integers(0, 160, 3))
    kind = int(rng.integers(0, 3))
    if kind == 0:  # bottle
        draw.rounded_rectangle([cx - w / 2, cy - h / 2 + h * 0.25, cx + w / 2, cy + h / 2], radius=int(w / 3), fill=colour)
        draw.rectangle([cx - w / 6, cy - h / 2, cx + w / 6, cy - h / 2 + h * 0.27], fill=colour)
    elif kind == 1:  # box
        draw.rectangle([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=colour)
    else:  # jar
        draw.rounded_rectangle([cx - w / 2, cy - h / 3, cx + w / 2, cy + h / 2], radius=int(w / 6), fill=colour)
        draw.rectangle([cx - w / 2.2, cy - h / 2, cx + w / 2.2, cy - h / 3], fill=tuple(255 - c for c in colour))
    band = tuple(int(v) for v in rng.integers(100, 256, 3))
    draw.rectangle([cx - w / 2, cy, cx + w / 2, cy + h * 0.15], fill=band)
    return image


def test_layout_metrics_on_sixty_product_shots() -> None:
    rng = np.random.default_rng(2023)
    rows = []
    for index in range(60):
        image = product_shot(rng)
        panel = (90.0, 120.0) if index % 3 else (120.0, 120.0)
        shape = grid_shape(panel)
        fitted = image.resize((shape[1] * 8, shape[0] * 8))
        saliency = saliency_map(fitted, (shape[1], shape[0]))
        gradient = gradient_map(np.asarray(fitted.convert("L").resize((shape[1], shape[0])), dtype=np.float64))
        layout = plan_layout(panel, align=("center", "left")[index % 2], margin=0.08, rng=np.random.default_rng(index),
                             saliency=saliency, gradient=gradient)
        m = layout.metrics
        assert m.validity == 1.0
        rows.append((m.overlap, m.alignment, m.occlusion))
    mean_overlap, mean_alignment, mean_occlusion = np.mean(rows, axis=0)
    assert mean_overlap <= 0.022
    assert mean_alignment <= 0.0046
    assert mean_occlusion <= 0.21


def test_metric_definitions() -> None:
    assert iou((0, 0, 0.5, 0.5), (0.25, 0.25, 0.75, 0.75)) == 0.0625 / (0.25 + 0.25 - 0.0625)
    assert overlap([(0, 0, 0.5, 0.5), (0, 0, 0.5, 0.5)]) == 0.5  # one pair with IoU 1, two elements
    assert alignment([(0.1, 0.1, 0.3, 0.2), (0.1, 0.5, 0.4, 0.6)]) == 0.0  # shared left edge
    assert alignment([(0.1, 0.1, 0.3, 0.2), (0.2, 0.5, 0.45, 0.65)]) > 0.05
    saliency = np.zeros((10, 10), dtype=np.float32)
    saliency[:5] = 1.0
    top = layout_metrics([(0, 0, 1, 0.5)], saliency)
    bottom = layout_metrics([(0, 0.5, 1, 1)], saliency)
    assert top.occlusion == 1.0 and bottom.occlusion == 0.0
    assert bottom.utilization == 1.0


def test_text_avoids_the_product() -> None:
    image = product_shot(np.random.default_rng(1))
    shape = grid_shape((90.0, 120.0))
    layout = plan_layout((90.0, 120.0), align="center", margin=0.08, rng=np.random.default_rng(0),
                         saliency=saliency_map(image, (shape[1], shape[0])))
    product = layout.element("product").box
    for element in layout.overlay:
        assert iou(element.box, product) == 0.0
