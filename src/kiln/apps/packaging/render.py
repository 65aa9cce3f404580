"""Mock-ups of the front panel (PNG preview, SVG, PDF), font-pairing previews and placement heatmaps.

A mock-up draws, in order: the background colour; the style's decoration in the secondary colour,
masked out of every text box (so the text sits on the background colour its contrast was checked
against); the product image area (the reference image cropped to it, or a product silhouette);
the logo mark; the product name in the heading font and primary colour; tagline, claims and legal
text in the text colour (claims on accent badges when that pair passes); and a barcode.
Decorations are vector shapes in panel fractions, drawn the same way into PNG and SVG.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from functools import lru_cache
from html import escape
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kiln.apps.packaging.colour import to_hex
from kiln.apps.packaging.fonts import FontFace, FontPairing
from kiln.apps.packaging.layout import LINE_HEIGHT, PT_PER_MM, Layout, placement_heatmap

RGB = tuple[int, int, int]
PREVIEW_LONG_SIDE = 720
PDF_DPI = 200


# --- fonts and text fitting --------------------------------------------------------------------
@lru_cache(maxsize=512)
def _font(path: str, index: int, pixels: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, max(4, pixels), index=index)


def text_width_em(face: FontFace, text: str) -> float:
    """Width of ``text`` in ems (measured at 100 px)."""
    return _width_em(face.path, face.index, text)


@lru_cache(maxsize=4096)
def _width_em(path: str, index: int, text: str) -> float:
    return float(_font(path, index, 100).getlength(text)) / 100.0


def fit_text_pt(face: FontFace, text: str, box_w_mm: float, box_h_mm: float, lines: int = 1) -> float:
    """The largest size (pt) at which ``text`` fits the box on ``lines`` lines."""
    by_height = box_h_mm / lines / LINE_HEIGHT * PT_PER_MM
    width_em = text_width_em(face, text) / lines if text else 0.0
    by_width = (box_w_mm * PT_PER_MM) / width_em if width_em > 0 else by_height
    return max(1.0, min(by_height, by_width * 0.98))


# --- decoration shapes (panel fractions) --------------------------------------------------------
@dataclass(frozen=True)
class Shape:
    kind: str  # rect | ellipse | polygon | polyline
    points: tuple[tuple[float, float], ...]
    fill: bool = True
    width: float = 0.004  # stroke width as a fraction of the panel width


def decoration_shapes(kind: str, aspect: float, rng: np.random.Generator) -> list[Shape]:
    """Motif shapes for a style's decoration; ``aspect`` is height / width of the panel."""
    shapes: list[Shape] = []
    if kind == "stripes":
        step = float(rng.uniform(0.06, 0.1))
        x = -1.0
        while x < 1.0:
            shapes.append(Shape("polygon", ((x, 0.0), (x + step / 2, 0.0), (x + step / 2 + 1.0, 1.0), (x + 1.0, 1.0))))
            x += step * 1.6
    elif kind == "dots":
        for _ in range(int(rng.integers(14, 26))):
            cx, cy, r = float(rng.uniform(0, 1)), float(rng.uniform(0, 1)), float(rng.uniform(0.012, 0.03))
            shapes.append(Shape("ellipse", ((cx - r, cy - r / aspect), (cx + r, cy + r / aspect))))
    elif kind in ("frame", "badge", "stamp"):
        inset = 0.035
        shapes.append(Shape("rect", ((inset, inset / aspect), (1 - inset, 1 - inset / aspect)), fill=False, width=0.006))
        if kind == "frame":
            inner = inset + 0.015
            shapes.append(Shape("rect", ((inner, inner / aspect), (1 - inner, 1 - inner / aspect)), fill=False, width=0.002))
    elif kind == "waves":
        for row in range(3):
            base = 0.9 - 0.035 * row
            points = tuple((x / 60, base + 0.012 * math.sin(x / 60 * 12 + row)) for x in range(61))
            shapes.append(Shape("polyline", points, fill=False, width=0.008))
    elif kind == "grid":
        step = float(rng.uniform(0.07, 0.11))
        for i in range(1, int(1 / step) + 1):
            shapes.append(Shape("polyline", ((i * step, 0.0), (i * step, 1.0)), fill=False, width=0.0015))
        for i in range(1, int(aspect / step) + 1):
            shapes.append(Shape("polyline", ((0.0, i * step / aspect), (1.0, i * step / aspect)), fill=False, width=0.0015))
    elif kind == "leaves":
        for _ in range(int(rng.integers(5, 9))):
            cx, cy = float(rng.choice([rng.uniform(0, 0.15), rng.uniform(0.85, 1)])), float(rng.uniform(0, 1))
            w, h = float(rng.uniform(0.04, 0.07)), float(rng.uniform(0.05, 0.09))
            shapes.append(Shape("ellipse", ((cx - w / 2, cy - h / 2), (cx + w / 2, cy + h / 2))))
    elif kind == "clouds":
        for _ in range(int(rng.integers(3, 6))):
            cx, cy = float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.05, 0.95))
            for k in range(3):
                r = 0.03
                shapes.append(Shape("ellipse", ((cx + k * 0.035 - r, cy - r / aspect), (cx + k * 0.035 + r, cy + r / aspect)), fill=False, width=0.004))
    elif kind == "sparkle":
        for _ in range(int(rng.integers(10, 18))):
            cx, cy, r = float(rng.uniform(0, 1)), float(rng.uniform(0, 1)), float(rng.uniform(0.01, 0.025))
            shapes.append(Shape("polygon", ((cx, cy - r / aspect * 2), (cx + r / 3, cy), (cx, cy + r / aspect * 2), (cx - r / 3, cy))))
            shapes.append(Shape("polygon", ((cx - r * 2, cy), (cx, cy - r / aspect / 3), (cx + r * 2, cy), (cx, cy + r / aspect / 3))))
    elif kind == "blocks":
        for _ in range(2):
            x, y = float(rng.uniform(0, 0.7)), float(rng.uniform(0, 0.7))
            shapes.append(Shape("rect", ((x, y), (x + float(rng.uniform(0.15, 0.35)), y + float(rng.uniform(0.1, 0.3))))))
    elif kind == "rule":
        y = float(rng.uniform(0.25, 0.75))
        shapes.append(Shape("polyline", ((0.06, y), (0.94, y)), fill=False, width=0.003))
    return shapes


