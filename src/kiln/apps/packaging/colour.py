"""Colour science for palettes: sRGB ↔ linear ↔ XYZ ↔ CIELAB/LCh, CIEDE2000, WCAG contrast, CMYK,
and colour-vision-deficiency simulation (Machado, Oliveira & Fernandes 2009).

Conventions: sRGB values are floats in [0, 1] (or 8-bit ints where named ``rgb8``), CIELAB uses the
D65 white of sRGB, hue angles are degrees in [0, 360).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from kiln.errors import KilnError

_HEX = re.compile(r"#?([0-9a-fA-F]{6}|[0-9a-fA-F]{3})")

# sRGB (D65) → XYZ, IEC 61966-2-1
_RGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
_XYZ_TO_RGB = np.linalg.inv(_RGB_TO_XYZ)
_WHITE = _RGB_TO_XYZ @ np.ones(3)  # D65 white of sRGB (Xn, Yn, Zn)
_WHITE_T = tuple(float(v) for v in _WHITE)
_XYZ_TO_RGB_T = tuple(tuple(float(v) for v in row) for row in _XYZ_TO_RGB)


# --- hex and 8-bit ---------------------------------------------------------------------------
def parse_hex(text: str) -> tuple[int, int, int]:
    """``#RRGGBB`` or ``#RGB`` (case-insensitive, ``#`` optional) → 8-bit RGB."""
    match = _HEX.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise KilnError(f"colour {text!r} is not a hex colour", hint="use #RRGGBB, e.g. #1A2B3C")
    digits = match.group(1)
    if len(digits) == 3:
        digits = "".join(c * 2 for c in digits)
    return int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16)


def to_hex(rgb8: tuple[int, int, int]) -> str:
    return "#{:02X}{:02X}{:02X}".format(*rgb8)


def rgb8_to_unit(rgb8: tuple[int, int, int]) -> np.ndarray:
    return np.asarray(rgb8, dtype=np.float64) / 255.0


def unit_to_rgb8(rgb: np.ndarray) -> tuple[int, int, int]:
    values = np.clip(np.rint(np.asarray(rgb, dtype=np.float64) * 255.0), 0, 255).astype(int)
    return int(values[0]), int(values[1]), int(values[2])


# --- sRGB ↔ linear ↔ XYZ ↔ Lab ↔ LCh (vectorised over the last axis) --------------------------
def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)
    return np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    linear = np.asarray(linear, dtype=np.float64)
    return np.where(linear <= 0.0031308, linear * 12.92, 1.055 * np.power(np.maximum(linear, 0.0), 1 / 2.4) - 0.055)


def srgb_to_xyz(rgb: np.ndarray) -> np.ndarray:
    return srgb_to_linear(rgb) @ _RGB_TO_XYZ.T


def xyz_to_srgb(xyz: np.ndarray) -> np.ndarray:
    return linear_to_srgb(np.asarray(xyz, dtype=np.float64) @ _XYZ_TO_RGB.T)


def _f(t: np.ndarray) -> np.ndarray:
    delta = 6 / 29
    return np.where(t > delta**3, np.cbrt(t), t / (3 * delta**2) + 4 / 29)


def _f_inv(t: np.ndarray) -> np.ndarray:
    delta = 6 / 29
    return np.where(t > delta, t**3, 3 * delta**2 * (t - 4 / 29))


def xyz_to_lab(xyz: np.ndarray) -> np.ndarray:
    scaled = _f(np.asarray(xyz, dtype=np.float64) / _WHITE)
    fx, fy, fz = scaled[..., 0], scaled[..., 1], scaled[..., 2]
    return np.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], axis=-1)


def lab_to_xyz(lab: np.ndarray) -> np.ndarray:
    lab = np.asarray(lab, dtype=np.float64)
    fy = (lab[..., 0] + 16) / 116
    fx = fy + lab[..., 1] / 500
    fz = fy - lab[..., 2] / 200
    return np.stack([_f_inv(fx), _f_inv(fy), _f_inv(fz)], axis=-1) * _WHITE


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    return xyz_to_lab(srgb_to_xyz(rgb))


