"""Front-panel layout: boxes for logo, product name, tagline, claims, legal/barcode and the product
image area, placed away from the salient parts of the reference image.

The product image area covers the salient object of the reference image (or a style-dependent
default box when there is none). The overlay elements are stacked in the free bands around it
(above, below, or in a side column) following a handful of packaging templates, every element
sharing one alignment line (the left margin or the centre axis) so they never overlap and stay
aligned; each template is scored by the saliency it would cover, and the seed breaks near-ties so
variations differ. Sizes come from the panel's millimetres, so type sizes are real points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.apps.packaging.layout_metrics import Box, LayoutMetrics, box_mask, layout_metrics

PT_PER_MM = 1 / 0.3528
LINE_HEIGHT = 1.2
LARGE_TEXT_PT = 18.0  # WCAG "large": ≥ 18 pt, or ≥ 14 pt bold
LARGE_BOLD_PT = 14.0
GRID = 64  # saliency grid (long side)

TEXT_ELEMENTS = ("name", "tagline", "claims", "legal")
OVERLAY_ELEMENTS = ("logo", "name", "tagline", "claims", "legal")


@dataclass(frozen=True)
class Element:
    name: str  # logo | name | tagline | claims | legal | product
    box: Box
    font_pt: float | None = None

    def as_dict(self, panel: tuple[float, float]) -> dict[str, Any]:
        left, top, right, bottom = self.box
        data: dict[str, Any] = {
            "element": self.name,
            "box": [round(v, 4) for v in self.box],
            "mm": [round(left * panel[0], 1), round(top * panel[1], 1), round(right * panel[0], 1), round(bottom * panel[1], 1)],
        }
        if self.font_pt is not None:
            data["font_pt"] = round(self.font_pt, 1)
        return data


@dataclass
class Layout:
    elements: list[Element]
    template: str
    align: str
    metrics: LayoutMetrics
    saliency: np.ndarray  # [h, w] in [0, 1]
    panel_mm: tuple[float, float]

    def element(self, name: str) -> Element:
        return next(e for e in self.elements if e.name == name)

    @property
    def overlay(self) -> list[Element]:
        return [e for e in self.elements if e.name != "product"]


# desired height (fraction of panel height) and width (fraction of the content width) per element
_SIZES = {"logo": (0.065, 0.4), "name": (0.12, 1.0), "tagline": (0.05, 0.9), "claims": (0.065, 0.8), "legal": (0.085, 0.42)}
_TEMPLATES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "masthead": (("top", ("logo", "name", "tagline")), ("bottom", ("claims", "legal"))),
    "footer_name": (("top", ("logo",)), ("bottom", ("name", "tagline", "claims", "legal"))),
    "split": (("top", ("logo", "name")), ("bottom", ("tagline", "claims", "legal"))),
    "top_stack": (("top", ("logo", "name", "tagline", "claims")), ("bottom", ("legal",))),
    "left_column": (("left", ("logo", "name", "tagline", "claims", "legal")),),
    "right_column": (("right", ("logo", "name", "tagline", "claims", "legal")),),
}


def grid_shape(panel_mm: tuple[float, float]) -> tuple[int, int]:
    width, height = panel_mm
    if width >= height:
        return max(8, round(GRID * height / width)), GRID
    return GRID, max(8, round(GRID * width / height))


def product_box(saliency: np.ndarray | None, default: Box) -> Box:
    """The box holding the salient object (pixels ≥ half the peak), padded by 3 % of the panel."""
    if saliency is None:
        return default
    ys, xs = np.nonzero(saliency >= 0.5)
    if ys.size == 0:
        return default
    h, w = saliency.shape
    pad = 0.03
    return (
        max(0.0, xs.min() / w - pad),
        max(0.0, ys.min() / h - pad),
        min(1.0, (xs.max() + 1) / w + pad),
        min(1.0, (ys.max() + 1) / h + pad),
    )


def default_product_box(rng: np.random.Generator, align: str) -> Box:
    """Where the product photo goes without a reference: central, a little below the middle."""
    top = float(rng.uniform(0.3, 0.36))
    height = float(rng.uniform(0.34, 0.4))
    if align == "left":
        return (0.4, top, 0.92, top + height)
    return (0.2, top, 0.8, top + height)


def _stack(
    names: tuple[str, ...], region: Box, align: str, from_bottom: bool, gap: float
) -> tuple[list[Element], float] | None:
    """Elements stacked vertically in a region; returns them and the scale applied (None if too small)."""
    left, top, right, bottom = region
    width, height = right - left, bottom - top
    if width <= 0.05 or height <= 0.02:
        return None
    wanted = [_SIZES[n][0] for n in names]
    total = sum(wanted) + gap * (len(names) - 1)
    scale = min(1.0, height / total)
    if scale < 0.6:
        return None
    elements: list[Element] = []
    y = bottom - total * scale if from_bottom else top
    for name, h in zip(names, wanted, strict=True):
        w = min(width, _SIZES[name][1] * width)
        x0 = left if align == "left" else left + (width - w) / 2
        elements.append(Element(name, (x0, y, x0 + w, y + h * scale)))
        y += (h + gap) * scale
    return elements, scale


def _regions(product: Box, margin_x: float, margin_y: float, gap: float) -> dict[str, Box]:
    left, top, right, bottom = product
    return {
        "top": (margin_x, margin_y, 1 - margin_x, top - gap),
        "bottom": (margin_x, bottom + gap, 1 - margin_x, 1 - margin_y),
        "left": (margin_x, margin_y, left - gap, 1 - margin_y),
        "right": (right + gap, margin_y, 1 - margin_x, 1 - margin_y),
    }


def _font_sizes(elements: list[Element], panel_mm: tuple[float, float]) -> list[Element]:
    sized = []
    for element in elements:
        if element.name in TEXT_ELEMENTS:
            lines = 2 if element.name in ("legal",) else 1
            height_mm = (element.box[3] - element.box[1]) * panel_mm[1]
            sized.append(Element(element.name, element.box, height_mm / lines / LINE_HEIGHT * PT_PER_MM))
        else:
            sized.append(element)
    return sized


def plan_layout(
    panel_mm: tuple[float, float],
    *,
    align: str,
    margin: float,
    rng: np.random.Generator,
    saliency: np.ndarray | None = None,
    gradient: np.ndarray | None = None,
) -> Layout:
    """Choose the template and alignment that cover the least saliency; seeded near-tie breaking."""
    from kiln.apps.packaging.saliency import centre_prior

    shape = grid_shape(panel_mm)
    product = product_box(saliency, default_product_box(rng, align))
    sal = saliency if saliency is not None else centre_prior((shape[1], shape[0]), product)
    aspect = panel_mm[1] / panel_mm[0]
    margin_x, margin_y = margin, margin / aspect if aspect > 1 else margin
    margin_y = max(margin_y, 0.04)
    gap = 0.02
    integral = np.pad(sal, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    best: tuple[float, str, str, list[Element]] | None = None
    fallback_used = False
    for attempt in range(2):
        if attempt == 1:
            # the product fills the panel: keep its middle for the image, text bands above and below
            product = (max(product[0], margin_x), max(product[1], 0.36), min(product[2], 1 - margin_x), min(product[3], 0.7))
            if product[3] - product[1] < 0.2:
                product = (product[0], 0.36, product[2], 0.7)
        regions = _regions(product, margin_x, margin_y, gap)
        for template, bands in _TEMPLATES.items():
            for option in (align, "center" if align == "left" else "left"):
                elements: list[Element] = []
                scales: list[float] = []
                for band, names in bands:
                    stacked = _stack(names, regions[band], option, from_bottom=band == "bottom", gap=gap)
                    if stacked is None:
                        break
                    elements.extend(stacked[0])
                    scales.append(stacked[1])
                else:
                    cost = _mean_saliency(integral, sal.shape, [e.box for e in elements])
                    cost += 0.05 * (1 - min(scales)) + (0.03 if option != align else 0.0)
                    cost += float(rng.uniform(0, 0.015))  # seeded variation among near-equal layouts
                    if best is None or cost < best[0]:
                        best = (cost, template, option, elements)
        if best is not None:
            break
        fallback_used = True  # the product fills the panel: text has to sit over the image
    assert best is not None, "the fallback regions always fit"
    _, template, option, elements = best
    elements = _font_sizes(elements, panel_mm)
    elements.append(Element("product", product))
    overlay = [e.box for e in elements if e.name in OVERLAY_ELEMENTS]
    text = [e.box for e in elements if e.name in TEXT_ELEMENTS]
    metrics = layout_metrics(overlay, sal, text_boxes=text, gradient=gradient)
    return Layout(elements, template + (" (over image)" if fallback_used else ""), option, metrics, sal, panel_mm)


def _mean_saliency(integral: np.ndarray, shape: tuple[int, int], boxes: list[Box]) -> float:
    """Mean saliency under the union of boxes (boxes from one stack never overlap, so sums add)."""
    height, width = shape
    total = area = 0.0
    for left, top, right, bottom in boxes:
        x0, x1 = round(left * width), round(right * width)
        y0, y1 = round(top * height), round(bottom * height)
        if x1 <= x0 or y1 <= y0:
            continue
        total += float(integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0])
        area += (x1 - x0) * (y1 - y0)
    return total / area if area else 1.0


def placement_heatmap(layout: Layout) -> np.ndarray:
    """Suitability for text in [0, 1] (1 − saliency), zero inside the product image area."""
    suitability = 1.0 - layout.saliency
    product = layout.element("product").box
    mask = box_mask([product], suitability.shape)
    return np.where(mask, 0.0, suitability).astype(np.float32)