# --- the mock-up specification -----------------------------------------------------------------
@dataclass
class MockupSpec:
    panel_mm: tuple[float, float]
    colours: dict[str, RGB]
    pairing: FontPairing
    layout: Layout
    name: str
    tagline: str
    claims: list[str]
    legal: str
    claims_on_accent: bool
    decoration: str
    seed: int
    image: Image.Image | None = None  # the reference image, already cover-fit to the panel aspect
    sizes_pt: dict[str, float] = field(default_factory=dict)  # fitted type sizes per element

    @property
    def aspect(self) -> float:
        return self.panel_mm[1] / self.panel_mm[0]


def fitted_sizes(spec_pairing: FontPairing, layout: Layout, texts: dict[str, str]) -> dict[str, float]:
    """Type size (pt) per text element, fitted to its box with the fonts that will draw it."""
    width_mm, height_mm = layout.panel_mm
    sizes: dict[str, float] = {}
    for element in layout.elements:
        if element.name not in texts:
            continue
        face = spec_pairing.heading if element.name == "name" else spec_pairing.body
        box_w = (element.box[2] - element.box[0]) * width_mm
        box_h = (element.box[3] - element.box[1]) * height_mm
        if element.name == "legal":
            box_w *= 0.55  # the barcode takes the right part of the box
        lines = 2 if element.name == "legal" else 1
        sizes[element.name] = fit_text_pt(face, texts[element.name], box_w, box_h, lines)
    return sizes


def _px(spec: MockupSpec, long_side: int) -> tuple[int, int, float]:
    width_mm, height_mm = spec.panel_mm
    scale = long_side / max(width_mm, height_mm)  # px per mm
    return max(1, round(width_mm * scale)), max(1, round(height_mm * scale)), scale