def lab_to_srgb(lab: np.ndarray) -> np.ndarray:
    """Unclipped: values outside [0, 1] mean the colour is outside the sRGB gamut."""
    return xyz_to_srgb(lab_to_xyz(lab))


def lab_to_lch(lab: np.ndarray) -> np.ndarray:
    lab = np.asarray(lab, dtype=np.float64)
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    hue = np.degrees(np.arctan2(lab[..., 2], lab[..., 1])) % 360.0
    return np.stack([lab[..., 0], chroma, hue], axis=-1)


def lch_to_lab(lch: np.ndarray) -> np.ndarray:
    lch = np.asarray(lch, dtype=np.float64)
    radians = np.radians(lch[..., 2])
    return np.stack([lch[..., 0], lch[..., 1] * np.cos(radians), lch[..., 1] * np.sin(radians)], axis=-1)


def in_gamut(rgb: np.ndarray, tolerance: float = 1e-6) -> bool:
    return bool(np.all(rgb >= -tolerance) and np.all(rgb <= 1 + tolerance))


def _lch_to_unit_rgb(lightness: float, chroma: float, hue: float) -> tuple[float, float, float]:
    """Scalar LCh → unclipped sRGB in pure Python (numpy's per-call overhead dominates for one colour)."""
    radians = math.radians(hue)
    fy = (lightness + 16) / 116
    fx = fy + chroma * math.cos(radians) / 500
    fz = fy - chroma * math.sin(radians) / 200
    delta = 6 / 29

    def inv(t: float) -> float:
        return t**3 if t > delta else 3 * delta**2 * (t - 4 / 29)

    x, y, z = inv(fx) * _WHITE_T[0], inv(fy) * _WHITE_T[1], inv(fz) * _WHITE_T[2]
    out = []
    for row in _XYZ_TO_RGB_T:
        linear = row[0] * x + row[1] * y + row[2] * z
        out.append(linear * 12.92 if linear <= 0.0031308 else 1.055 * max(linear, 0.0) ** (1 / 2.4) - 0.055)
    return out[0], out[1], out[2]


def _unit_in_gamut(rgb: tuple[float, float, float], tolerance: float = 1e-6) -> bool:
    return all(-tolerance <= v <= 1 + tolerance for v in rgb)


def lch_to_rgb8(lightness: float, chroma: float, hue: float) -> tuple[int, int, int]:
    """The sRGB colour of this lightness and hue with the most chroma up to ``chroma`` (gamut mapping
    by chroma reduction keeps lightness and hue, which is what contrast and harmony depend on).

    The same arithmetic as ``_lch_to_unit_rgb`` per chroma probed, with what the 16-step search does
    not change (lightness, hue's cosine and sine, Y) computed once."""
    lightness = float(min(100.0, max(0.0, lightness)))
    radians = math.radians(hue)
    cos, sin = math.cos(radians), math.sin(radians)
    fy = (lightness + 16) / 116
    y = _f_inv_scalar(fy) * _WHITE_T[1]
    (r0, r1, r2), (g0, g1, g2), (b0, b1, b2) = _XYZ_TO_RGB_T

    def unit_rgb(c: float) -> tuple[float, float, float]:
        x = _f_inv_scalar(fy + c * cos / 500) * _WHITE_T[0]
        z = _f_inv_scalar(fy - c * sin / 200) * _WHITE_T[2]
        return _compand(r0 * x + r1 * y + r2 * z), _compand(g0 * x + g1 * y + g2 * z), _compand(b0 * x + b1 * y + b2 * z)

    low_limit, high_limit = -1e-6, 1 + 1e-6  # _unit_in_gamut's tolerance

    def in_gamut(c: float) -> bool:  # channel by channel, stopping at the first outside
        x = _f_inv_scalar(fy + c * cos / 500) * _WHITE_T[0]
        z = _f_inv_scalar(fy - c * sin / 200) * _WHITE_T[2]
        return (low_limit <= _compand(r0 * x + r1 * y + r2 * z) <= high_limit
                and low_limit <= _compand(g0 * x + g1 * y + g2 * z) <= high_limit
                and low_limit <= _compand(b0 * x + b1 * y + b2 * z) <= high_limit)

    rgb = unit_rgb(chroma)
    if not all(low_limit <= v <= high_limit for v in rgb):
        low, high = 0.0, float(chroma)
        for _ in range(16):
            middle = (low + high) / 2
            if in_gamut(middle):
                low = middle
            else:
                high = middle
        rgb = unit_rgb(low)
    return tuple(int(min(255, max(0, round(v * 255.0)))) for v in rgb)  # type: ignore[return-value]


