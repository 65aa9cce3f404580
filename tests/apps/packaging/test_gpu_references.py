"""Reference images decoded with torch (nvJPEG on a GPU; libjpeg through torchvision here), and the
style scorer as a torch engine: the same working copy and scores as the CPU path."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiln.apps.packaging.brief import BriefIn
from kiln.apps.packaging.pipeline import PackagingService, reference_decode_device
from kiln.apps.packaging.references import decode_reference
from kiln.errors import KilnError
from tests.photos import encode

pytest.importorskip("torchvision")


def _jpeg(width: int, height: int, *, mode: str = "RGB", orientation: int | None = None, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(width + height)
    base = Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    return encode(base.convert(mode), fmt, orientation=orientation)


@pytest.mark.parametrize(("width", "height", "orientation"), [(4000, 3000, None), (1200, 1800, None), (2000, 1000, 6), (300, 200, None)])
def test_working_copy_matches_the_cpu_path(width: int, height: int, orientation: int | None) -> None:
    data = _jpeg(width, height, orientation=orientation)
    want, want_size = decode_reference(data, with_size=True)
    got, got_size = decode_reference(data, with_size=True, device="cpu")
    assert got_size == want_size == (width, height)
    assert got.size == want.size and got.mode == "RGB"
    diff = np.abs(np.asarray(got, dtype=int) - np.asarray(want, dtype=int)).mean()
    assert diff < 2.0, f"mean pixel difference {diff:.2f}"


def test_other_images_fall_back_to_pillow() -> None:
    for data in (_jpeg(800, 600, mode="CMYK"), _jpeg(800, 600, fmt="PNG")):
        np.testing.assert_array_equal(np.asarray(decode_reference(data, device="cpu")), np.asarray(decode_reference(data)))
    damaged = _jpeg(800, 600)[:2000]
    with pytest.raises(KilnError, match="truncated or corrupted"):
        decode_reference(damaged, device="cpu")


def test_reference_decode_device_follows_the_scorer() -> None:
    import torch

    assert reference_decode_device("cpu", "cuda") is None
    assert reference_decode_device("auto", "cpu") is None
    with pytest.raises(KilnError):
        reference_decode_device("gpu", "cuda")
    if not torch.cuda.is_available():
        assert reference_decode_device("auto", "cuda") is None
        with pytest.raises(KilnError, match="KILN_DECODE_DEVICE"):
            reference_decode_device("cuda", "cpu")


def test_recommend_with_an_image_decoded_by_torch(service: PackagingService) -> None:
    data_url = "data:image/jpeg;base64," + base64.b64encode(_jpeg(4000, 3000)).decode()
    assert service.decode_on is None, "a CPU scorer: Pillow decodes"

    def scores(seed: int) -> dict[str, float]:
        response, timings = asyncio.run(service.recommend(BriefIn(keywords="natural tea", reference_images=[data_url], seed=seed)))
        assert "images" in timings
        return response["directions"][0]["image_style_score"]

    pillow = scores(1)
    service.decode_on = "cpu"
    try:
        torch_scores = scores(2)
    finally:
        service.decode_on = None
    assert set(pillow) == set(torch_scores)
    assert max(abs(pillow[k] - torch_scores[k]) for k in pillow) < 0.05


def test_style_scorer_as_a_torch_engine(tmp_path: Path) -> None:
    from kiln.apps.packaging.engines import SCORER_MODEL, build_style_scorer
    from kiln.engine.artifact import EngineCache
    from kiln.engine.manifest import EngineManifest
    from kiln.progress import NullReporter

    quality = build_style_scorer(tmp_path / "repo", EngineCache(tmp_path / "cache"), NullReporter(), device="cpu")
    manifest = EngineManifest.read(tmp_path / "repo" / SCORER_MODEL / "1")
    assert (manifest.backend, manifest.device, manifest.precision.value) == ("torch", "cpu", "fp32")
    assert quality.checks["top1_agreement"] >= 0.98 and quality.precision == "fp32"
    again = build_style_scorer(tmp_path / "repo", EngineCache(tmp_path / "cache"), NullReporter(), device="cpu")
    assert any("reused" in note for note in again.notes)
    rebuilt = build_style_scorer(tmp_path / "repo", EngineCache(tmp_path / "cache"), NullReporter())
    assert EngineManifest.read(tmp_path / "repo" / SCORER_MODEL / "1").backend == "onnxruntime"
    assert not any("reused" in note for note in rebuilt.notes), "a scorer built for another device is rebuilt"


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU (nvJPEG)")
def test_nvjpeg_working_copy_matches_the_cpu_path() -> None:
    from kiln.apps.packaging.references import _decode_on_device

    data = _jpeg(4000, 3000, orientation=8)
    want = decode_reference(data)
    got = decode_reference(data, device="cuda")
    assert _decode_on_device(data, "cuda", 8) is not None, "nvJPEG decoded it (no Pillow fallback)"
    assert got.size == want.size
    assert np.abs(np.asarray(got, dtype=int) - np.asarray(want, dtype=int)).mean() < 3.0
