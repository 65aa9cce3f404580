"""PosterLayout metrics (Hsu et al., "PosterLayout", CVPR 2023; the figures DS-GAN is compared on).

Boxes are ``(left, top, right, bottom)`` in canvas fractions; saliency is a [0, 1] map of the
canvas. Following the paper's evaluation code, elements smaller than 0.1 % of the canvas are
invalid and left out, and *underlay* elements (here: the product image area, which is the
canvas content rather than something laid over it) are excluded from overlap.

- **validity** ``Val``: fraction of elements that are valid.
- **overlap** ``Ove``: Σ over pairs i<j of IoU(i, j), divided by the number of elements (lower is better).
- **alignment** ``Ali``: for each element, ``min`` over six alignment lines (left, top, centre-x,
  centre-y, right, bottom) of ``g(min_j |θ_i − θ_j|)`` with ``g(x) = −log(1 − x)``, summed over
  elements (Li et al., Attribute-conditioned LayoutGAN). The published eval.py takes the smallest
  gap over all pairs n times, which is never larger than this per-element form.
- **occlusion** ``Occ``: mean saliency under the union of the elements (lower is better).
- **utilization** ``Uti``: share of the non-salient area ``Σ(1 − S)`` that the elements cover.
- **unreadability** ``Rea``: mean Sobel gradient magnitude of the background (normalised by its
  maximum) under text elements (lower is better); 0 for a flat background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]
MIN_AREA = 0.001


@dataclass(frozen=True)
class LayoutMetrics:
    validity: float
    overlap: float
    alignment: float
    occlusion: float
    utilization: float
    unreadability: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {
            "validity": round(self.validity, 4),
            "overlap": round(self.overlap, 5),
            "alignment": round(self.alignment, 5),
            "occlusion": round(self.occlusion, 4),
            "utilization": round(self.utilization, 4),
            "unreadability": None if self.unreadability is None else round(self.unreadability, 4),
        }


def _area(box: Box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = w * h if w > 0 and h > 0 else 0.0
    union = _area(a) + _area(b) - inter
    return inter / union if union > 0 else 0.0


def overlap(boxes: list[Box]) -> float:
    if not boxes:
        return 0.0
    total = sum(iou(boxes[i], boxes[j]) for i in range(len(boxes)) for j in range(i + 1, len(boxes)))
    return total / len(boxes)


def alignment(boxes: list[Box]) -> float:
    if len(boxes) < 2:
        return 0.0
    # plain Python: a handful of boxes, where numpy's per-call cost was most of the time
    lines = [(b[0], b[1], (b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2], b[3]) for b in boxes]
    total = 0.0
    for i, line in enumerate(lines):
        others = lines[:i] + lines[i + 1 :]
        gaps = [min(abs(other[k] - line[k]) for other in others) for k in range(6)]  # per line: nearest other element
        total += min(-math.log(1.0 - min(float(g), 0.999999)) for g in gaps)
    return total


def box_mask(boxes: list[Box], shape: tuple[int, int]) -> np.ndarray:
    height, width = shape
    mask = np.zeros(shape, dtype=bool)
    for left, top, right, bottom in boxes:
        x0, x1 = round(left * width), round(right * width)
        y0, y1 = round(top * height), round(bottom * height)
        mask[max(0, y0) : max(0, y1), max(0, x0) : max(0, x1)] = True
    return mask


def gradient_map(grey: np.ndarray) -> np.ndarray:
    """Sobel magnitude normalised to [0, 1] (as the paper's unreadability uses)."""
    padded = np.pad(grey.astype(np.float64), 1, mode="edge")
    gx = (padded[:-2, 2:] + 2 * padded[1:-1, 2:] + padded[2:, 2:]) - (padded[:-2, :-2] + 2 * padded[1:-1, :-2] + padded[2:, :-2])
    gy = (padded[2:, :-2] + 2 * padded[2:, 1:-1] + padded[2:, 2:]) - (padded[:-2, :-2] + 2 * padded[:-2, 1:-1] + padded[:-2, 2:])
    magnitude = np.sqrt((gx**2 + gy**2) / 2)
    peak = float(magnitude.max())
    return magnitude / peak if peak > 0 else magnitude


def layout_metrics(
    boxes: list[Box],
    saliency: np.ndarray,
    *,
    text_boxes: list[Box] | None = None,
    gradient: np.ndarray | None = None,
) -> LayoutMetrics:
    """All PosterLayout metrics for one layout of overlay elements on one canvas."""
    valid = [b for b in boxes if _area(b) >= MIN_AREA]
    validity = len(valid) / len(boxes) if boxes else 0.0
    mask = box_mask(valid, saliency.shape)
    covered = float(mask.sum())
    occlusion = float(saliency[mask].sum() / covered) if covered else 0.0
    free = 1.0 - saliency
    free_total = free.sum()
    utilization = float((free * mask).sum() / free_total) if free_total > 0 else 0.0
    unreadability = None
    if gradient is not None and text_boxes:
        text_mask = box_mask([b for b in text_boxes if _area(b) >= MIN_AREA], gradient.shape)
        unreadability = float(gradient[text_mask].mean()) if text_mask.any() else 0.0
    return LayoutMetrics(validity, overlap(valid), alignment(valid), occlusion, utilization, unreadability)
