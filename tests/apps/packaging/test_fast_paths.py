"""The packaging fast paths answer as the plain ones: concurrent briefs as sequential ones, scalar colour maths
as the vectorised maths to the last bit. Whole responses of two commits are compared by
benchmarks/packaging_outputs.py (on one engine repository: the engines are trained at build time).
"""

from __future__ import annotations

import asyncio
import base64
import io
import random

import numpy as np
from PIL import Image

from kiln.apps.packaging.brief import BriefIn
from kiln.apps.packaging.colour import lch_to_rgb8, rgb8_to_lab_tuple, simulate_cvd, srgb_to_lab
from kiln.apps.packaging.pipeline import PackagingService


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


def test_concurrent_briefs_with_an_image_answer_as_one_at_a_time(service: PackagingService) -> None:
    """The image work runs in threads beside the encoder: racing briefs must not change any answer.

    Recorded values cannot pin the outputs: they depend on the style scorer and the encoder that the
    session trains at build time (benchmarks/packaging_outputs.py compares whole responses of two
    commits on one engine repository); this checks the concurrency the fast path added."""
    url = _png_data_url()
    briefs = [
        BriefIn(keywords="清新 夏日限定 饮料", seed=seed, count=2, reference_images=[url]) for seed in (3, 4, 5)
    ] + [BriefIn(keywords="luxury, black gold, perfume", brand_colors=[{"hex": "#D4AF37", "locked": True}], count=2)]

    async def together() -> list[dict]:
        return [r for r, _ in await asyncio.gather(*(service.recommend(b) for b in briefs))]

    concurrent = [_key_outputs(r) for r in asyncio.run(together())]
    one_by_one = [_key_outputs(asyncio.run(service.recommend(b))[0]) for b in briefs]
    assert concurrent == one_by_one
    assert all(len(p) == 5 for r in concurrent for p in r["palettes"])
    # the locked brand colour is kept exactly, in every direction
    assert all("#D4AF37" in p for p in concurrent[3]["palettes"])


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
