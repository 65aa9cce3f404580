"""Colour-harmony templates: hue offsets (CIELCh degrees) of the secondary and accent colours from
the base hue.

Classic harmony wheels are drawn on RYB or HSV; kiln rotates hues in CIELCh, where equal angles
are closer to equal perceived hue steps, and keeps lightness and chroma per role.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Harmony:
    name: str
    secondary: float
    accent: float
    description: str


HARMONIES: dict[str, Harmony] = {
    h.name: h
    for h in (
        Harmony("monochromatic", 0.0, 0.0, "one hue in several lightness and chroma steps"),
        Harmony("analogous", 30.0, -30.0, "neighbouring hues within 60°"),
        Harmony("complementary", 0.0, 180.0, "base hue with its opposite as accent"),
        Harmony("split_complementary", 150.0, 210.0, "base hue with the two neighbours of its opposite"),
        Harmony("triadic", 120.0, 240.0, "three hues 120° apart"),
        Harmony("tetradic", 90.0, 180.0, "square: hues 90° and 180° away"),
    )
}


def harmony_hues(name: str, base_hue: float) -> dict[str, float]:
    """Hue per role for a template: background and text take the base hue (tinted neutrals)."""
    template = HARMONIES[name]
    return {
        "background": base_hue % 360,
        "primary": base_hue % 360,
        "secondary": (base_hue + template.secondary) % 360,
        "accent": (base_hue + template.accent) % 360,
        "text": base_hue % 360,
    }


def hue_distance(a: float, b: float) -> float:
    """Smallest angle between two hues, in degrees [0, 180]."""
    diff = abs(a - b) % 360
    return min(diff, 360 - diff)
