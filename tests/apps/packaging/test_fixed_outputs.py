"""Fixed briefs give fixed key outputs: a speed-up of the pipeline must not change what it answers.

The values were recorded before the numpy-free scalar colour paths, the cached font ranking and the
concurrent image work; benchmarks/packaging_outputs.py compares whole responses and assets over 80 briefs.
"""

from __future__ import annotations

import base64
import io
import random

import numpy as np
from PIL import Image

from kiln.apps.packaging.colour import lch_to_rgb8, rgb8_to_lab_tuple, simulate_cvd, srgb_to_lab
from kiln.apps.packaging.pipeline import PackagingService

from .conftest import recommend


def _png_data_url() -> str:
    rng = np.random.default_rng(7)
    image = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((640, 480), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _key_outputs(response: dict) -> dict:
    return {
        "id": response["id"],
        "styles": [d["style"]["id"] for d in response["directions"]],
        "palettes": [[c["hex"] for c in d["palette"]["colours"]] for d in response["directions"]],
        "templates": [d["layout"]["template"] for d in response["directions"]],
        "cvd": [d["palette"]["colour_blindness"]["deuteranopia"]["min_delta_e"] for d in response["directions"]],
    }


def test_chinese_brief_with_an_image_gives_its_recorded_outputs(service: PackagingService) -> None:
    response = recommend(service, keywords="清新 夏日限定 饮料", seed=3, count=2, reference_images=[_png_data_url()])
    assert _key_outputs(response) == {
        "id": "fb76c6012c0f8463d942cbd74fc6a180",
        "styles": ["fresh", "bold_pop"],
        "palettes": [["#DCEBF6", "#008BB9", "#F7B7AA", "#BEAC3F", "#133B4E"], ["#00F4EF", "#008B88", "#3E8CFF", "#FF5D7F", "#0E2625"]],
        "templates": ["split (over image)", "footer_name (over image)"],
        "cvd": [33.41, 20.68],
    }


def test_locked_brand_colour_brief_gives_its_recorded_outputs(service: PackagingService) -> None:
    response = recommend(service, keywords="luxury, black gold, perfume", brand_colors=[{"hex": "#D4AF37", "locked": True}], count=2)
    assert _key_outputs(response) == {
        "id": "a7309d4adfef4ceecac149e58f39f400",
        "styles": ["luxury", "elegant"],
        "palettes": [["#151108", "#D4AF37", "#34372B", "#975C34", "#F1EBE2"], ["#252118", "#B2A58B", "#463C23", "#D4AF37", "#F4F1ED"]],
        "templates": ["split", "split"],
        "cvd": [25.52, 17.37],
    }


def test_scalar_colour_paths_equal_the_vectorised_ones_to_the_last_bit() -> None:
    from kiln.apps.packaging.colour import CVD_MATRICES, linear_to_srgb, srgb_to_linear, unit_to_rgb8

    rng = random.Random(0)
    for _ in range(2000):
        rgb = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
        unit = np.asarray(rgb, dtype=np.float64) / 255.0
        assert rgb8_to_lab_tuple(rgb) == tuple(float(v) for v in srgb_to_lab(unit))
        for kind, matrix in CVD_MATRICES.items():
            expected = unit_to_rgb8(linear_to_srgb(np.clip(matrix @ srgb_to_linear(unit), 0.0, 1.0)))
            assert simulate_cvd(rgb, kind) == expected
    # the gamut search keeps the lightness and hue it was given
    assert lch_to_rgb8(50.0, 0.0, 0.0) == lch_to_rgb8(50.0, 0.0, 180.0)