def _initials(name: str) -> str:
    words = [w for w in name.split() if w]
    if not words:
        return "K"
    if any(ord(c) > 0x2E80 for c in words[0]):
        return words[0][0]
    return "".join(w[0] for w in words[:2]).upper()


def _barcode_bars(seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.integers(1, 4, size=38)]


def render_png(spec: MockupSpec, long_side: int = PREVIEW_LONG_SIDE) -> bytes:
    image = render_image(spec, long_side)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # speed over size for previews
    return buffer.getvalue()


def render_image(spec: MockupSpec, long_side: int = PREVIEW_LONG_SIDE) -> Image.Image:
    width, height, scale = _px(spec, long_side)
    c = spec.colours
    canvas = Image.new("RGB", (width, height), c["background"])
    text_boxes = [e.box for e in spec.layout.elements if e.name in ("logo", "name", "tagline", "claims", "legal")]
    # decoration layer, masked out of text boxes
    shapes = decoration_shapes(spec.decoration, spec.aspect, np.random.default_rng(spec.seed))
    if shapes:
        layer = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(layer)
        for shape in shapes:
            points = [(x * width, y * height) for x, y in shape.points]
            stroke = max(1, round(shape.width * width))
            if shape.kind == "rect":
                draw.rectangle([points[0], points[1]], fill=255 if shape.fill else None, outline=None if shape.fill else 255, width=stroke)
            elif shape.kind == "ellipse":
                draw.ellipse([points[0], points[1]], fill=255 if shape.fill else None, outline=None if shape.fill else 255, width=stroke)
            elif shape.kind == "polygon":
                draw.polygon(points, fill=255)
            else:
                draw.line(points, fill=255, width=stroke)
        for left, top, right, bottom in text_boxes:
            pad = 0.01 * width
            draw.rectangle([left * width - pad, top * height - pad, right * width + pad, bottom * height + pad], fill=0)
        canvas.paste(Image.new("RGB", (width, height), c["secondary"]), mask=layer)
    draw = ImageDraw.Draw(canvas)
    _draw_product(canvas, draw, spec, width, height)
    for element in spec.layout.elements:
        x0, y0, x1, y1 = element.box[0] * width, element.box[1] * height, element.box[2] * width, element.box[3] * height
        if element.name == "logo":
            side = y1 - y0
            face = spec.pairing.heading
            if spec.layout.align != "left":
                x0 = (x0 + x1) / 2 - side * 0.8
            draw.rounded_rectangle([x0, y0, x0 + side * 1.6, y1], radius=side * 0.25, outline=c["primary"], width=max(1, round(side * 0.07)))
            font = _font(face.path, face.index, max(6, round(side * 0.5)))
            draw.text((x0 + side * 0.8, (y0 + y1) / 2), _initials(spec.name), font=font, fill=c["primary"], anchor="mm")
        elif element.name == "name":
            _draw_line(draw, spec, spec.pairing.heading, spec.name, element.box, "name", c["primary"], width, height, scale)
        elif element.name == "tagline":
            face = spec.pairing.accent if spec.pairing.accent and not spec.pairing.accent.cjk and _ascii(spec.tagline) else spec.pairing.body
            _draw_line(draw, spec, face, spec.tagline, element.box, "tagline", c["text"], width, height, scale)
        elif element.name == "claims":
            _draw_claims(draw, spec, element.box, width, height, scale)
        elif element.name == "legal":
            _draw_legal(draw, spec, element.box, width, height, scale)
    return canvas


def _ascii(text: str) -> bool:
    return all(ord(ch) < 0x2E80 for ch in text)


def _pixels(spec: MockupSpec, element: str, scale: float) -> int:
    return max(4, round(spec.sizes_pt.get(element, 10.0) / PT_PER_MM * scale))


def _anchor_x(spec: MockupSpec, box: tuple[float, float, float, float], width: int) -> tuple[float, str]:
    if spec.layout.align == "left":
        return box[0] * width, "l"
    return (box[0] + box[2]) / 2 * width, "m"


