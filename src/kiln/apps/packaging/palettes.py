"""Role-based palettes: background, primary, secondary, accent and text, from a style recipe, the
brief's colour intent and the brand colours, with every text/background pair meeting the WCAG
contrast it claims.

How a palette is made:

1. **Mode**: the style's usual background (light or dark), flipped when the brief clearly asks
   for the other (lexicon hints such as "black gold" or "pastel").
2. **Hues**: a base hue from the first chromatic brand colour, else from the brief's colour words,
   else from the style's hue ranges (narrowed to cool or warm when the brief leans that way); the
   harmony template places secondary and accent.
3. **Lightness and chroma** per role drawn from the style's ranges with a seeded generator.
4. **Brand colours**: locked ones take the roles that fit them best (every assignment is tried,
   cheapest first, until contrast can be met) and are never changed; the first unlocked one
   becomes the primary colour and may be adjusted (its ΔE2000 is reported).
5. **Contrast**: for each free role, the WCAG relative luminance it needs against its partners
   is solved in closed form (CIELAB L* fixes Y), lightness is moved the least distance that
   satisfies every pair, and the result is checked again on the final 8-bit colours.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kiln.apps.packaging.colour import (
    AA_LARGE,
    AA_NORMAL,
    contrast_ratio,
    delta_e_2000,
    lch_to_rgb8,
    parse_hex,
    relative_luminance,
    rgb8_to_lab_tuple,
    rgb8_to_lch,
    simulate_cvd,
    to_hex,
)
from kiln.apps.packaging.harmony import HARMONIES, harmony_hues, hue_distance
from kiln.apps.packaging.styles import ROLES, RoleRange, Style
from kiln.errors import KilnError

RGB = tuple[int, int, int]
_MARGIN = 0.04  # aim a little above each minimum so 8-bit rounding cannot undo it
CVD_MIN_DELTA_E = 10.0


@dataclass(frozen=True)
class BrandColour:
    hex: str
    locked: bool = False

    @property
    def rgb(self) -> RGB:
        return parse_hex(self.hex)


@dataclass(frozen=True)
class ContrastNeed:
    """A text/background pair the design uses, and the WCAG AA level its text size calls for."""

    usage: str
    foreground: str
    background: str
    minimum: float

    @property
    def level(self) -> str:
        return "AA normal text (≥ 4.5:1)" if self.minimum >= AA_NORMAL else "AA large display text (≥ 3:1)"


def default_needs(large_heading: bool = True) -> list[ContrastNeed]:
    return [
        ContrastNeed("body text, tagline, claims and legal on the panel", "text", "background", AA_NORMAL),
        ContrastNeed("product name", "primary", "background", AA_LARGE if large_heading else AA_NORMAL),
        ContrastNeed("claims badge text", "text", "accent", AA_NORMAL),
    ]


@dataclass
class ColourIntent:
    """What the brief's words say about colour: + light / − dark, + cool / − warm, + vivid / − muted."""

    light: float = 0.0
    cool: float = 0.0
    vivid: float = 0.0
    hues: list[tuple[float, float, float]] = field(default_factory=list)


@dataclass
class PairResult:
    need: ContrastNeed
    ratio: float

    @property
    def passes(self) -> bool:
        return self.ratio >= self.need.minimum


@dataclass
class Palette:
    colours: dict[str, RGB]
    locked: dict[str, str]  # role → the brand hex it holds
    adjusted_brand: dict[str, str]  # role → the unlocked brand hex it was derived from
    harmony: str
    base_hue: float
    mode: str
    pairs: list[PairResult]
    notes: list[str] = field(default_factory=list)

    def hex(self, role: str) -> str:
        return to_hex(self.colours[role])


# --- role ranges per mode ----------------------------------------------------------------------
_DARK_FLIP = {
    "background": ((6.0, 16.0), 8.0),
    "primary": ((60.0, 74.0), None),
    "secondary": ((24.0, 36.0), None),
    "accent": ((66.0, 80.0), None),
    "text": ((90.0, 97.0), 8.0),
}
_LIGHT_FLIP = {
    "background": ((90.0, 96.0), 10.0),
    "primary": ((30.0, 45.0), None),
    "secondary": ((78.0, 88.0), None),
    "accent": ((50.0, 65.0), None),
    "text": ((10.0, 20.0), 10.0),
}


