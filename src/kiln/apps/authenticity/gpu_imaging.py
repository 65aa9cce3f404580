"""A case's photos decoded on the GPU (batched nvJPEG) down to the model's size, for the quality gate and the engine.

When the engine runs on a GPU, the photos are decoded there too: the CPU path's JPEG decode is
most of a case's CPU time. The result is the same ``DecodedPhoto`` as ``imaging.decode_photo``: a
uint8 model-size crop in host memory. The quality gate needs those pixels anyway (its metrics are
measured on the model-size image with OpenCV, with limits learned on CPU-decoded training photos),
and the crop is small (160×160×3 = 77 KB per photo), so one copy back to the host serves the engine
input, which then travels through the batcher like any other request. The gate's metrics are
measured on the device from the same crops (``gpu_quality``, one CUDA-graph replay per case).

To match the CPU path's pixels, the full-size decode is first box-downscaled by the factor that
the CPU path's DCT-domain decode (PIL ``draft``) would have used, then resized with the same
antialiased bilinear filter (``kiln.engine.gpu_images.resize_crop``). Photos nvJPEG cannot take
(PNG, WebP, CMYK or other unusual JPEGs), or that it fails on, go through the CPU path, so errors
and odd formats behave exactly as there.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

import numpy as np

from kiln.apps.authenticity.gpu_quality import measure_batch, to_metrics
from kiln.apps.authenticity.imaging import (
    DEFAULT_MAX_PIXELS,
    DecodedPhoto,
    PhotoHeader,
    decode_photo,
    read_header,
)
from kiln.apps.authenticity.quality import QualityMetrics
from kiln.engine.spec import Preprocessing
from kiln.serve.timing import stage

log = logging.getLogger(__name__)
_NVJPEG_MODES = ("RGB", "L")  # what nvJPEG decodes to RGB as Pillow would; CMYK/YCCK go to the CPU
_local = threading.local()


def _stream(device: str) -> Any:
    """One CUDA stream per worker thread, so concurrent cases do not queue behind each other."""
    import torch

    if not device.startswith("cuda"):
        return None
    stream = getattr(_local, "stream", None)
    if stream is None:
        stream = _local.stream = torch.cuda.Stream()
    return stream


def _model_size(image: Any, pre: Preprocessing) -> Any:
    """uint8 CHW (any size) → uint8 HWC of the engine's input size, as the CPU path computes it."""
    import torch

    from kiln.engine.gpu_images import box_downscale, draft_factor, resize_crop

    _, target_h, target_w = pre.input_size
    height, width = int(image.shape[1]), int(image.shape[2])
    # what the CPU path's DCT-domain decode does: average factor×factor blocks, then the same resize
    pixels = resize_crop(box_downscale(image, draft_factor(width, height, max(target_h, target_w))), pre)
    return pixels.round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0)


def decode_photos(blobs: list[bytes], names: list[str], pre: Preprocessing, device: str,
                  *, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[DecodedPhoto]:
    """Every photo of a case → ``DecodedPhoto``; JPEGs in one batched nvJPEG call on ``device``."""
    return decode_and_measure(blobs, names, pre, device, max_pixels=max_pixels, measure=False)[0]


def decode_and_measure(blobs: list[bytes], names: list[str], pre: Preprocessing, device: str, *,
                       max_pixels: int = DEFAULT_MAX_PIXELS, measure: bool = True,
                       headers: list[PhotoHeader | None] | None = None,
                       ) -> tuple[list[DecodedPhoto], list[QualityMetrics | None]]:
    """``decode_photos``, and the quality metrics of the photos decoded on the device, measured there
    (``gpu_quality``); None for a photo that went through the CPU path (its caller measures it).
    ``headers`` are the photos' headers where the request's checks already read them (else read here)."""
    import contextlib
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision's decoders point to torchcodec
        from torchvision.io import ImageReadMode, decode_jpeg

    from kiln.engine.gpu_images import orient

    known = headers if headers is not None else [None] * len(blobs)
    found = [h if h is not None else read_header(blob, name, max_pixels)  # the CPU path's checks and messages
             for blob, name, h in zip(blobs, names, known, strict=True)]
    out: list[DecodedPhoto | None] = [None] * len(blobs)
    metrics: list[QualityMetrics | None] = [None] * len(blobs)
    on_device = [i for i, h in enumerate(found) if h.format == "JPEG" and h.mode in _NVJPEG_MODES]
    if on_device:
        stream = _stream(device)
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            data = [torch.frombuffer(bytearray(blobs[i]), dtype=torch.uint8) for i in on_device]
            try:
                decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
            except RuntimeError as exc:
                # one bad JPEG fails the batch: the CPU path decodes the others and names the culprit
                log.warning("nvJPEG refused a batch of %d photos on %s (%s); decoding them on the CPU",
                            len(on_device), device, str(exc)[:200])
                decoded = [None] * len(on_device)
            crops: list[Any] = []
            kept: list[int] = []
            for i, image in zip(on_device, decoded, strict=True):
                if image is None:
                    continue
                image = orient(image, found[i].orientation)
                crops.append((_model_size(image, pre), int(image.shape[2]), int(image.shape[1])))
                kept.append(i)
            if crops:
                stacked = torch.stack([c[0] for c in crops])
                measured = measure_batch(stacked) if measure else None
                digests = [hashlib.sha256(blobs[i]).hexdigest() for i in kept]  # while the device works
                values = measured.cpu().numpy() if measured is not None else None
                pixels = stacked.cpu().numpy()  # one copy back; waits for this stream
                for row, (i, (_, width, height)) in enumerate(zip(kept, crops, strict=True)):
                    out[i] = DecodedPhoto(np.ascontiguousarray(pixels[row]), width, height, "JPEG", digests[row])
                    if values is not None:
                        metrics[i] = to_metrics(values[row], width, height)
    for i, photo in enumerate(out):
        if photo is None:
            with stage("decode_cpu"):  # other formats, or what nvJPEG refused: visible in Server-Timing
                out[i] = decode_photo(blobs[i], pre, name=names[i], max_pixels=max_pixels)
    return [p for p in out if p is not None], metrics


def gpu_decoding_available(device: str) -> bool:
    """Whether photos can be decoded on ``device`` here (torch with that device, and torchvision)."""
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError:
        return False
    if device.startswith("cuda"):
        return bool(torch.cuda.is_available())
    return device == "cpu"