def _draw_line(draw: ImageDraw.ImageDraw, spec: MockupSpec, face: FontFace, text: str, box: tuple[float, float, float, float],
               element: str, fill: RGB, width: int, height: int, scale: float) -> None:
    font = _font(face.path, face.index, _pixels(spec, element, scale))
    x, anchor = _anchor_x(spec, box, width)
    draw.text((x, (box[1] + box[3]) / 2 * height), text, font=font, fill=fill, anchor=anchor + "m")


def _draw_claims(draw: ImageDraw.ImageDraw, spec: MockupSpec, box: tuple[float, float, float, float], width: int, height: int, scale: float) -> None:
    c = spec.colours
    face = spec.pairing.body
    font = _font(face.path, face.index, _pixels(spec, "claims", scale))
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    gap = (y1 - y0) * 0.3
    widths = [font.getlength(t) + (y1 - y0) * 0.8 for t in spec.claims]
    total = sum(widths) + gap * max(0, len(widths) - 1)
    x = x0 if spec.layout.align == "left" else (x0 + x1 - total) / 2
    for text, w in zip(spec.claims, widths, strict=True):
        if spec.claims_on_accent:
            draw.rounded_rectangle([x, y0, x + w, y1], radius=(y1 - y0) / 2, fill=c["accent"])
        draw.text((x + w / 2, (y0 + y1) / 2), text, font=font, fill=c["text"], anchor="mm")
        x += w + gap


def _draw_legal(draw: ImageDraw.ImageDraw, spec: MockupSpec, box: tuple[float, float, float, float], width: int, height: int, scale: float) -> None:
    c = spec.colours
    face = spec.pairing.body
    font = _font(face.path, face.index, _pixels(spec, "legal", scale))
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    split = x0 + (x1 - x0) * 0.56
    lines = _wrap(spec.legal, font, split - x0 - 4, 2)
    line_h = (y1 - y0) / 2
    for i, line in enumerate(lines):
        draw.text((x0, y0 + line_h * (i + 0.5)), line, font=font, fill=c["text"], anchor="lm")
    bars = _barcode_bars(spec.seed)
    unit = (x1 - split - 4) / sum(bars)
    x = split + 4
    for i, bar in enumerate(bars):
        if i % 2 == 0:
            # Thin bars at small render sizes: keep x1 >= x0 (Pillow refuses inverted rectangles).
            draw.rectangle([x, y0, max(x, x + bar * unit - 0.5), max(y0, y1)], fill=c["text"])
        x += bar * unit


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float, max_lines: int) -> list[str]:
    words = text.split() if " " in text else list(text)
    joiner = " " if " " in text else ""
    lines: list[str] = []
    current = ""
    for word in words:
        trial = f"{current}{joiner}{word}" if current else word
        if font.getlength(trial) <= max_width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip() + "…"
    return lines


def _draw_product(canvas: Image.Image, draw: ImageDraw.ImageDraw, spec: MockupSpec, width: int, height: int) -> None:
    c = spec.colours
    left, top, right, bottom = spec.layout.element("product").box
    x0, y0, x1, y1 = round(left * width), round(top * height), round(right * width), round(bottom * height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    if spec.image is not None:
        source = spec.image
        sw, sh = source.size
        crop = source.crop((round(left * sw), round(top * sh), round(right * sw), round(bottom * sh)))
        canvas.paste(crop.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR), (x0, y0))
        return
    # a product silhouette: bottle on odd seeds, box on even
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    if spec.seed % 2:
        body_w = min(w * 0.55, h * 0.45)
        draw.rounded_rectangle([cx - body_w / 2, y0 + h * 0.22, cx + body_w / 2, y1], radius=body_w * 0.3, fill=c["secondary"])
        draw.rectangle([cx - body_w / 6, y0, cx + body_w / 6, y0 + h * 0.24], fill=c["secondary"])
        draw.rectangle([cx - body_w / 2, y0 + h * 0.5, cx + body_w / 2, y0 + h * 0.68], fill=c["accent"])
    else:
        box_w = min(w * 0.7, h * 0.7)
        draw.rectangle([cx - box_w / 2, y0 + h * 0.1, cx + box_w / 2, y1], fill=c["secondary"])
        draw.rectangle([cx - box_w / 2, y0 + h * 0.45, cx + box_w / 2, y0 + h * 0.6], fill=c["accent"])