def role_ranges(style: Style, mode: str) -> dict[str, RoleRange]:
    if mode == style.palette.mode:
        return dict(style.palette.roles)
    flip = _DARK_FLIP if mode == "dark" else _LIGHT_FLIP
    ranges: dict[str, RoleRange] = {}
    for role, base in style.palette.roles.items():
        lightness, max_chroma = flip[role]
        chroma = base.chroma if max_chroma is None else (min(base.chroma[0], max_chroma), min(base.chroma[1], max_chroma))
        ranges[role] = RoleRange(lightness, chroma)
    return ranges


def choose_mode(style: Style, intent: ColourIntent) -> str:
    if intent.light <= -0.8:
        return "dark"
    if intent.light >= 0.8:
        return "light"
    return style.palette.mode


def _intersect(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float] | None:
    low, high = max(a[0], b[0]), min(a[1], b[1])
    return (low, high) if high > low else None


def hue_ranges(style: Style, intent: ColourIntent) -> list[tuple[float, float, float]]:
    """Weighted hue ranges to draw the base hue from."""
    if intent.hues:
        return list(intent.hues)
    ranges = [(float(a), float(b), 1.0) for a, b in style.palette.hues]
    temperature: tuple[float, float] | None = None
    if intent.cool >= 0.3:
        temperature = (150.0, 290.0)
    elif intent.cool <= -0.3:
        temperature = (10.0, 100.0)
    if temperature is None:
        return ranges
    narrowed = [(r[0], r[1], 1.0) for a, b, _ in ranges if (r := _intersect((a, b), temperature))]
    return narrowed or [(temperature[0], temperature[1], 1.0)]


def _draw_hue(ranges: list[tuple[float, float, float]], rng: np.random.Generator) -> float:
    weights = np.array([max(b - a, 1.0) * w for a, b, w in ranges])
    index = int(rng.choice(len(ranges), p=weights / weights.sum()))
    low, high, _ = ranges[index]
    return float(rng.uniform(low, high)) % 360


# --- WCAG luminance ↔ CIELAB lightness (closed form: L* depends on Y only) ----------------------
def lightness_for_luminance(y: float) -> float:
    y = min(max(y, 0.0), 1.0)
    f = np.cbrt(y) if y > (6 / 29) ** 3 else y / (3 * (6 / 29) ** 2) + 4 / 29
    return float(116 * f - 16)


def luminance_for_lightness(lightness: float) -> float:
    f = (lightness + 16) / 116
    return float(f**3 if f > 6 / 29 else 3 * (6 / 29) ** 2 * (f - 4 / 29))


