"""The style taxonomy (data/styles.json) and how a brief is matched to it.

A style's fit combines three signals, each in [0, 1]:

- **lexicon**: style weights of the brief's matched terms (English and Chinese), saturated as
  ``1 − exp(−Σ weights)``;
- **encoder**: cosine similarity between the brief's MiniLM embedding and the style's prototype
  embedding, rescaled from [0.1, 0.5] to [0, 1];
- **image** (when a reference image is given): the style-score engine's probability for the style.

``fit = 0.55·lexicon + 0.45·encoder`` without an image, ``0.45·lexicon + 0.35·encoder + 0.2·image``
with one; without any lexicon match the encoder carries the whole weight.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from kiln.apps.packaging.lexicon import Match
from kiln.errors import KilnError

ROLES = ("background", "primary", "secondary", "accent", "text")


@dataclass(frozen=True)
class RoleRange:
    lightness: tuple[float, float]
    chroma: tuple[float, float]


@dataclass(frozen=True)
class PaletteRecipe:
    mode: str  # "light" | "dark": the style's usual background
    hues: tuple[tuple[float, float], ...]
    harmonies: tuple[str, ...]
    roles: dict[str, RoleRange]


@dataclass(frozen=True)
class Style:
    id: str
    name: str
    name_zh: str
    prototypes: tuple[str, ...]
    rationale: str
    palette: PaletteRecipe
    heading_fonts: tuple[str, ...]
    body_fonts: tuple[str, ...]
    accent_fonts: tuple[str, ...]
    align: str
    margin: float
    decoration: str


def _style(raw: dict[str, Any]) -> Style:
    try:
        palette = raw["palette"]
        roles = {
            role: RoleRange(tuple(palette[role]["L"]), tuple(palette[role]["C"]))  # type: ignore[arg-type]
            for role in ROLES
        }
        return Style(
            id=raw["id"],
            name=raw["name"],
            name_zh=raw["name_zh"],
            prototypes=tuple(raw["prototypes"]),
            rationale=raw["rationale"],
            palette=PaletteRecipe(
                palette["mode"], tuple(tuple(h) for h in palette["hues"]), tuple(palette["harmonies"]), roles  # type: ignore[misc]
            ),
            heading_fonts=tuple(raw["fonts"]["heading"]),
            body_fonts=tuple(raw["fonts"]["body"]),
            accent_fonts=tuple(raw["fonts"].get("accent", [])),
            align=raw["layout"]["align"],
            margin=float(raw["layout"]["margin"]),
            decoration=raw["decoration"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KilnError(f"styles.json: style {raw.get('id', '?')} is malformed ({exc})") from exc


@lru_cache(maxsize=1)
def taxonomy() -> tuple[Style, ...]:
    text = resources.files("kiln.apps.packaging").joinpath("data/styles.json").read_text(encoding="utf-8")
    return tuple(_style(raw) for raw in json.loads(text)["styles"])


def style_by_id(style_id: str) -> Style:
    for style in taxonomy():
        if style.id == style_id:
            return style
    raise KilnError(f"unknown style {style_id!r}", hint="styles: " + ", ".join(s.id for s in taxonomy()))


@dataclass(frozen=True)
class StyleFit:
    style: Style
    fit: float
    lexicon: float
    encoder: float
    image: float | None
    terms: tuple[str, ...]  # brief terms that pointed at this style, strongest first


def lexicon_weights(matches: list[Match]) -> dict[str, list[tuple[float, str]]]:
    """Per style: (weight, surface term) of every matched term that names it."""
    by_style: dict[str, list[tuple[float, str]]] = {}
    seen: set[tuple[str, str]] = set()
    for match in matches:
        for style_id, weight in match.concept.styles.items():
            key = (style_id, match.concept.english)
            if key in seen:  # "fresh" and "清新" together count once
                continue
            seen.add(key)
            by_style.setdefault(style_id, []).append((weight, match.surface))
    return by_style


def rank_styles(
    matches: list[Match],
    similarities: np.ndarray,
    image_scores: np.ndarray | None = None,
) -> list[StyleFit]:
    """Every style with its fit, best first; ties break by taxonomy order (deterministic)."""
    styles = taxonomy()
    weights = lexicon_weights(matches)
    has_lexicon = bool(weights)
    fits: list[StyleFit] = []
    for index, style in enumerate(styles):
        terms = sorted(weights.get(style.id, []), reverse=True)
        lexicon = 1.0 - math.exp(-sum(w for w, _ in terms))
        encoder = float(np.clip((similarities[index] - 0.1) / 0.4, 0.0, 1.0))
        image = float(image_scores[index]) if image_scores is not None else None
        if image is None:
            fit = 0.55 * lexicon + 0.45 * encoder if has_lexicon else encoder
        else:
            fit = 0.45 * lexicon + 0.35 * encoder + 0.2 * image if has_lexicon else 0.7 * encoder + 0.3 * image
        fits.append(StyleFit(style, round(fit, 4), round(lexicon, 4), round(encoder, 4), image, tuple(t for _, t in terms)))
    order = sorted(range(len(fits)), key=lambda i: (-fits[i].fit, i))
    return [fits[i] for i in order]


def rationale(fit: StyleFit, product: str, audience: str) -> str:
    """One line tying the style to the brief: the terms that chose it, and what the style does."""
    target = " for ".join(p for p in (product.strip(), audience.strip()) if p)
    if fit.terms:
        quoted = ", ".join(f"“{t}”" for t in fit.terms[:3])
        line = f"{quoted} point to {fit.style.name.lower()}: {fit.style.rationale}"
    else:
        line = f"closest in meaning to the brief (encoder match {fit.encoder:.2f}): {fit.style.rationale}"
    if fit.image is not None:
        line += f"; the reference image scores {fit.image:.2f} for this style"
    return line + (f" — {target}." if target else ".")
