"""The quality gate's metrics measured with torch (on the GPU in production) equal OpenCV's on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from kiln.apps.authenticity.gpu_imaging import decode_and_measure
from kiln.apps.authenticity.gpu_quality import FIELDS, _metrics_tensor, measure_batch, to_metrics
from kiln.apps.authenticity.model import PREPROCESSING
from kiln.apps.authenticity.quality import measure

from .test_gpu_imaging import _photo

torch = pytest.importorskip("torch")


def _crops() -> np.ndarray:
    """Model-size crops that exercise every metric: texture, blur, dark, washed out, glare, a colour cast."""
    rng = np.random.default_rng(7)
    base = Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).resize((160, 160), Image.Resampling.BICUBIC)
    textured = np.clip(np.asarray(base, dtype=np.int16) + rng.integers(-40, 40, (160, 160, 3)), 0, 255).astype(np.uint8)
    blurred = np.asarray(Image.fromarray(textured).filter(ImageFilter.GaussianBlur(4)))
    dark = (textured // 12).astype(np.uint8)
    bright = np.clip(textured.astype(np.int16) + 170, 0, 255).astype(np.uint8)
    glare = textured.copy()
    glare[40:90, 50:120] = 250
    warm = np.clip(textured.astype(np.int16) * np.array([1.3, 1.0, 0.6]), 0, 255).astype(np.uint8)
    edges = np.zeros((160, 160, 3), np.uint8)
    edges[:, ::8] = 255
    return np.stack([textured, blurred, dark, bright, glare, warm, edges])


def test_metrics_equal_opencvs() -> None:
    crops = _crops()
    got = _metrics_tensor(torch.from_numpy(crops)).numpy()
    assert got.shape == (len(crops), len(FIELDS)) and got.dtype == np.float32
    for row, crop in zip(got, crops, strict=True):
        want = measure(crop, 1024, 768)
        have = to_metrics(row, 1024, 768)
        assert (have.width, have.height) == (1024, 768)
        for name in FIELDS:
            a, b = getattr(have, name), getattr(want, name)
            tolerance = 1e-4 * max(1.0, abs(b)) if name == "sharpness" else 1e-5
            assert abs(a - b) <= tolerance, f"{name}: {a} vs OpenCV {b}"


def test_decode_and_measure_gives_the_metrics_of_the_decoded_pixels() -> None:
    blobs = [_photo(1024, 1024, seed=1), _photo(640, 480, seed=2), _photo(300, 200, fmt="PNG", seed=3)]
    photos, metrics = decode_and_measure(blobs, ["a", "b", "c"], PREPROCESSING, "cpu")
    assert len(photos) == len(metrics) == 3
    assert metrics[2] is None, "a PNG takes the CPU path; the pipeline measures it there"
    for photo, got in zip(photos[:2], metrics[:2], strict=True):
        assert got is not None
        want = measure(photo.pixels, photo.width, photo.height)
        assert (got.width, got.height) == (want.width, want.height)
        assert abs(got.sharpness - want.sharpness) <= 1e-4 * want.sharpness
        assert abs(got.brightness - want.brightness) < 1e-5 and got.edge_density == pytest.approx(want.edge_density, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the metrics replay from a CUDA graph there)")
def test_cuda_graph_metrics_equal_the_cpu_ones() -> None:
    crops = _crops()
    want = _metrics_tensor(torch.from_numpy(crops)).numpy()
    for _ in range(3):
        got = measure_batch(torch.from_numpy(crops).cuda()).cpu().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