# --- SVG ---------------------------------------------------------------------------------------
def render_svg(spec: MockupSpec) -> bytes:
    width_mm, height_mm = spec.panel_mm
    w, h = width_mm, height_mm  # user units = mm
    c = {role: to_hex(rgb) for role, rgb in spec.colours.items()}
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'width="{w}mm" height="{h}mm" viewBox="0 0 {w} {h}">',
        f'<rect width="{w}" height="{h}" fill="{c["background"]}"/>',
        '<defs><mask id="textfree"><rect width="100%" height="100%" fill="white"/>',
    ]
    for e in spec.layout.elements:
        if e.name in ("logo", "name", "tagline", "claims", "legal"):
            pad = 0.01 * w
            out.append(
                f'<rect x="{e.box[0] * w - pad:.2f}" y="{e.box[1] * h - pad:.2f}" width="{(e.box[2] - e.box[0]) * w + 2 * pad:.2f}" '
                f'height="{(e.box[3] - e.box[1]) * h + 2 * pad:.2f}" fill="black"/>'
            )
    out.append("</mask></defs>")
    out.append(f'<g mask="url(#textfree)" fill="{c["secondary"]}" stroke="{c["secondary"]}">')
    for shape in decoration_shapes(spec.decoration, spec.aspect, np.random.default_rng(spec.seed)):
        pts = [(x * w, y * h) for x, y in shape.points]
        sw = shape.width * w
        style = 'stroke="none"' if shape.fill else f'fill="none" stroke-width="{sw:.2f}"'
        if shape.kind == "rect":
            (ax, ay), (bx, by) = pts
            out.append(f'<rect x="{ax:.2f}" y="{ay:.2f}" width="{bx - ax:.2f}" height="{by - ay:.2f}" {style}/>')
        elif shape.kind == "ellipse":
            (ax, ay), (bx, by) = pts
            out.append(f'<ellipse cx="{(ax + bx) / 2:.2f}" cy="{(ay + by) / 2:.2f}" rx="{(bx - ax) / 2:.2f}" ry="{(by - ay) / 2:.2f}" {style}/>')
        elif shape.kind == "polygon":
            out.append('<polygon points="' + " ".join(f"{x:.2f},{y:.2f}" for x, y in pts) + '" stroke="none"/>')
        else:
            out.append('<polyline points="' + " ".join(f"{x:.2f},{y:.2f}" for x, y in pts) + f'" fill="none" stroke-width="{sw:.2f}"/>')
    out.append("</g>")
    product = spec.layout.element("product").box
    px0, py0, px1, py1 = product[0] * w, product[1] * h, product[2] * w, product[3] * h
    if spec.image is not None:
        sw_, sh_ = spec.image.size
        crop = spec.image.crop((round(product[0] * sw_), round(product[1] * sh_), round(product[2] * sw_), round(product[3] * sh_)))
        crop.thumbnail((600, 600))
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=85)
        data = base64.b64encode(buffer.getvalue()).decode()
        out.append(f'<image x="{px0:.2f}" y="{py0:.2f}" width="{px1 - px0:.2f}" height="{py1 - py0:.2f}" '
                   f'preserveAspectRatio="none" xlink:href="data:image/jpeg;base64,{data}"/>')
    else:
        bw = min((px1 - px0) * 0.7, (py1 - py0) * 0.7)
        cx = (px0 + px1) / 2
        out.append(f'<rect x="{cx - bw / 2:.2f}" y="{py0 + (py1 - py0) * 0.1:.2f}" width="{bw:.2f}" height="{(py1 - py0) * 0.9:.2f}" fill="{c["secondary"]}"/>')
        out.append(f'<rect x="{cx - bw / 2:.2f}" y="{py0 + (py1 - py0) * 0.45:.2f}" width="{bw:.2f}" height="{(py1 - py0) * 0.15:.2f}" fill="{c["accent"]}"/>')
    anchor = "start" if spec.layout.align == "left" else "middle"

    def text(element: str, content: str, face: FontFace, fill: str, weight: int) -> None:
        e = spec.layout.element(element)
        x = e.box[0] * w if anchor == "start" else (e.box[0] + e.box[2]) / 2 * w
        y = (e.box[1] + e.box[3]) / 2 * h
        size_mm = spec.sizes_pt.get(element, 10.0) / PT_PER_MM
        out.append(
            f'<text x="{x:.2f}" y="{y:.2f}" font-family="{escape(face.family)}" font-weight="{weight}" font-size="{size_mm:.2f}" '
            f'fill="{fill}" text-anchor="{anchor}" dominant-baseline="central">{escape(content)}</text>'
        )

    logo = spec.layout.element("logo").box
    side = (logo[3] - logo[1]) * h
    if anchor != "start":
        logo = ((logo[0] + logo[2]) / 2 - side * 0.8 / w, logo[1], logo[2], logo[3])
    out.append(f'<rect x="{logo[0] * w:.2f}" y="{logo[1] * h:.2f}" width="{side * 1.6:.2f}" height="{side:.2f}" rx="{side * 0.25:.2f}" '
               f'fill="none" stroke="{c["primary"]}" stroke-width="{side * 0.07:.2f}"/>')
    out.append(f'<text x="{logo[0] * w + side * 0.8:.2f}" y="{(logo[1] + logo[3]) / 2 * h:.2f}" font-family="{escape(spec.pairing.heading.family)}" '
               f'font-size="{side * 0.5:.2f}" fill="{c["primary"]}" text-anchor="middle" dominant-baseline="central">{escape(_initials(spec.name))}</text>')
    text("name", spec.name, spec.pairing.heading, c["primary"], spec.pairing.heading.weight)
    text("tagline", spec.tagline, spec.pairing.body, c["text"], 400)
    claims = spec.layout.element("claims").box
    out.append(f'<text x="{claims[0] * w if anchor == "start" else (claims[0] + claims[2]) / 2 * w:.2f}" y="{(claims[1] + claims[3]) / 2 * h:.2f}" '
               f'font-family="{escape(spec.pairing.body.family)}" font-size="{spec.sizes_pt.get("claims", 8) / PT_PER_MM:.2f}" fill="{c["text"]}" '
               f'text-anchor="{anchor}" dominant-baseline="central">{escape("  ·  ".join(spec.claims))}</text>')
    legal = spec.layout.element("legal").box
    out.append(f'<text x="{legal[0] * w:.2f}" y="{(legal[1] * 0.7 + legal[3] * 0.3) * h:.2f}" font-family="{escape(spec.pairing.body.family)}" '
               f'font-size="{spec.sizes_pt.get("legal", 6) / PT_PER_MM:.2f}" fill="{c["text"]}">{escape(spec.legal)}</text>')
    bars = _barcode_bars(spec.seed)
    split = legal[0] + (legal[2] - legal[0]) * 0.56
    unit = (legal[2] - split) * w / sum(bars)
    x = split * w
    for i, bar in enumerate(bars):
        if i % 2 == 0:
            out.append(f'<rect x="{x:.2f}" y="{legal[1] * h:.2f}" width="{bar * unit:.3f}" height="{(legal[3] - legal[1]) * h:.2f}" fill="{c["text"]}"/>')
        x += bar * unit
    out.append("</svg>")
    return "\n".join(out).encode()


