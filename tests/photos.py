"""Encoding test images as the bytes a client uploads (format, JPEG quality, EXIF orientation)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image


def encode(image: Image.Image, fmt: str = "JPEG", *, orientation: int | None = None, quality: int = 90) -> bytes:
    """``image`` saved as ``fmt``; JPEGs at ``quality``; ``orientation`` written as the EXIF tag 0x0112."""
    save: dict[str, Any] = {"quality": quality} if fmt == "JPEG" else {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        save["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **save)
    return buffer.getvalue()