_DELTA = 6 / 29
_F_INV_SLOPE = 3 * _DELTA**2


def _f_inv_scalar(t: float) -> float:
    return t**3 if t > _DELTA else _F_INV_SLOPE * (t - 4 / 29)


def _compand(linear: float) -> float:
    return linear * 12.92 if linear <= 0.0031308 else 1.055 * max(linear, 0.0) ** (1 / 2.4) - 0.055


# linear value of every 8-bit sRGB level, computed by srgb_to_linear itself so the scalar paths
# below give exactly what the vectorised functions give for one colour
_LINEAR_OF_8BIT = tuple(float(v) for v in srgb_to_linear(np.arange(256, dtype=np.float64) / 255.0))
_F_EPSILON = (6 / 29) ** 3
_F_SLOPE = 3 * (6 / 29) ** 2


@lru_cache(maxsize=8192)
def rgb8_to_lab_tuple(rgb8: tuple[int, int, int]) -> tuple[float, float, float]:
    """CIELAB of one 8-bit colour as floats, equal to ``srgb_to_lab`` of it to the last bit.

    Only the matrix product stays in numpy (its BLAS kernel fixes the rounding); the rest is the
    same IEEE arithmetic in plain Python, several times cheaper than numpy on a 3-vector."""
    linear = np.array((_LINEAR_OF_8BIT[rgb8[0]], _LINEAR_OF_8BIT[rgb8[1]], _LINEAR_OF_8BIT[rgb8[2]]))
    scaled = (linear @ _RGB_TO_XYZ.T) / _WHITE
    roots = np.cbrt(scaled).tolist()
    fx, fy, fz = (root if t > _F_EPSILON else t / _F_SLOPE + 4 / 29 for t, root in zip(scaled.tolist(), roots, strict=True))
    return 116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)


def rgb8_to_lab(rgb8: tuple[int, int, int]) -> np.ndarray:
    return np.array(rgb8_to_lab_tuple(tuple(int(v) for v in rgb8)))  # type: ignore[arg-type]


def rgb8_to_lch(rgb8: tuple[int, int, int]) -> np.ndarray:
    lightness, a, b = rgb8_to_lab_tuple(tuple(int(v) for v in rgb8))  # type: ignore[arg-type]
    return np.array([lightness, math.hypot(a, b), math.degrees(math.atan2(b, a)) % 360.0])