# --- PDF ---------------------------------------------------------------------------------------
def _latin1(text: str) -> str:
    """The PDF's core font covers Latin-1 only; spell out arrows and dashes, mark anything else."""
    text = text.replace("→", "->").replace("—", "-").replace("–", "-").replace("≥", ">=")
    return text.encode("latin-1", "replace").decode("latin-1")


def render_pdf(spec: MockupSpec, palette: dict[str, Any]) -> bytes:
    """Page 1: the panel at its real size (raster at 200 dpi); page 2: the palette specification."""
    from fpdf import FPDF

    width_mm, height_mm = spec.panel_mm
    long_side = round(max(width_mm, height_mm) / 25.4 * PDF_DPI)
    panel = render_image(spec, long_side)
    buffer = io.BytesIO()
    panel.save(buffer, format="PNG")
    pdf = FPDF(unit="mm", format=(width_mm, height_mm))
    pdf.set_auto_page_break(False)
    pdf.set_title(_latin1(f"kiln packaging mock-up: {palette.get('style', '')}"))
    pdf.set_creator("kiln")
    pdf.add_page()
    pdf.image(io.BytesIO(buffer.getvalue()), x=0, y=0, w=width_mm, h=height_mm)
    pdf.add_page(format=(210, 297))
    pdf.set_font("helvetica", "B", 14)
    pdf.set_xy(15, 15)
    pdf.cell(0, 8, _latin1(f"Palette - {palette.get('style', '')} ({palette.get('harmony', '')} harmony)"))
    pdf.set_font("helvetica", "", 9)
    y = 30.0
    for entry in palette["colours"]:
        r, g, b = entry["rgb"]
        pdf.set_fill_color(r, g, b)
        pdf.set_draw_color(128, 128, 128)
        pdf.rect(15, y, 22, 14, style="DF")
        cyan, magenta, yellow, black = entry["cmyk"]
        pdf.set_xy(42, y + 1)
        pdf.cell(0, 5, _latin1(f"{entry['role']}{' (locked)' if entry.get('locked') else ''}  {entry['hex']}  RGB {r} {g} {b}"))
        pdf.set_xy(42, y + 7)
        lab = entry["lab"]
        pdf.cell(0, 5, f"CMYK {cyan:g} {magenta:g} {yellow:g} {black:g}   Lab {lab[0]:.1f} {lab[1]:.1f} {lab[2]:.1f}")
        y += 19
    pdf.set_xy(15, y + 4)
    pdf.cell(0, 5, _latin1(f"CMYK: {palette.get('cmyk_method', '')}"))
    y += 12
    for pair in palette.get("contrast", []):
        pdf.set_xy(15, y)
        level = "AA normal" if pair["minimum"] >= 4.5 else "AA large"
        pdf.cell(0, 5, _latin1(f"{pair['usage']}: {pair['foreground']} on {pair['background']} {pair['ratio']:.2f}:1 ({level})"))
        y += 6
    return bytes(pdf.output())


