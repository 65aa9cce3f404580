"""Camera effects: perspective, uneven lighting, white balance, focus, sensor noise (JPEG at save)."""

from __future__ import annotations

import cv2
import numpy as np

from kiln.apps.authenticity.synth.noise import blur

Array = np.ndarray


def photograph(rng: np.random.Generator, scene: Array, strength: float = 1.0) -> Array:
    """Turns a rendered scene (float RGB) into what a phone camera would record (uint8 RGB)."""
    size = scene.shape[0]
    image = _perspective(rng, scene, 0.03 * strength)
    image = _lighting(rng, image, strength)
    gains = 1.0 + rng.normal(0.0, 0.02 * strength, 3).astype(np.float32)
    image *= gains[None, None, :]
    image = blur(image, float(rng.uniform(0.0, 0.55)) * size / 320)
    noise_sigma = float(rng.uniform(0.004, 0.018)) * strength
    image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_sigma)
    image = np.clip(image, 0.0, 1.0) ** (1.0 / 1.08)  # a mild tone curve, as phones apply
    return (image * 255.0 + 0.5).astype(np.uint8)


def _perspective(rng: np.random.Generator, image: Array, amount: float) -> Array:
    size = image.shape[0]
    src = np.array([[0, 0], [size, 0], [size, size], [0, size]], dtype=np.float32)
    # Corners pushed outwards a little, so the frame stays covered by the scene after the warp.
    outward = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=np.float32) * (amount * size)
    dst = src + outward + rng.uniform(-amount, amount, (4, 2)).astype(np.float32) * size
    matrix = cv2.getPerspectiveTransform(src, dst)
    return cv2.warpPerspective(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def _lighting(rng: np.random.Generator, image: Array, strength: float) -> Array:
    size = image.shape[0]
    axis = np.arange(size, dtype=np.float32) / size - 0.5
    y, x = axis[:, None], axis[None, :]
    angle = rng.uniform(0, 2 * np.pi)
    gradient = 1.0 + strength * float(rng.uniform(0.0, 0.18)) * (np.cos(angle) * x + np.sin(angle) * y) * 2
    vignette = 1.0 - strength * float(rng.uniform(0.05, 0.22)) * (x * x + y * y) * 2
    exposure = float(rng.uniform(0.88, 1.1))
    return image * (gradient * vignette * np.float32(exposure))[..., None]