# --- CIEDE2000 -------------------------------------------------------------------------------
def delta_e_2000(lab1: np.ndarray | Sequence[float], lab2: np.ndarray | Sequence[float]) -> float:
    """CIEDE2000 colour difference (Sharma, Wu & Dalal 2005), kL = kC = kH = 1."""
    l1, a1, b1 = (float(v) for v in lab1)
    l2, a2, b2 = (float(v) for v in lab2)
    c1, c2 = math.hypot(a1, b1), math.hypot(a2, b2)
    c_mean = (c1 + c2) / 2
    g = 0.5 * (1 - math.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = math.hypot(a1p, b1), math.hypot(a2p, b2)
    h1p = math.degrees(math.atan2(b1, a1p)) % 360 if c1p else 0.0
    h2p = math.degrees(math.atan2(b2, a2p)) % 360 if c2p else 0.0
    dl = l2 - l1
    dc = c2p - c1p
    if c1p * c2p == 0:
        dh = 0.0
    else:
        dh = h2p - h1p
        if dh > 180:
            dh -= 360
        elif dh < -180:
            dh += 360
    d_h = 2 * math.sqrt(c1p * c2p) * math.sin(math.radians(dh / 2))
    l_mean = (l1 + l2) / 2
    cp_mean = (c1p + c2p) / 2
    if c1p * c2p == 0:
        hp_mean = h1p + h2p
    elif abs(h1p - h2p) <= 180:
        hp_mean = (h1p + h2p) / 2
    elif h1p + h2p < 360:
        hp_mean = (h1p + h2p + 360) / 2
    else:
        hp_mean = (h1p + h2p - 360) / 2
    t = (
        1
        - 0.17 * math.cos(math.radians(hp_mean - 30))
        + 0.24 * math.cos(math.radians(2 * hp_mean))
        + 0.32 * math.cos(math.radians(3 * hp_mean + 6))
        - 0.20 * math.cos(math.radians(4 * hp_mean - 63))
    )
    d_theta = 30 * math.exp(-(((hp_mean - 275) / 25) ** 2))
    r_c = 2 * math.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / math.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = -math.sin(math.radians(2 * d_theta)) * r_c
    return math.sqrt(
        (dl / s_l) ** 2 + (dc / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (dc / s_c) * (d_h / s_h)
    )


# --- WCAG 2 contrast -------------------------------------------------------------------------
AA_NORMAL = 4.5
AA_LARGE = 3.0


def _channel_linear(value: int) -> float:
    c = value / 255.0
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


_LINEAR8 = tuple(_channel_linear(v) for v in range(256))


def relative_luminance(rgb8: tuple[int, int, int]) -> float:
    """WCAG 2 relative luminance (sRGB linearisation, Rec. 709 weights)."""
    return 0.2126 * _LINEAR8[rgb8[0]] + 0.7152 * _LINEAR8[rgb8[1]] + 0.0722 * _LINEAR8[rgb8[2]]


def contrast_ratio(rgb_a: tuple[int, int, int], rgb_b: tuple[int, int, int]) -> float:
    la, lb = relative_luminance(rgb_a), relative_luminance(rgb_b)
    return (max(la, lb) + 0.05) / (min(la, lb) + 0.05)


# --- CMYK ------------------------------------------------------------------------------------
CMYK_PROFILE_ENV = "KILN_CMYK_ICC"
_PROFILE_PLACES = (
    "/usr/share/color/icc/ghostscript/default_cmyk.icc",  # Debian libgs-common
    "/usr/share/color/icc/ghostscript/ps_cmyk.icc",
    "/usr/share/color/icc",
    "/usr/local/share/color/icc",
)


@dataclass(frozen=True)
class CmykConverter:
    """sRGB → CMYK: through an ICC output profile when one is found, otherwise the naive formula."""

    method: str  # "icc" | "naive"
    profile: str | None
    description: str

    def convert(self, colours: list[tuple[int, int, int]]) -> list[tuple[float, float, float, float]]:
        if not colours:
            return []
        if self.method == "icc":
            return _icc_convert(self.profile or "", tuple(colours))
        return [naive_cmyk(c) for c in colours]


def naive_cmyk(rgb8: tuple[int, int, int]) -> tuple[float, float, float, float]:
    """Device-independent approximation: K = 1 − max(R,G,B); C,M,Y from the remainder (percent)."""
    r, g, b = (v / 255.0 for v in rgb8)
    k = 1 - max(r, g, b)
    if k >= 1.0:
        return (0.0, 0.0, 0.0, 100.0)
    c, m, y = ((1 - v - k) / (1 - k) for v in (r, g, b))
    return tuple(round(v * 100, 1) for v in (c, m, y, k))  # type: ignore[return-value]


def _is_cmyk_profile(path: Path) -> bool:
    from PIL import ImageCms

    try:
        return bool(ImageCms.ImageCmsProfile(str(path)).profile.xcolor_space.strip() == "CMYK")
    except (OSError, ImageCms.PyCMSError):
        return False


def find_cmyk_profile() -> Path | None:
    """``$KILN_CMYK_ICC`` if set, else the first CMYK output profile in the usual system folders."""
    configured = os.environ.get(CMYK_PROFILE_ENV)
    if configured:
        path = Path(configured)
        if not path.is_file() or not _is_cmyk_profile(path):
            raise KilnError(f"{CMYK_PROFILE_ENV}={configured} is not a readable CMYK ICC profile")
        return path
    for place in _PROFILE_PLACES:
        root = Path(place)
        if root.is_file() and _is_cmyk_profile(root):
            return root
        if root.is_dir():
            for candidate in sorted(root.rglob("*.ic[cm]")):
                if "cmyk" in candidate.name.lower() and _is_cmyk_profile(candidate):
                    return candidate
    return None


@lru_cache(maxsize=1)
def cmyk_converter() -> CmykConverter:
    profile = find_cmyk_profile()
    if profile is None:
        return CmykConverter("naive", None, "naive sRGB→CMYK (no CMYK ICC profile found; set KILN_CMYK_ICC)")
    from PIL import ImageCms

    name = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(str(profile))).strip()
    return CmykConverter("icc", str(profile), f"ICC: sRGB → {name} ({profile.name}), relative colorimetric")


@lru_cache(maxsize=2)
def _icc_transform(profile: str) -> object:
    from PIL import ImageCms

    return ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.ImageCmsProfile(profile), "RGB", "CMYK",
        renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC,
    )


