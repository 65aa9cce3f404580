"""GPU preprocessing, exercised on the CPU device (same code): agrees with the Pillow path."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from kiln.engine.gpu_images import decode_batch, preprocess_batch
from kiln.engine.images import decode_image, preprocess
from kiln.engine.spec import Preprocessing
from kiln.errors import KilnError, PayloadTooLargeError
from tests.photos import encode


def _photo(width: int, height: int, fmt: str = "JPEG", orientation: int | None = None) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1).astype(np.uint8)
    return encode(Image.fromarray(pixels), fmt, orientation=orientation, quality=95)


@pytest.mark.parametrize("input_format", ["float32", "uint8"])
def test_matches_the_pillow_path(input_format: str) -> None:
    pre = Preprocessing(input_size=(3, 64, 64), input_format=input_format)
    blobs = [_photo(320, 240), _photo(200, 300, "PNG"), _photo(256, 256, orientation=6)]
    batch = preprocess_batch(decode_batch(blobs, "cpu"), pre).numpy()
    want = np.stack([preprocess(decode_image(b), pre) for b in blobs])
    assert batch.shape == want.shape and batch.dtype == want.dtype
    diff = np.abs(batch.astype(np.float32) - want.astype(np.float32))
    scale = 255.0 if input_format == "uint8" else 1.0 / 0.225
    assert diff.mean() < 0.03 * scale, "same geometry and orientation as Pillow, small resampling differences"


def test_exif_orientation_is_applied() -> None:
    rotated = decode_batch([_photo(120, 60, orientation=6)], "cpu")[0]
    assert tuple(rotated.shape) == (3, 120, 60), "orientation 6 turns a landscape photo into a portrait"


def test_bad_images_are_named() -> None:
    good = _photo(64, 64)
    with pytest.raises(KilnError, match="photo 2"):
        decode_batch([good, good[: len(good) // 3]], "cpu", names=["photo 1", "photo 2"])
    with pytest.raises(KilnError, match="not a readable image"):
        decode_batch([b"definitely not an image"], "cpu")
    with pytest.raises(PayloadTooLargeError):
        decode_batch([_photo(400, 400)], "cpu", max_pixels=1000)
