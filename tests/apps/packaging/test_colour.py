"""Colour science against published reference values."""

from __future__ import annotations

import numpy as np
import pytest

from kiln.apps.packaging.colour import (
    contrast_ratio,
    delta_e_2000,
    lab_to_srgb,
    lch_to_rgb8,
    naive_cmyk,
    parse_hex,
    rgb8_to_lab,
    rgb8_to_lch,
    simulate_cvd,
    srgb_to_lab,
)
from kiln.errors import KilnError

# Sharma, Wu & Dalal (2005), CIEDE2000 test data (pairs 1, 7, 17, 19, 34)
SHARMA = [
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
    ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),
    ((2.0776, 0.0795, -1.135), (0.9033, -0.0636, -0.5514), 0.9082),
]


@pytest.mark.parametrize(("lab1", "lab2", "expected"), SHARMA)
def test_ciede2000_matches_sharma_reference(lab1: tuple[float, ...], lab2: tuple[float, ...], expected: float) -> None:
    assert delta_e_2000(np.array(lab1), np.array(lab2)) == pytest.approx(expected, abs=1e-4)
    assert delta_e_2000(np.array(lab2), np.array(lab1)) == pytest.approx(expected, abs=1e-4)


def test_wcag_contrast_reference_values() -> None:
    assert contrast_ratio((0, 0, 0), (255, 255, 255)) == pytest.approx(21.0)
    assert contrast_ratio((0x77, 0x77, 0x77), (255, 255, 255)) == pytest.approx(4.48, abs=0.01)  # the famous near-miss
    assert contrast_ratio((255, 255, 0), (255, 255, 255)) == pytest.approx(1.07, abs=0.01)


def test_lab_round_trip_and_white_point() -> None:
    assert np.allclose(rgb8_to_lab((255, 255, 255)), [100, 0, 0], atol=1e-6)
    rgb = np.random.default_rng(0).uniform(0, 1, (50, 3))
    assert np.allclose(lab_to_srgb(srgb_to_lab(rgb)), rgb, atol=1e-9)


def test_gamut_mapping_keeps_lightness_and_hue() -> None:
    rgb = lch_to_rgb8(60, 150, 200)  # far outside sRGB
    lightness, _, hue = rgb8_to_lch(rgb)
    assert lightness == pytest.approx(60, abs=0.6)
    assert abs(hue - 200) < 3


def test_hex_parsing() -> None:
    assert parse_hex("#abc") == (0xAA, 0xBB, 0xCC)
    assert parse_hex("FF0000") == (255, 0, 0)
    for bad in ("#12345", "red", "#GGGGGG", ""):
        with pytest.raises(KilnError):
            parse_hex(bad)


def test_naive_cmyk() -> None:
    assert naive_cmyk((255, 0, 0)) == (0.0, 100.0, 100.0, 0.0)
    assert naive_cmyk((0, 0, 0)) == (0.0, 0.0, 0.0, 100.0)


def test_cvd_simulation_keeps_greys_and_merges_red_green() -> None:
    for kind in ("protanopia", "deuteranopia", "tritanopia"):
        grey = simulate_cvd((128, 128, 128), kind)
        assert max(abs(v - 128) for v in grey) <= 2
    red, green = simulate_cvd((200, 40, 40), "deuteranopia"), simulate_cvd((40, 160, 40), "deuteranopia")
    assert delta_e_2000(rgb8_to_lab(red), rgb8_to_lab(green)) < delta_e_2000(rgb8_to_lab((200, 40, 40)), rgb8_to_lab((40, 160, 40))) / 2
