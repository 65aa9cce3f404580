"""Image decoding and the preprocessing that an engine's manifest describes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from kiln.engine.spec import Preprocessing
from kiln.errors import KilnError, PayloadTooLargeError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
DEFAULT_MAX_PIXELS = 50_000_000

_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


def to_rgb(image: Image.Image) -> Image.Image:
    """Honour EXIF orientation; convert CMYK, palette, grayscale, 16-bit and alpha images to 8-bit RGB."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() if array.size else 1.0
        scale = 255.0 / (65535.0 if peak > 255 else max(peak, 1.0))
        image = Image.fromarray(np.clip(array * scale, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB") if image.mode != "RGB" else image


def decode_image(data: bytes, *, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode bytes into an RGB image; refuses decompression bombs and non-images with a clear error."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            fmt = probe.format
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise KilnError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if width * height > max_pixels:
        raise PayloadTooLargeError(
            f"{name}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels}",
            hint="downscale the image before uploading",
        )
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return to_rgb(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise KilnError(f"{name}: {fmt or 'image'} data is truncated or corrupted ({exc})") from exc


def load_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KilnError(f"cannot read {path}: {exc.strerror}") from exc
    return decode_image(data, name=str(path), max_pixels=max_pixels)


def resize_and_crop(image: Image.Image, pre: Preprocessing) -> Image.Image:
    _, height, width = pre.input_size
    resample = _RESAMPLE.get(pre.interpolation, Image.Resampling.BILINEAR)
    if pre.crop_mode == "squash":
        return image.resize((width, height), resample)
    scale_h = round(height / pre.crop_pct)
    scale_w = round(width / pre.crop_pct)
    src_w, src_h = image.size
    ratio = max(scale_w / src_w, scale_h / src_h)
    new_w, new_h = max(width, round(src_w * ratio)), max(height, round(src_h * ratio))
    # Downscale in two steps for very large inputs: a cheap reduce, then the exact filter.
    factor = min(src_w // new_w, src_h // new_h)
    if factor >= 2:
        image = image.reduce(factor)
    image = image.resize((new_w, new_h), resample)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return image.crop((left, top, left + width, top + height))


def to_tensor(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """HWC uint8 RGB → normalised CHW float32."""
    array = np.asarray(image, dtype=np.float32) * (1.0 / 255.0)
    mean = np.asarray(pre.mean, dtype=np.float32)
    std = np.asarray(pre.std, dtype=np.float32)
    array = (array - mean) / std
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def preprocess(image: Image.Image, pre: Preprocessing) -> np.ndarray:
    """One image → the engine's input row: CHW float32, or HWC uint8 for engines that normalise inside."""
    cropped = resize_and_crop(image, pre)
    if pre.input_format == "uint8":
        return np.asarray(cropped, dtype=np.uint8)
    return to_tensor(cropped, pre)


def iter_image_files(directory: Path) -> Iterator[Path]:
    for path in sorted(Path(directory).rglob("*")):
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
            yield path


def labelled_images(directory: Path) -> tuple[list[Path], list[int], list[str]]:
    """ImageFolder layout: one subfolder per class, sorted by name → label index."""
    root = Path(directory)
    if not root.is_dir():
        raise KilnError(f"{directory} is not a directory")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise KilnError(f"{directory} has no class subfolders", hint="use DIR/CLASS_NAME/*.jpg (ImageFolder layout)")
    paths: list[Path] = []
    labels: list[int] = []
    for index, name in enumerate(classes):
        for path in iter_image_files(root / name):
            paths.append(path)
            labels.append(index)
    if not paths:
        raise KilnError(f"{directory} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return paths, labels, classes
