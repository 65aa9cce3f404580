"""Acceptance 1: every text/background pair meets the contrast it claims; locked colours are exact.

Criteria: over 240 generated briefs run through the whole pipeline (960 palettes) and 1,400
direct palette generations, including adversarial brand colours (mid-greys #777777/#808080,
saturated yellow #FFFF00, pure red, near-black, pure white), 100 % of claimed pairs reach their
stated minimum when recomputed from the returned hex values, and every locked brand colour is
returned exactly, in the role the palette says.
"""

from __future__ import annotations

import numpy as np

from kiln.apps.packaging.colour import contrast_ratio, parse_hex
from kiln.apps.packaging.palettes import BrandColour, ColourIntent, default_needs, generate_palette
from kiln.apps.packaging.pipeline import PackagingService
from kiln.apps.packaging.styles import taxonomy

from .conftest import recommend

ADVERSARIAL = ["#777777", "#808080", "#FFFF00", "#FF0000", "#0A0A0A", "#FFFFFF", "#000000", "#00FF00", "#7F7F7F", "#3366FF"]
KEYWORDS = ["fresh", "luxury, black gold", "playful candy", "国潮 红色", "clinical skincare", "vintage coffee", "清新 夏日限定",
            "organic tea", "bold pop neon", "莫兰迪 高级灰", "festive gift", "tech headphones", "pastel", "dark moody"]


def _check(palette: dict, locked: list[str]) -> int:
    colours = {c["role"]: c for c in palette["colours"]}
    checked = 0
    for pair in palette["contrast"]:
        ratio = contrast_ratio(parse_hex(colours[pair["foreground"]]["hex"]), parse_hex(colours[pair["background"]]["hex"]))
        assert ratio >= pair["minimum"], (pair, colours)
        assert pair["minimum"] in (4.5, 3.0) and pair["passes"]
        assert abs(ratio - pair["ratio"]) < 0.01
        checked += 1
    roles_of_body = {(p["foreground"], p["background"]) for p in palette["contrast"]}
    assert ("text", "background") in roles_of_body and ("primary", "background") in roles_of_body
    returned = {c["hex"] for c in palette["colours"] if c["locked"]}
    assert set(locked) <= returned, (locked, palette["colours"])
    return checked


def test_contrast_claims_hold_over_hundreds_of_briefs(service: PackagingService) -> None:
    rng = np.random.default_rng(7)
    pairs = palettes = 0
    for index in range(240):
        chosen = rng.choice(len(ADVERSARIAL), size=int(rng.integers(0, 4)), replace=False)
        brand = [{"hex": ADVERSARIAL[i], "locked": bool(rng.integers(0, 2))} for i in chosen]
        locked = [b["hex"] for b in brand if b["locked"]]
        response = recommend(
            service, keywords=KEYWORDS[index % len(KEYWORDS)], product=["beverage", "perfume", "snack", ""][index % 4],
            brand_colors=brand, seed=index, count=4,
        )
        for direction in response["directions"]:
            pairs += _check(direction["palette"], locked)
            palettes += 1
    assert palettes == 960 and pairs >= 2 * palettes


def test_direct_generation_with_adversarial_locks() -> None:
    rng = np.random.default_rng(3)
    for index in range(1400):
        style = taxonomy()[index % len(taxonomy())]
        chosen = rng.choice(len(ADVERSARIAL), size=int(rng.integers(1, 5)), replace=False)
        brand = [BrandColour(ADVERSARIAL[i], locked=bool(rng.integers(0, 2))) for i in chosen]
        intent = ColourIntent(light=float(rng.uniform(-2, 2)), cool=float(rng.uniform(-1, 1)), vivid=float(rng.uniform(-1, 1)))
        palette = generate_palette(style, intent, brand, default_needs(bool(index % 2)), np.random.default_rng(index))
        for pair in palette.pairs:
            assert contrast_ratio(palette.colours[pair.need.foreground], palette.colours[pair.need.background]) >= pair.need.minimum
        for role, hex_ in palette.locked.items():
            assert palette.hex(role) == hex_
        assert {c.hex for c in brand if c.locked} == set(palette.locked.values())


def test_mid_grey_and_yellow_locked_together() -> None:
    brand = [BrandColour("#777777", True), BrandColour("#FFFF00", True), BrandColour("#808080", True)]
    palette = generate_palette(taxonomy()[0], ColourIntent(), brand, default_needs(), np.random.default_rng(0))
    assert sorted(palette.locked.values()) == ["#777777", "#808080", "#FFFF00"]
    assert all(p.passes for p in palette.pairs)


def test_unlocked_brand_colour_reports_delta_e(service: PackagingService) -> None:
    response = recommend(service, keywords="fresh", brand_colors=[{"hex": "#FFFF00"}], count=2)
    for direction in response["directions"]:
        entries = direction["palette"]["colours"]
        assert all("#FFFF00" in e["delta_e_brand"] for e in entries)
        source = [e for e in entries if e["from_brand"] == "#FFFF00"]
        assert source, "the unlocked brand colour becomes a role"
        assert direction["palette"]["colour_blindness"]["deuteranopia"]["min_delta_e"] >= 0
