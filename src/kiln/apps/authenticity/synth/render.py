"""One renderer per view: draws a model's detail as its maker would, or with a counterfeit defect.

Each renderer returns a float32 RGB image (values around [0, 1]) before camera effects. Natural
variation (framing, zoom, dye lots, small hand-made irregularities) is always present, so the model
must learn the house style rather than memorise pixels.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from kiln.apps.authenticity.synth.defects import Defect
from kiln.apps.authenticity.synth.designs import FINISHES, ModelDesign
from kiln.apps.authenticity.synth.materials import canvas, fabric, jitter_color, leather, metal
from kiln.apps.authenticity.synth.noise import blur, colorize, fbm, mix, shade
from kiln.apps.authenticity.synth.text import TextStyle, place, text_mask

Array = np.ndarray
Renderer = Callable[[ModelDesign, "Defect | None", np.random.Generator, int], Array]

# Fonts no brand uses for its date stamps: what the counterfeiters' stamping shops have.
DATE_LOOKALIKES = ("DejaVuSansMono-Bold.ttf", "cmr10.ttf", "DejaVuSans-Oblique.ttf", "STIXGeneral.ttf")


def _family(defect: Defect | None, *families: str) -> float:
    """Magnitude of the defect if it belongs to one of ``families``, else 0."""
    if defect is not None and defect.family in families:
        return defect.magnitude
    return 0.0


def _defect_rng(defect: Defect | None) -> np.random.Generator:
    """Randomness of the defect alone. Scene randomness comes from the view's generator and is drawn
    the same way with or without a defect, so a counterfeit and its clean twin differ only in the flaw."""
    return defect.rng() if defect is not None else np.random.default_rng(0)


def _shift_color(rng: np.random.Generator, color: Array, amount: float) -> Array:
    """Moves a colour by ``amount`` (relative) in a random hue direction, keeping it plausible."""
    direction = rng.normal(0.0, 1.0, 3).astype(np.float32)
    direction -= direction.mean()  # change hue and saturation more than brightness
    direction /= max(float(np.linalg.norm(direction)), 1e-6)
    base = np.asarray(color, np.float32)
    # Proportional to brightness, so a "small" shift of a black leather stays small.
    shifted = base + direction * amount * 0.9 * (0.45 + float(base.mean()))
    return np.clip(shifted * (1.0 + rng.choice([-1.0, 1.0]) * amount * 0.25), 0.02, 1.0)


def _zoom(rng: np.random.Generator) -> float:
    # Photos follow a capture template (framing hint in the app), so zoom varies only a little.
    return float(rng.uniform(0.94, 1.06))


def _patchy(rng: np.random.Generator, size: int, amount: float) -> Array:
    """A blotchy multiplier around 1: uneven dye, foil or plating, as cheap processes leave it."""
    if amount <= 0:
        return np.ones((size, size, 1), np.float32)
    field = fbm(rng, size, 5.0, octaves=2) - 0.5
    return (1.0 + amount * 2.0 * field)[..., None].astype(np.float32)


def _surface(design: ModelDesign, rng: np.random.Generator, size: int, zoom: float, body: Array,
             relief: Array | None = None, depth: float = 0.0) -> Array:
    if design.material == "canvas":
        motif = np.clip(body * 0.55 + np.asarray(design.foil, np.float32) * 0.45, 0, 1)
        image = canvas(rng, size, body, motif, motif_pitch=size * 0.23 * zoom)
        if relief is not None:
            image = image * np.clip(shade(blur(-relief * depth, 1.0), 3.0), 0.5, 1.5)[..., None]
        return image
    image, _ = leather(rng, size, body, grain_px=design.grain * size * zoom, relief=relief, relief_depth=depth)
    return image


def _lookalike(fonts: tuple[str, ...], magnitude: float) -> str:
    """Counterfeit typefaces: subtle lookalikes at low magnitude, cruder ones at high."""
    index = 0 if magnitude < 0.55 else (1 if magnitude < 0.8 else 2)
    return fonts[min(index, len(fonts) - 1)]


def _kerning(rng: np.random.Generator, drng: np.random.Generator, n: int, magnitude: float,
             natural: float) -> tuple[list[float], list[float]]:
    """Per-gap advance and per-letter baseline offsets: hand-set irregularity plus the defect."""
    kern = rng.normal(0.0, natural, n)
    base = rng.normal(0.0, natural * 0.5, n)
    if magnitude > 0:  # uneven spacing, and always at least one clearly wrong gap
        kern = kern + drng.normal(0.0, 0.16 * magnitude, n)
        base = base + drng.normal(0.0, 0.04 * magnitude, n)
        worst = int(drng.integers(0, max(1, n - 1)))
        kern[worst] += float(drng.choice([-1.0, 1.0])) * (0.2 + 0.35 * magnitude)
    return kern.tolist(), base.tolist()


# --- logo -----------------------------------------------------------------------------------------
def render_logo(design: ModelDesign, defect: Defect | None, rng: np.random.Generator, size: int) -> Array:
    brand = design.brand
    drng = _defect_rng(defect)
    zoom = _zoom(rng)
    body = jitter_color(rng, design.body, 0.03)
    px = int(size * 0.1 * zoom)
    font = brand.logo_font
    if (m := _family(defect, "font")) > 0:
        font = _lookalike(brand.lookalike_fonts, m)
    kern_m = _family(defect, "kerning")
    kern, base = _kerning(rng, drng, len(brand.name), kern_m, natural=0.008)
    tracking = brand.logo_tracking + (drng.choice([-1.0, 1.0]) * 0.1 * kern_m if kern_m else 0.0)
    bleed_m = _family(defect, "bleed")
    style = TextStyle(font=font, px=px, tracking=tracking, kerning=kern, baseline=base,
                      weight=round(bleed_m * 2.5 * size / 320))
    word = text_mask(brand.name, style)
    # The word mark is set at the brand's width for its size: a lookalike font changes the width too.
    natural_width = word.shape[1] * (size * 0.1 * zoom) / px
    center = (size / 2 + rng.normal(0, size * 0.03), size / 2 + rng.normal(0, size * 0.04))
    mask = place(word, size, center, width=min(natural_width, size * 0.92), angle=float(rng.normal(0, 1.2)))
    if bleed_m > 0:
        mask = np.clip(blur(mask, (0.6 + 2.2 * bleed_m) * size / 320) * (1.0 + 0.6 * bleed_m), 0, 1)
    else:
        mask = blur(mask, 0.35 * size / 320)
    foil = jitter_color(rng, design.foil, 0.02)
    colour_m = _family(defect, "colour")
    if colour_m > 0:
        foil = _shift_color(drng, foil, 0.1 + 0.25 * colour_m)
    blotches = _patchy(drng, size, 0.25 + 0.35 * colour_m if colour_m else 0.0)
    if design.logo_style == "emboss":
        image = _surface(design, rng, size, zoom, body, relief=mask, depth=0.9)
        darkening = 0.35 + 0.35 * colour_m  # a painted-in, uneven stamp instead of a blind emboss
        return image * (1.0 - darkening * mask[..., None] * blotches)
    image = _surface(design, rng, size, zoom, body, relief=mask, depth=0.35)
    if design.logo_style == "foil":
        sheen = 0.8 + 0.4 * fbm(rng, size, 6.0, octaves=2)
        return mix(image, colorize(sheen, foil) * blotches, mask * 0.95)
    ink = 0.92 + 0.08 * fbm(rng, size, size / 10.0, octaves=1)
    return mix(image, colorize(ink, foil) * blotches, mask * 0.9)


# --- stitching ------------------------------------------------------------------------------------
def render_stitching(design: ModelDesign, defect: Defect | None, rng: np.random.Generator, size: int) -> Array:
    brand = design.brand
    drng = _defect_rng(defect)
    zoom = _zoom(rng)
    body = jitter_color(rng, design.body, 0.03)
    image = _surface(design, rng, size, zoom, body)
    seam_angle = float(rng.uniform(-5, 5))
    theta = np.deg2rad(seam_angle)
    u = np.array([np.cos(theta), np.sin(theta)], np.float32)  # along the seam
    n = np.array([-u[1], u[0]], np.float32)  # across it
    center = np.array([size / 2, size / 2 + rng.normal(0, size * 0.05)], np.float32)
    pitch = brand.stitch_pitch * 2.3 * size * zoom  # a close-up: the brand's pitch at detail-photo scale
    thread_w = max(1.0, pitch * 0.3)
    pitch_m = _family(defect, "stitch_pitch")
    angle_m = _family(defect, "stitch_angle")
    pitch_jitter = 0.02 + (0.12 + 0.22 * pitch_m if pitch_m else 0.0)
    slant = brand.stitch_angle
    if angle_m > 0:
        slant += float(drng.choice([-1.0, 1.0])) * (8.0 + 16.0 * angle_m)
    slant_jitter = 1.0 + (5.0 + 10.0 * angle_m if angle_m else 0.0)
    thread = jitter_color(rng, design.thread, 0.03)
    colour_m = _family(defect, "colour")
    if colour_m > 0:
        thread = _shift_color(drng, thread, 0.12 + 0.25 * colour_m)
    # Cheap thread is unevenly dyed: stitch-to-stitch tone changes.
    tone_spread = 0.02 + (0.12 + 0.2 * colour_m if colour_m else 0.0)
    # The panel edge: a painted edge a little below the seam.
    edge_offset = pitch * 1.6
    edge = np.zeros((size, size), np.float32)
    far = size * 1.5
    p0 = center + n * edge_offset - u * far
    p1 = center + n * edge_offset + u * far
    p2 = p1 + n * far
    p3 = p0 + n * far
    cv2.fillConvexPoly(edge, np.array([p0, p1, p2, p3], np.int32), 1.0, cv2.LINE_AA)
    edge_color = np.clip(body * 0.45, 0, 1)
    lower = _surface(design, rng, size, zoom, np.clip(body * 0.92, 0, 1))
    image = mix(image, lower, edge)
    groove = np.zeros((size, size), np.float32)
    cv2.line(groove, tuple((center + n * edge_offset - u * far).astype(int)), tuple((center + n * edge_offset + u * far).astype(int)),
             1.0, max(1, int(pitch * 0.25)), cv2.LINE_AA)
    image = mix(image, edge_color, blur(groove, pitch * 0.1))
    # Stitches: short slanted segments at the pitch; holes at both ends.
    stitches = np.zeros((size, size), np.float32)
    holes = np.zeros((size, size), np.float32)
    count = int(size * 1.5 / pitch) + 2
    start = -count / 2 * pitch
    position = start + float(rng.uniform(0, pitch))
    length = pitch * brand.stitch_length
    for _ in range(count):
        step = pitch * (1.0 + rng.normal(0.0, pitch_jitter))
        position += max(step, pitch * 0.35)
        a = np.deg2rad(slant + rng.normal(0.0, slant_jitter))
        direction = u * np.cos(a) + n * np.sin(a)
        mid = center + u * position
        q0 = mid - direction * length / 2
        q1 = mid + direction * length / 2
        tone = float(np.clip(1.0 + rng.normal(0.0, tone_spread), 0.4, 1.6))
        cv2.line(stitches, (int(q0[0] * 16), int(q0[1] * 16)), (int(q1[0] * 16), int(q1[1] * 16)), tone,
                 max(1, int(thread_w)), cv2.LINE_AA, shift=4)
        for q in (q0, q1):
            cv2.circle(holes, (int(q[0] * 16), int(q[1] * 16)), int(thread_w * 0.55 * 16), 1.0, -1, cv2.LINE_AA, shift=4)
    coverage = np.clip(stitches, 0.0, 1.0)
    height = blur(coverage, thread_w * 0.35)
    lit = np.clip(shade(height, 3.0), 0.6, 1.4)
    image = mix(image, np.clip(body * 0.25, 0, 1), blur(holes, 0.6) * 0.85)
    tone_map = np.where(coverage > 0.05, stitches / np.maximum(coverage, 1e-3), 1.0)
    thread_img = colorize(lit * tone_map * (0.94 + 0.06 * fbm(rng, size, size / 6.0, octaves=1)), thread)
    return mix(image, thread_img, np.clip(coverage * 1.1, 0, 1))


# --- hardware -------------------------------------------------------------------------------------
def _plate_mask(shape: str, size: int, zoom: float, rng: np.random.Generator) -> Array:
    mask = np.zeros((size, size), np.float32)
    c = (int(size / 2 + rng.normal(0, size * 0.025)), int(size / 2 + rng.normal(0, size * 0.025)))
    s = size * zoom
    if shape == "round":
        cv2.circle(mask, c, int(s * 0.33), 1.0, -1, cv2.LINE_AA)
    elif shape == "oval":
        cv2.ellipse(mask, c, (int(s * 0.38), int(s * 0.25)), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    elif shape == "rect":
        w, h = int(s * 0.38), int(s * 0.2)
        cv2.rectangle(mask, (c[0] - w, c[1] - h), (c[0] + w, c[1] + h), 1.0, -1, cv2.LINE_AA)
    else:  # rounded rectangle
        w, h, r = int(s * 0.34), int(s * 0.22), int(s * 0.09)
        cv2.rectangle(mask, (c[0] - w + r, c[1] - h), (c[0] + w - r, c[1] + h), 1.0, -1)
        cv2.rectangle(mask, (c[0] - w, c[1] - h + r), (c[0] + w, c[1] + h - r), 1.0, -1)
        for dx in (-w + r, w - r):
            for dy in (-h + r, h - r):
                cv2.circle(mask, (c[0] + dx, c[1] + dy), r, 1.0, -1, cv2.LINE_AA)
    return mask


def render_hardware(design: ModelDesign, defect: Defect | None, rng: np.random.Generator, size: int) -> Array:
    brand = design.brand
    drng = _defect_rng(defect)
    zoom = _zoom(rng)
    body = jitter_color(rng, design.body, 0.03)
    image = _surface(design, rng, size, zoom, body)
    plate = _plate_mask(brand.hardware_shape, size, zoom, rng)
    ys, xs = np.nonzero(plate > 0.5)
    cx, cy = float(xs.mean()), float(ys.mean())
    plate_w = float(xs.max() - xs.min())
    font = brand.logo_font
    if (m := _family(defect, "font")) > 0:
        font = _lookalike(brand.lookalike_fonts, m)
    word = text_mask(brand.name, TextStyle(font=font, px=int(size * 0.08), tracking=brand.logo_tracking * 0.8))
    engraving = place(word, size, (cx, cy), width=plate_w * 0.72)
    if brand.hardware_shape == "round":
        ring = np.zeros((size, size), np.float32)
        cv2.circle(ring, (int(cx), int(cy)), int(plate_w * 0.42), 1.0, max(1, size // 160), cv2.LINE_AA)
        engraving = np.maximum(engraving, ring)
    if (m := _family(defect, "bleed")) > 0:
        engraving = np.clip(blur(engraving, (0.8 + 2.2 * m) * size / 320) * (1.0 - 0.3 * m), 0, 1)
    finish = jitter_color(rng, FINISHES[brand.finish], 0.015)
    sheen, pitting = 1.0, 0.0
    if (m := _family(defect, "finish")) > 0:
        wrong = [name for name in FINISHES if name != brand.finish]
        target = np.asarray(FINISHES[str(drng.choice(wrong))], np.float32)
        finish = np.clip(finish * (1 - (0.2 + 0.4 * m)) + target * (0.2 + 0.4 * m), 0, 1)
        sheen = 1.0 - 0.45 * m
        pitting = 0.3 + 0.6 * m
    shadow = blur(np.roll(plate, (int(size * 0.02), int(size * 0.015)), axis=(0, 1)), size * 0.02)
    image = image * (1.0 - 0.45 * shadow[..., None])
    metal_img, alpha = metal(rng, plate, finish, engraving, sheen=sheen, pitting=pitting, flaw_rng=drng)
    if (m := _family(defect, "finish")) > 0:
        metal_img = metal_img * _patchy(drng, size, 0.15 + 0.25 * m)  # uneven plating
    return mix(image, metal_img, alpha)


# --- date code ------------------------------------------------------------------------------------
def date_code(rng: np.random.Generator, fmt: str, letters: str) -> str:
    out = []
    for token in fmt:
        if token == "L":
            out.append(str(rng.choice(list(letters))))
        elif token == "D":
            out.append(str(int(rng.integers(0, 10))))
        else:
            out.append(token)
    return "".join(out)


def malform_code(rng: np.random.Generator, code: str, fmt: str, letters: str, magnitude: float) -> str:
    """Breaks the brand's format: a letter where a digit belongs (or the reverse), a wrong length,
    foreign letters or separators; more breaks at higher magnitude."""
    breaks = 1 if magnitude < 0.6 else (2 if magnitude < 0.85 else 3)
    chars = list(code)
    foreign = [c for c in "ABCDEFGHJKLMNPQRSTUVWXYZ" if c not in letters]
    kinds = list(rng.permutation(["swap", "length", "foreign"]))[:breaks]
    for kind in kinds:
        slots = [i for i, t in enumerate(fmt) if t in "LD" and i < len(chars)]
        if kind == "swap" and slots:
            i = int(rng.choice(slots))
            chars[i] = str(int(rng.integers(0, 10))) if fmt[i] == "L" else str(rng.choice(foreign))
        elif kind == "length":
            if rng.random() < 0.5 and len(chars) > 3:
                del chars[int(rng.integers(0, len(chars)))]
            else:
                chars.insert(int(rng.integers(0, len(chars) + 1)), str(int(rng.integers(0, 10))))
        else:
            letter_slots = [i for i in slots if fmt[i] == "L"] or slots
            i = int(rng.choice(letter_slots))
            chars[i] = str(rng.choice(foreign))
    return "".join(chars)


def render_date_code(design: ModelDesign, defect: Defect | None, rng: np.random.Generator, size: int) -> Array:
    brand = design.brand
    drng = _defect_rng(defect)
    zoom = _zoom(rng)
    tab = jitter_color(rng, np.clip(np.asarray(design.body) * 0.85 + 0.05, 0, 1), 0.03)
    code = date_code(rng, brand.date_format, brand.date_letters)
    if (m := _family(defect, "malformed_code")) > 0:
        code = malform_code(drng, code, brand.date_format, brand.date_letters, m)
    font = brand.date_font
    if (m := _family(defect, "font")) > 0:
        font = DATE_LOOKALIKES[min(int(m * 3.9), 3) if m >= 0.55 else 0]
    kern_m = _family(defect, "kerning")
    # A malformed code may be one character longer than the format: draw scene randomness for that.
    n = len(brand.date_format) + 1
    kern, base = _kerning(rng, drng, n, kern_m, natural=0.01)
    rotation = (rng.normal(0.0, 0.6, n) + (drng.normal(0.0, 9.0 * kern_m, n) if kern_m else 0.0)).tolist()
    px = int(size * 0.13 * zoom)
    style = TextStyle(font=font, px=px, tracking=brand.date_tracking, kerning=kern, baseline=base, rotation=rotation)
    word = text_mask(code, style)
    # A stamp has the brand's nominal character pitch, so its width follows the code length.
    width = word.shape[1] * (size * 0.13 * zoom) / px
    center = (size / 2 + rng.normal(0, size * 0.03), size / 2 + rng.normal(0, size * 0.04))
    mask = blur(place(word, size, center, width=min(width, size * 0.95), angle=float(rng.normal(0, 1.0))), 0.5 * size / 320)
    image = _surface(design, rng, size, zoom * 0.8, tab, relief=mask, depth=1.1) if design.material == "leather" else (
        leather(rng, size, tab, grain_px=size * 0.015 * zoom, relief=mask, relief_depth=1.1)[0])
    return image * (1.0 - 0.5 * mask[..., None])


# --- lining ---------------------------------------------------------------------------------------
def render_lining(design: ModelDesign, defect: Defect | None, rng: np.random.Generator, size: int) -> Array:
    drng = _defect_rng(defect)
    zoom = _zoom(rng)
    bg = jitter_color(rng, design.lining_colors[0], 0.025)
    fg = jitter_color(rng, design.lining_colors[1], 0.025)
    colour_m = _family(defect, "colour")
    if colour_m > 0:
        fg = _shift_color(drng, fg, 0.1 + 0.25 * colour_m)
    motif_scale, wobble = 1.0, 0.0
    if (m := _family(defect, "pattern")) > 0:
        motif_scale = 1.0 + float(drng.choice([-1.0, 1.0])) * (0.1 + 0.25 * m)
        wobble = 0.08 + 0.15 * m
    pitch = size * 0.16 * zoom
    registration = (float(rng.uniform(0, pitch)), float(rng.uniform(0, pitch)))
    ghost = (1.0 + 2.5 * colour_m) * size / 176 if colour_m else 0.0
    image = fabric(rng, size, design.lining_pattern, (bg, fg), pitch, design.brand.initials, design.brand.logo_font,
                   registration=registration, motif_scale=motif_scale, wobble=wobble, ghost=ghost, flaw_rng=drng)
    if (m := _family(defect, "bleed")) > 0:
        smeared = blur(image, (0.8 + 2.4 * m) * size / 320)
        image = image * 0.15 + smeared * 0.85
    # A seam along one edge, where the lining is sewn to the bag.
    seam = np.zeros((size, size), np.float32)
    y = int(size * rng.uniform(0.06, 0.14))
    cv2.line(seam, (0, y), (size, y), 1.0, max(1, size // 100), cv2.LINE_AA)
    return mix(image, np.clip(bg * 0.6, 0, 1), blur(seam, 1.0) * 0.7)


# --- overall --------------------------------------------------------------------------------------
def _silhouette(design: ModelDesign, size: int, zoom: float, aspect: float, rng: np.random.Generator) -> tuple[Array, Array, tuple[int, int, int, int]]:
    """Body mask, flap mask and the body box (x0, y0, x1, y1)."""
    body = np.zeros((size, size), np.float32)
    flap = np.zeros((size, size), np.float32)
    height = size * 0.42 * zoom
    width = min(height * aspect, size * 0.8)
    cx = size / 2 + rng.normal(0, size * 0.02)
    bottom = size * 0.84 + rng.normal(0, size * 0.015)
    x0, x1 = cx - width / 2, cx + width / 2
    y0 = bottom - height
    if design.silhouette == "tote":
        pts = np.array([[x0 - width * 0.06, y0], [x1 + width * 0.06, y0], [x1, bottom], [x0, bottom]], np.int32)
        cv2.fillConvexPoly(body, pts, 1.0, cv2.LINE_AA)
    elif design.silhouette == "bucket":
        cv2.rectangle(body, (int(x0), int(y0)), (int(x1), int(bottom - width / 2)), 1.0, -1)
        cv2.ellipse(body, (int(cx), int(bottom - width / 2)), (int(width / 2), int(width / 2)), 0, 0, 180, 1.0, -1, cv2.LINE_AA)
    else:  # satchel and flap: rounded box
        r = int(height * 0.12)
        cv2.rectangle(body, (int(x0) + r, int(y0)), (int(x1) - r, int(bottom)), 1.0, -1)
        cv2.rectangle(body, (int(x0), int(y0) + r), (int(x1), int(bottom) - r), 1.0, -1)
        for dx in (int(x0) + r, int(x1) - r):
            for dy in (int(y0) + r, int(bottom) - r):
                cv2.circle(body, (dx, dy), r, 1.0, -1, cv2.LINE_AA)
        if design.silhouette == "flap":
            pts = np.array([[x0, y0], [x1, y0], [x1, y0 + height * 0.45], [cx, y0 + height * 0.62], [x0, y0 + height * 0.45]], np.int32)
            cv2.fillConvexPoly(flap, pts, 1.0, cv2.LINE_AA)
        else:
            cv2.rectangle(flap, (int(x0), int(y0)), (int(x1), int(y0 + height * 0.3)), 1.0, -1)
    return body, flap, (int(x0), int(y0), int(x1), int(bottom))


def render_overall(design: ModelDesign, defect: Defect | None, rng: np.random.Generator, size: int) -> Array:
    drng = _defect_rng(defect)
    zoom = float(rng.uniform(0.95, 1.05))
    axis = np.arange(size, dtype=np.float32)
    y = axis[:, None]
    backdrop_tone = float(rng.uniform(0.82, 0.95))
    backdrop = colorize(backdrop_tone - 0.12 * (y / size) ** 2 + 0.03 * fbm(rng, size, 2.0, octaves=1), (1.0, 0.99, 0.97))
    body_color = jitter_color(rng, design.body, 0.03)
    colour_m = _family(defect, "colour")
    # A counterfeit's panels often come from different dye lots: one panel (flap or handles) is off.
    panel_color = _shift_color(drng, body_color, 0.12 + 0.25 * colour_m) if colour_m else body_color
    if colour_m:
        body_color = _shift_color(drng, body_color, 0.05 * colour_m)
    shape_m = _family(defect, "shape")
    sign = float(rng.choice([-1.0, 1.0]))
    natural = float(rng.normal(0, 0.01))
    aspect = design.aspect * (1.0 + (sign * (0.06 + 0.16 * shape_m) if shape_m else natural))
    handle = design.handle * (1.0 + float(rng.normal(0, 0.02)))
    lopsided = (0.18 + 0.3 * shape_m) if shape_m else 0.0  # one handle longer than the other
    body, flap, (x0, y0, x1, y1) = _silhouette(design, size, zoom, aspect, rng)
    width, height = x1 - x0, y1 - y0
    material = _surface(design, rng, size, zoom * 0.35, body_color)
    shadow = blur(np.roll(body, int(size * 0.025), axis=0), size * 0.03)
    image = backdrop * (1.0 - 0.35 * shadow[..., None])
    has_flap = bool(flap.any())
    if design.handle > 0:
        handles = np.zeros((size, size), np.float32)
        thickness = max(2, int(size * 0.022))
        centres = (x0 + width * 0.28, x1 - width * 0.28) if design.silhouette != "bucket" else (x0 + width * (0.5 + 0.1 * sign * shape_m),)
        for number, hx in enumerate(centres):
            stretch = 1.0 + (lopsided * sign if number == 1 else 0.0)
            axes = (int(width * (0.16 if design.silhouette != "bucket" else 0.42)), int(height * handle * stretch))
            cv2.ellipse(handles, (int(hx), int(y0)), axes, 0, 180, 360, 1.0, thickness, cv2.LINE_AA)
        handle_color = panel_color if (colour_m and not has_flap) else body_color
        image = mix(image, np.clip(handle_color * 0.8, 0, 1), handles)
    image = mix(image, material, body)
    flap_color = panel_color if colour_m and has_flap else body_color
    flap_img = material * (np.clip(flap_color * 0.82, 0, 1) / np.maximum(body_color, 1e-3))
    image = mix(image, flap_img, flap * (0.9 if colour_m and has_flap else 0.6))
    # Edge stitching: a dashed line inset from the body outline.
    outline = cv2.erode((body > 0.5).astype(np.uint8), np.ones((max(3, size // 40),) * 2, np.uint8))
    contours, _ = cv2.findContours(outline, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    dashes = np.zeros((size, size), np.float32)
    for contour in contours:
        pts = contour[:, 0, :]
        step = max(2, size // 90)
        for i in range(0, len(pts) - step, step * 2):
            cv2.line(dashes, tuple(int(v) for v in pts[i]), tuple(int(v) for v in pts[i + step]), 1.0, 1, cv2.LINE_AA)
    image = mix(image, jitter_color(rng, design.thread, 0.03), dashes * 0.8)
    # Clasp and logo on the front.
    finish = jitter_color(rng, FINISHES[design.brand.finish], 0.015)
    finish_m = _family(defect, "finish")
    if finish_m:
        wrong = np.asarray(FINISHES[str(drng.choice([f for f in FINISHES if f != design.brand.finish]))], np.float32)
        finish = np.clip(finish * (0.45 - 0.25 * finish_m) + wrong * (0.55 + 0.25 * finish_m), 0, 1)
    clasp = np.zeros((size, size), np.float32)
    clasp_y = int(y0 + height * (0.55 if design.silhouette == "flap" else 0.3))
    clasp_x = (x0 + x1) / 2 + (sign * width * 0.06 * shape_m if shape_m else 0.0)
    cv2.ellipse(clasp, (int(clasp_x), clasp_y), (max(3, int(width * 0.11)), max(3, int(height * 0.09))), 0, 0, 360, 1.0, -1, cv2.LINE_AA)
    metal_img, alpha = metal(rng, clasp, finish, None, brushed=False, pitting=0.5 + 0.5 * finish_m if finish_m else 0.0,
                             flaw_rng=drng)
    image = mix(image, metal_img, alpha)
    word = text_mask(design.brand.name, TextStyle(font=design.brand.logo_font, px=max(8, int(size * 0.05)),
                                                  tracking=design.brand.logo_tracking))
    logo_y = y0 + height * (0.78 if design.silhouette == "flap" else 0.62) + float(rng.normal(0, height * 0.01))
    logo_x = (x0 + x1) / 2 + (-sign * width * 0.1 * (0.5 + shape_m) if shape_m else 0.0)
    logo = place(word, size, (logo_x, logo_y), width=width * 0.38)
    return mix(image, jitter_color(rng, design.foil, 0.02), blur(logo, 0.4) * 0.9)


RENDERERS: dict[str, Renderer] = {
    "logo": render_logo,
    "stitching": render_stitching,
    "hardware": render_hardware,
    "date_code": render_date_code,
    "lining": render_lining,
    "overall": render_overall,
}
