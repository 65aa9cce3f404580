"""Photo decoding for the app: accepted formats, limits, and a fast path to the model's input size.

JPEGs are decoded in the DCT domain at the smallest scale (1/2, 1/4, 1/8) that still covers the
model's input (PIL ``draft``), which makes a 1024×1024 photo several times cheaper to decode. The
rest follows the engine's preprocessing (``kiln.engine.images``), so training, calibration and
serving see the same pixels.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from kiln.engine.images import resize_and_crop, to_rgb
from kiln.engine.spec import Preprocessing
from kiln.errors import KilnError, PayloadTooLargeError

ACCEPTED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
DEFAULT_MAX_PIXELS = 40_000_000
MIN_SIDE = 64
_EXIF_ORIENTATION = 0x0112  # below this nothing useful can be seen; the quality gate has its own, higher bar


class UnsupportedMediaError(KilnError):
    """A file that is not one of the accepted image formats."""

    status = 415


@dataclass
class DecodedPhoto:
    """A photo ready for the model: the square model-size crop plus facts about the original."""

    pixels: np.ndarray  # uint8 HxWx3 at the model's input size
    width: int  # original size, after EXIF orientation
    height: int
    format: str
    sha256: str

    @property
    def content_type(self) -> str:
        return ACCEPTED_FORMATS.get(self.format, "application/octet-stream")


@dataclass(frozen=True)
class PhotoHeader:
    """What a photo's header says, read once (``read_header``) and reused by the decoders."""

    format: str
    width: int  # as stored, before EXIF orientation
    height: int
    mode: str
    orientation: int  # EXIF orientation (1 when there is none, and for formats other than JPEG)


def read_header(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> PhotoHeader:
    """Format, size, mode and orientation from the header only; refuses non-images, other formats
    and decompression bombs."""
    if not data:
        raise KilnError(f"{name}: the file is empty")
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height), mode = str(image.format), image.size, str(image.mode)
            try:
                value = image.getexif().get(_EXIF_ORIENTATION, 1) if fmt == "JPEG" else 1
            except (OSError, ValueError, SyntaxError) as exc:
                raise KilnError(f"{name}: {fmt} data is truncated or corrupted ({exc})",
                                hint="upload the original file") from exc
            # an orientation that is not one of EXIF's eight values is ignored, as Pillow's transpose does
            orientation = value if isinstance(value, int) and 1 <= value <= 8 else 1
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnsupportedMediaError(
            f"{name}: not a readable image", hint="upload a JPEG, PNG or WebP photo"
        ) from exc
    if fmt not in ACCEPTED_FORMATS:
        raise UnsupportedMediaError(f"{name}: {fmt} images are not accepted", hint="upload a JPEG, PNG or WebP photo")
    if width * height > max_pixels:
        raise PayloadTooLargeError(
            f"{name}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels}",
            hint="downscale the photo before uploading",
        )
    if min(width, height) < MIN_SIDE:
        raise KilnError(f"{name}: {width}x{height} pixels is too small (at least {MIN_SIDE} per side)",
                        hint="upload the photo at full resolution")
    return PhotoHeader(fmt, width, height, mode, orientation)


def probe(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, int, int]:
    """Format and size from the header only (``read_header``'s checks)."""
    header = read_header(data, name, max_pixels)
    return header.format, header.width, header.height


def decode_photo(data: bytes, pre: Preprocessing, *, name: str = "photo", max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedPhoto:
    """Bytes → model-size RGB crop; EXIF orientation, CMYK, grayscale, alpha and 16-bit handled."""
    fmt, _, _ = probe(data, name, max_pixels)
    _, target_h, target_w = pre.input_size
    need = max(target_h, target_w)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8):
                width, height = height, width
            if fmt == "JPEG":
                # Scale in the DCT domain to the smallest size that still covers the model input.
                image.draft("RGB", (need, need))
            image.load()
            rgb = to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise KilnError(f"{name}: {fmt} data is truncated or corrupted ({exc})", hint="upload the original file") from exc
    pixels = np.asarray(resize_and_crop(rgb, pre), dtype=np.uint8)
    return DecodedPhoto(pixels, width, height, fmt, hashlib.sha256(data).hexdigest())


def to_batch(pixels: np.ndarray | list[np.ndarray], pre: Preprocessing) -> np.ndarray:
    """N×H×W×3 uint8 photos → the engine's normalised N×3×H×W float32 input."""
    batch = np.asarray(pixels, dtype=np.float32) * np.float32(1.0 / 255.0)
    batch -= np.asarray(pre.mean, np.float32)
    batch /= np.asarray(pre.std, np.float32)
    return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))


def engine_input(pixels: np.ndarray | list[np.ndarray], pre: Preprocessing) -> np.ndarray:
    """Model-size uint8 photos → the engine's input: normalised floats, or the pixels themselves for
    engines built with ``input_format=uint8`` (they normalise inside, on their own device)."""
    if pre.input_format == "uint8":
        return np.ascontiguousarray(np.asarray(pixels, dtype=np.uint8))
    return to_batch(pixels, pre)


def load_photo(path: Path, pre: Preprocessing) -> np.ndarray:
    """A file on disk → model-size uint8 RGB (training and calibration use this)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KilnError(f"cannot read {path}: {exc.strerror}") from exc
    return decode_photo(data, pre, name=str(path)).pixels
