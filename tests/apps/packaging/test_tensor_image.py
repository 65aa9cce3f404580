"""The scorer features and panel maps computed with torch (for images decoded on a GPU) against the
numpy/Pillow functions they stand in for, both run here on the CPU."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter

from kiln.apps.packaging import tensor_image
from kiln.apps.packaging.layout import grid_shape
from kiln.apps.packaging.pipeline import panel_image, panel_image_from_tensor
from kiln.apps.packaging.styles import taxonomy
from kiln.apps.packaging.stylescore import FEATURE_NAMES, image_features, render_style_sample

torch = pytest.importorskip("torch")


def _tensor(image: Image.Image) -> object:
    return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).float()


def _photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth scene with noise and a bright object: structure for saliency, texture for the edge features."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 255, (9, 12, 3), dtype=np.uint8)).resize((width, height), Image.Resampling.BICUBIC)
    pixels = np.asarray(base, dtype=np.int16) + rng.integers(-10, 11, (height, width, 1), dtype=np.int16)
    pixels[height // 3 : height // 2, width // 2 : width // 2 + width // 6] = (250, 240, 60)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    styles = taxonomy()
    return [_photo(512, 384, 1), _photo(384, 512, 2), _photo(300, 200, 3)] + [
        render_style_sample(styles[i], rng) for i in (0, len(styles) // 2, len(styles) - 1)
    ]


@pytest.mark.parametrize("index", range(6))
def test_features_match_the_numpy_features(index: int) -> None:
    image = _images()[index]
    want = image_features(image)
    got = tensor_image.image_features(_tensor(image))
    assert got.shape == want.shape == (len(FEATURE_NAMES),) and got.dtype == np.float32
    worst = int(np.argmax(np.abs(got - want)))
    assert abs(got[worst] - want[worst]) < 0.01, f"{FEATURE_NAMES[worst]}: {got[worst]} vs {want[worst]}"


@pytest.mark.parametrize("panel", [(100.0, 150.0), (150.0, 100.0), (80.0, 80.0)])
@pytest.mark.parametrize("index", [0, 1, 3])
def test_panel_maps_match_the_cpu_panel(index: int, panel: tuple[float, float]) -> None:
    image = _images()[index]
    want = panel_image(image, panel)
    got = panel_image_from_tensor(image, _tensor(image), panel)
    height, width = grid_shape(panel)
    assert got.saliency.shape == want.saliency.shape == (height, width)
    assert got.image.size == want.image.size
    np.testing.assert_array_equal(np.asarray(got.image), np.asarray(want.image))
    assert got.saliency.min() == 0.0 and got.saliency.max() == pytest.approx(1.0)
    assert np.abs(got.saliency - want.saliency).mean() < 0.03
    assert np.corrcoef(got.saliency.ravel(), want.saliency.ravel())[0, 1] > 0.99
    assert np.abs(got.gradient - want.gradient).max() < 0.06


def test_thumbnail_size_is_pillows() -> None:
    for width, height in [(512, 384), (384, 512), (341, 512), (512, 129), (64, 40), (30, 20), (500, 1), (1000, 999)]:
        image = Image.new("L", (width, height))
        image.thumbnail((64, 64))
        assert tensor_image.thumbnail_size(width, height, 64) == image.size, (width, height)


def test_gaussian_blur_is_pillows_within_one_level() -> None:
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (43, 64), dtype=np.uint8)
    pixels[10:20, 30:50] = 255
    want = np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius=2)), dtype=float)
    got = tensor_image._gaussian_blur(torch.from_numpy(pixels.astype(np.float64)), 2.0).numpy()
    assert np.abs(got - want).max() <= 1.0


def test_a_flat_image_gives_flat_maps_not_nan() -> None:
    flat = Image.new("RGB", (200, 150), (120, 130, 140))
    features = tensor_image.image_features(_tensor(flat))
    assert np.isfinite(features).all()
    np.testing.assert_allclose(features, image_features(flat), atol=1e-5)
    maps = panel_image_from_tensor(flat, _tensor(flat), (100.0, 150.0))
    assert np.isfinite(maps.saliency).all() and np.isfinite(maps.gradient).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (the maps replay from CUDA graphs there)")
def test_cuda_graph_replays_match_eager_runs_from_several_threads() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from kiln.engine.cuda_graphs import GraphedFunction

    images = [_photo(512, 384, 11), _photo(384, 512, 12), _photo(512, 300, 13), _photo(200, 512, 14)]
    grids = [(43, 64), (64, 43), (64, 64)]
    features = GraphedFunction(tensor_image._features_tensor)
    saliency = GraphedFunction(tensor_image._saliency_tensor)

    def check(index: int) -> None:
        x = _tensor(images[index % len(images)]).cuda()
        small = tensor_image._resize(x.double(), 64, 64)
        want = tensor_image._features_tensor(small).cpu().numpy()
        thumb = tensor_image._thumbnail(x.double(), 48, 64) if x.shape[2] > x.shape[1] else tensor_image._thumbnail(x.double(), 64, 48)
        grid = grids[index % len(grids)]
        want_map = tensor_image._saliency_tensor(thumb, *grid).cpu().numpy()
        for _ in range(3):  # the first call of a shape captures (one thread at a time), the next ones replay
            np.testing.assert_allclose(features(small).cpu().numpy(), want, atol=1e-5)
            np.testing.assert_allclose(saliency(thumb, *grid).cpu().numpy(), want_map, atol=1e-5)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(check, range(24)))
    assert not features.failed and not saliency.failed, "every capture succeeded"
    assert features.captures == 1, "one 64x64 input shape: one graph for every image"
    assert 2 <= saliency.captures <= 6
    got = tensor_image.image_features(_tensor(images[0]).cuda())
    np.testing.assert_allclose(got, image_features(images[0]), atol=0.01)