# --- previews ----------------------------------------------------------------------------------
def font_preview_png(pairing: FontPairing, name: str, sample: str, colours: dict[str, RGB]) -> bytes:
    width, height = 720, 300
    image = Image.new("RGB", (width, height), colours["background"])
    draw = ImageDraw.Draw(image)
    head = _font(pairing.heading.path, pairing.heading.index, 64)
    body = _font(pairing.body.path, pairing.body.index, 22)
    label = _font(pairing.body.path, pairing.body.index, 15)
    draw.text((32, 28), name, font=head, fill=colours["primary"])
    for i, line in enumerate(_wrap(sample, body, width - 64, 3)):
        draw.text((32, 120 + i * 32), line, font=body, fill=colours["text"])
    caption = f"{pairing.heading.id}  /  {pairing.body.id}" + (f"  /  accent {pairing.accent.id}" if pairing.accent else "")
    draw.text((32, height - 36), caption, font=label, fill=colours["text"])
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def heatmap_png(layout: Layout, long_side: int = 480) -> bytes:
    """Placement heatmap: green where text can go, red where it would cover salient content,
    with the chosen boxes outlined."""
    suitability = placement_heatmap(layout)
    width_mm, height_mm = layout.panel_mm
    scale = long_side / max(width_mm, height_mm)
    size = (max(1, round(width_mm * scale)), max(1, round(height_mm * scale)))
    ramp = np.stack([(1 - suitability) * 220 + 20, suitability * 190 + 40, np.full_like(suitability, 60)], axis=-1)
    image = Image.fromarray(ramp.astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(image)
    for element in layout.elements:
        left, top, right, bottom = element.box
        colour = (255, 255, 255) if element.name != "product" else (30, 30, 30)
        draw.rectangle([left * size[0], top * size[1], right * size[0], bottom * size[1]], outline=colour, width=2)
        draw.text((left * size[0] + 3, top * size[1] + 2), element.name, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
