"""Image decoding and preprocessing on the GPU: batched nvJPEG decode, resize, crop, normalise.

The same contract as ``images.preprocess`` (shorter-side resize to size/crop_pct, centre crop,
then the engine's input format), done where the engine runs, so a 6-photo case of large JPEGs
does not make the CPU the bottleneck. On a CPU device it runs the same code on the CPU (tests).
JPEGs are decoded by torchvision (nvJPEG on CUDA, batched); other formats go through Pillow.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from kiln.engine.images import DEFAULT_MAX_PIXELS, decode_image
from kiln.engine.spec import Preprocessing
from kiln.errors import KilnError, PayloadTooLargeError

_JPEG_MAGIC = b"\xff\xd8\xff"
# EXIF orientation → (rotate k×90° counter-clockwise, flip left-right first)
_ORIENTATION = {2: (0, True), 3: (2, False), 4: (2, True), 5: (1, True), 6: (3, False), 7: (3, True), 8: (1, False)}


def _probe(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """Size and EXIF orientation from the header only (no pixel decode)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            orientation = int(probe.getexif().get(0x0112, 1)) if probe.format == "JPEG" else 1
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise KilnError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from exc
    if width * height > max_pixels:
        raise PayloadTooLargeError(f"{name}: {width}x{height} = {width * height} pixels is over the limit of {max_pixels}")
    return width * height, orientation


def decode_batch(blobs: list[bytes], device: str, *, names: list[str] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Any]:
    """Decode images to uint8 CHW RGB tensors on ``device``; JPEGs in one batched nvJPEG call."""
    import warnings

    import torch

    with warnings.catch_warnings():
        # torchvision 0.29 marks its decoders deprecated in favour of torchcodec; they still are
        # the batched nvJPEG path, and the image on the GPU machines has no torchcodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

    names = names or [f"image {i + 1}" for i in range(len(blobs))]
    out: list[Any] = [None] * len(blobs)
    jpeg_index: list[int] = []
    jpeg_data: list[Any] = []
    orientations: dict[int, int] = {}
    for i, (blob, name) in enumerate(zip(blobs, names, strict=True)):
        _, orientation = _probe(blob, name, max_pixels)
        if blob[:3] == _JPEG_MAGIC:
            jpeg_index.append(i)
            jpeg_data.append(torch.frombuffer(bytearray(blob), dtype=torch.uint8))
            orientations[i] = orientation
        else:  # PNG, WebP, CMYK, 16-bit …: Pillow handles every mode, then upload
            rgb = decode_image(blob, name=name, max_pixels=max_pixels)
            out[i] = torch.from_numpy(_as_array(rgb)).permute(2, 0, 1).to(device)
    if jpeg_data:
        try:
            decoded = decode_jpeg(jpeg_data, mode=ImageReadMode.RGB, device=device)
        except RuntimeError:
            # one corrupt JPEG fails the whole batched call: decode one by one to name the culprit
            decoded = []
            for i, data in zip(jpeg_index, jpeg_data, strict=True):
                try:
                    decoded.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
                except RuntimeError as exc:
                    raise KilnError(f"{names[i]}: JPEG data is truncated or corrupted ({exc})") from exc
        for i, image in zip(jpeg_index, decoded, strict=True):
            out[i] = orient(image, orientations[i])
    return out


def _as_array(image: Image.Image) -> Any:
    import numpy as np

    return np.asarray(image, dtype=np.uint8)


def orient(image: Any, orientation: int) -> Any:
    """Apply an EXIF orientation (1-8) to a CHW image tensor."""
    import torch

    rotate, flip = _ORIENTATION.get(orientation, (0, False))
    if flip:
        image = torch.flip(image, dims=[2])
    if rotate:
        image = torch.rot90(image, k=rotate, dims=[1, 2])
    return image


def draft_factor(width: int, height: int, need: int) -> int:
    """The DCT scale (1, 2, 4 or 8) at which Pillow's JPEG ``draft`` decodes an image to still cover ``need``
    pixels per side (the CPU paths decode this way; the GPU paths imitate it to give the same pixels)."""
    scale = min(width // need, height // need)
    for factor in (8, 4, 2):
        if scale >= factor:
            return factor
    return 1


def box_downscale(image: Any, factor: int) -> Any:
    """uint8/float CHW → float CHW averaged over factor×factor blocks (what a DCT-domain downscale does)."""
    import torch.nn.functional as F

    x = image.unsqueeze(0).float()
    if factor > 1:
        x = F.avg_pool2d(x, factor, stride=factor, ceil_mode=True)
    return x[0]


def resize_crop(image: Any, pre: Preprocessing) -> Any:
    """uint8 CHW → float CHW in [0, 255] of the engine's input size (antialiased bilinear)."""
    import torch.nn.functional as F

    _, height, width = pre.input_size
    src_h, src_w = int(image.shape[1]), int(image.shape[2])
    x = image.unsqueeze(0).float()
    if pre.crop_mode == "squash":
        return F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]
    scale_h, scale_w = round(height / pre.crop_pct), round(width / pre.crop_pct)
    ratio = max(scale_w / src_w, scale_h / src_h)
    new_h, new_w = max(height, round(src_h * ratio)), max(width, round(src_w * ratio))
    mode = "bicubic" if pre.interpolation == "bicubic" else "bilinear"
    x = F.interpolate(x, size=(new_h, new_w), mode=mode, antialias=True, align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return x[0, :, top : top + height, left : left + width]


def preprocess_batch(images: list[Any], pre: Preprocessing) -> Any:
    """Decoded images → one engine input batch on their device: uint8 NHWC, or normalised float NCHW."""
    import torch

    batch = torch.stack([resize_crop(image, pre) for image in images])
    if pre.input_format == "uint8":
        return batch.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    mean = torch.tensor(pre.mean, device=batch.device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(pre.std, device=batch.device).view(1, 3, 1, 1) * 255.0
    return ((batch - mean) / std).contiguous()