@lru_cache(maxsize=4096)
def _icc_convert(profile: str, colours: tuple[tuple[int, int, int], ...]) -> list[tuple[float, float, float, float]]:
    from PIL import Image, ImageCms

    strip = Image.new("RGB", (len(colours), 1))
    strip.putdata(list(colours))
    transform: Any = _icc_transform(profile)
    converted = Image.new("CMYK", strip.size)
    try:
        # the core transform directly: ImageCms.applyTransform also serialises the whole output profile
        # into the image's info (about 6 ms per call), which a colour strip does not need
        transform.transform.apply(strip.getim(), converted.getim())
    except AttributeError:  # another Pillow layout: the public path
        public = ImageCms.applyTransform(strip, transform)
        assert public is not None
        converted = public
    pixels = np.asarray(converted, dtype=np.float64).reshape(-1, 4)
    return [tuple(round(float(v) / 2.55, 1) for v in pixel) for pixel in pixels]  # type: ignore[misc]


# --- colour-vision deficiency ----------------------------------------------------------------
# Machado, Oliveira & Fernandes (2009), severity 1.0, applied to linear RGB.
CVD_MATRICES: dict[str, np.ndarray] = {
    "protanopia": np.array(
        [[0.152286, 1.052583, -0.204868], [0.114503, 0.786281, 0.099216], [-0.003882, -0.048116, 1.051998]]
    ),
    "deuteranopia": np.array(
        [[0.367322, 0.860646, -0.227968], [0.280085, 0.672501, 0.047413], [-0.011820, 0.042940, 0.968881]]
    ),
    "tritanopia": np.array(
        [[1.255528, -0.076749, -0.178779], [-0.078411, 0.930809, 0.147602], [0.004733, 0.691367, 0.303900]]
    ),
}




def _linear_to_rgb8(linear: float) -> int:
    """``unit_to_rgb8(linear_to_srgb(clip(linear)))`` for one channel, in plain Python."""
    linear = min(max(linear, 0.0), 1.0)
    value = linear * 12.92 if linear <= 0.0031308 else 1.055 * linear ** (1 / 2.4) - 0.055
    return min(max(round(value * 255.0), 0), 255)  # round half to even, as np.rint


@lru_cache(maxsize=8192)
def simulate_cvd(rgb8: tuple[int, int, int], kind: str) -> tuple[int, int, int]:
    """How a colour appears with the given dichromacy (full severity)."""
    linear = np.array((_LINEAR_OF_8BIT[rgb8[0]], _LINEAR_OF_8BIT[rgb8[1]], _LINEAR_OF_8BIT[rgb8[2]]))
    red, green, blue = (CVD_MATRICES[kind] @ linear).tolist()
    return _linear_to_rgb8(red), _linear_to_rgb8(green), _linear_to_rgb8(blue)