def _allowed_luminance(partners: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Intervals of Y in [0, 1] that reach ``ratio`` against every partner (luminance, ratio)."""
    allowed = [(0.0, 1.0)]
    for y_partner, ratio in partners:
        target = ratio + _MARGIN
        darker = (0.0, (y_partner + 0.05) / target - 0.05)
        lighter = (target * (y_partner + 0.05) - 0.05, 1.0)
        options = [r for r in (darker, lighter) if r[1] >= r[0]]
        allowed = [piece for a in allowed for o in options if (piece := _intersect_closed(a, o))]
        if not allowed:
            return []
    return allowed


def _intersect_closed(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float] | None:
    low, high = max(a[0], b[0]), min(a[1], b[1])
    return (low, high) if high >= low else None


def _nearest_lightness(current: float, allowed: list[tuple[float, float]]) -> float | None:
    best: float | None = None
    for low, high in allowed:
        l_low, l_high = lightness_for_luminance(low), lightness_for_luminance(high)
        candidate = min(max(current, l_low), l_high)
        if best is None or abs(candidate - current) < abs(best - current):
            best = candidate
    return best


# --- generation --------------------------------------------------------------------------------
def _draw_role(rng: np.random.Generator, spec: RoleRange, hue: float, vivid: float) -> tuple[float, float, float]:
    lightness = float(rng.uniform(*spec.lightness))
    scale = 1.0 + 0.25 * max(-1.0, min(1.0, vivid))
    chroma = float(rng.uniform(*spec.chroma)) * scale
    return lightness, chroma, hue


def _assignment_cost(rgb: RGB, spec: RoleRange) -> float:
    lightness, chroma, _ = rgb8_to_lch(rgb)
    low, high = spec.lightness
    l_cost = max(0.0, low - lightness, lightness - high) / 10.0
    c_cost = max(0.0, spec.chroma[0] - chroma, chroma - spec.chroma[1]) / 25.0
    return float(l_cost + c_cost)


def _assignments(locked: list[BrandColour], ranges: dict[str, RoleRange]) -> list[dict[str, RGB]]:
    """Every placement of the locked colours on distinct roles, cheapest (best fitting) first."""
    if not locked:
        return [{}]
    options: list[tuple[float, int, dict[str, RGB]]] = []
    preference = {"primary": 0.0, "accent": 0.05, "secondary": 0.1, "background": 0.15, "text": 0.2}
    for index, roles in enumerate(itertools.permutations(ROLES, len(locked))):
        cost = sum(_assignment_cost(c.rgb, ranges[r]) + preference[r] for c, r in zip(locked, roles, strict=True))
        options.append((cost, index, {r: c.rgb for c, r in zip(locked, roles, strict=True)}))
    options.sort(key=lambda item: (item[0], item[1]))
    return [assignment for _, _, assignment in options]


def _partners(role: str, needs: list[ContrastNeed]) -> list[tuple[str, float]]:
    result = []
    for need in needs:
        if need.foreground == role:
            result.append((need.background, need.minimum))
        elif need.background == role:
            result.append((need.foreground, need.minimum))
    return result


def _repair(
    lch: dict[str, tuple[float, float, float]], fixed: dict[str, RGB], needs: list[ContrastNeed], rounds: int = 6
) -> dict[str, RGB] | None:
    """Move free roles' lightness the least distance that meets every pair; None if impossible."""
    colours = {role: fixed.get(role) or lch_to_rgb8(*lch[role]) for role in ROLES}
    order = ("background", "accent", "primary", "secondary", "text")
    for _ in range(rounds):
        if all(contrast_ratio(colours[n.foreground], colours[n.background]) >= n.minimum for n in needs):
            return colours
        for role in order:
            if role in fixed:
                continue
            partners = [(relative_luminance(colours[p]), ratio) for p, ratio in _partners(role, needs)]
            if not partners:
                continue
            if all(contrast_ratio(colours[role], colours[p]) >= r for p, r in _partners(role, needs)):
                continue
            allowed = _allowed_luminance(partners)
            lightness, chroma, hue = lch[role]
            target = _nearest_lightness(lightness, allowed)
            if target is None:
                continue
            for nudge in (0.0, 0.4, 0.8, 1.6):  # 8-bit rounding can land a hair short of the minimum
                direction = 1.0 if target >= lightness else -1.0
                candidate = min(100.0, max(0.0, target + direction * nudge))
                rgb = lch_to_rgb8(candidate, chroma, hue)
                if all(contrast_ratio(rgb, colours[p]) >= r for p, r in _partners(role, needs)):
                    break
            lch[role] = (candidate, chroma, hue)
            colours[role] = rgb
    if all(contrast_ratio(colours[n.foreground], colours[n.background]) >= n.minimum for n in needs):
        return colours
    return None


def generate_palette(
    style: Style,
    intent: ColourIntent,
    brand: list[BrandColour],
    needs: list[ContrastNeed],
    rng: np.random.Generator,
) -> Palette:
    """One palette for one direction; locked brand colours are returned exactly."""
    mode = choose_mode(style, intent)
    ranges = role_ranges(style, mode)
    chromatic = [c for c in brand if rgb8_to_lch(c.rgb)[1] > 8.0]
    base_hue = float(rgb8_to_lch(chromatic[0].rgb)[2]) if chromatic else _draw_hue(hue_ranges(style, intent), rng)
    harmony = str(rng.choice(style.palette.harmonies))
    if harmony not in HARMONIES:
        raise KilnError(f"style {style.id} names unknown harmony {harmony!r}")
    hues = harmony_hues(harmony, base_hue)
    drawn = {role: _draw_role(rng, ranges[role], hues[role], intent.vivid) for role in ROLES}
    locked = [c for c in brand if c.locked]
    unlocked = [c for c in brand if not c.locked]
    notes: list[str] = []
    for assignment in _assignments(locked, ranges)[:60]:
        lch = dict(drawn)
        adjusted: dict[str, str] = {}
        if unlocked:
            free = [r for r in ("primary", "accent", "secondary") if r not in assignment]
            if free:
                role = free[0]
                lch[role] = tuple(float(v) for v in rgb8_to_lch(unlocked[0].rgb))  # type: ignore[assignment]
                adjusted[role] = to_hex(unlocked[0].rgb)
        active = list(needs)
        colours = _repair(lch, assignment, active)
        if colours is None and "accent" in assignment:
            # a locked accent that no text colour can sit on: set claims on the background instead
            active = [n for n in needs if n.background != "accent"]
            colours = _repair(dict(lch), assignment, active)
            if colours is not None:
                notes.append(
                    f"claims are set on the background: the locked accent {to_hex(assignment['accent'])} "
                    "cannot carry text at AA contrast"
                )
        if colours is None:
            continue
        pairs = [PairResult(n, round(contrast_ratio(colours[n.foreground], colours[n.background]), 2)) for n in active]
        for role, source in adjusted.items():
            if to_hex(colours[role]) != source:
                notes.append(f"brand colour {source} (unlocked) became {to_hex(colours[role])} to meet contrast")
        return Palette(
            colours=colours,
            locked={role: to_hex(rgb) for role, rgb in assignment.items()},
            adjusted_brand=adjusted,
            harmony=harmony,
            base_hue=round(base_hue, 1),
            mode=mode,
            pairs=pairs,
            notes=notes,
        )
    raise KilnError(
        "the locked brand colours cannot all be used with readable text: "
        + ", ".join(c.hex for c in locked),
        hint="unlock one of them, or lock fewer colours",
        status=422,
    )


# --- reporting ---------------------------------------------------------------------------------
def brand_distances(palette: Palette, brand: list[BrandColour]) -> dict[str, dict[str, float]]:
    """ΔE2000 from every palette colour to every brand colour."""
    labs = {c.hex: rgb8_to_lab_tuple(c.rgb) for c in brand}
    return {
        role: {hex_: round(delta_e_2000(rgb8_to_lab_tuple(rgb), lab), 2) for hex_, lab in labs.items()}
        for role, rgb in palette.colours.items()
    }


_DISTINGUISH = (("primary", "background"), ("accent", "background"), ("primary", "accent"), ("primary", "secondary"))


def colour_blindness_check(palette: Palette) -> dict[str, Any]:
    """Machado 2009 simulation of protanopia, deuteranopia and tritanopia: contrast of each pair and
    the smallest ΔE2000 between roles that must stay distinguishable (≥ 10 counts as distinct)."""
    report: dict[str, Any] = {}
    for kind in ("protanopia", "deuteranopia", "tritanopia"):
        simulated = {role: simulate_cvd(rgb, kind) for role, rgb in palette.colours.items()}
        pairs: list[dict[str, Any]] = [
            {
                "usage": p.need.usage,
                "ratio": round(contrast_ratio(simulated[p.need.foreground], simulated[p.need.background]), 2),
                "minimum": p.need.minimum,
            }
            for p in palette.pairs
        ]
        distances = [
            (round(delta_e_2000(rgb8_to_lab_tuple(simulated[a]), rgb8_to_lab_tuple(simulated[b])), 2), f"{a}/{b}")
            for a, b in _DISTINGUISH
        ]
        smallest = min(distances)
        contrast_ok = all(p["ratio"] >= p["minimum"] for p in pairs)
        report[kind] = {
            "simulated": {role: to_hex(rgb) for role, rgb in simulated.items()},
            "pairs": pairs,
            "min_delta_e": smallest[0],
            "closest_roles": smallest[1],
            "ok": bool(contrast_ok and smallest[0] >= CVD_MIN_DELTA_E),
        }
    return report


def warmth(hue: float) -> float:
    """+1 at the coolest hue (≈ 250°, blue-cyan), −1 at the warmest (≈ 50°, orange)."""
    return -math.cos(math.radians(hue - 250.0)) if hue_distance(hue, 250.0) <= 180 else 0.0
