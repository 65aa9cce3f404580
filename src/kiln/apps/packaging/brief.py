"""The brief a client sends (``POST /v1/packaging/recommend``), validated with limits.

Every string, list and number has a bound; unknown fields are refused, so a typo is an error
rather than a silently ignored setting. Reference images are ids from ``POST /v1/packaging/images``
or ``data:image/...;base64,`` URLs.
"""

from __future__ import annotations

import re
import unicodedata

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kiln.apps.packaging.colour import parse_hex, to_hex
from kiln.errors import KilnError

MAX_TEXT = 200
MAX_KEYWORDS_CHARS = 500
MAX_BRAND_COLOURS = 6
MAX_LOCKED = 4
MAX_REFERENCE_IMAGES = 4
MAX_DATA_URL_CHARS = 36 * 1024 * 1024  # ≈ 27 MB of image bytes in base64
_IMAGE_ID = re.compile(r"img_[0-9a-f]{32}")


def _clean(text: str, field: str) -> str:
    """Strip, and refuse control characters (other than ordinary whitespace)."""
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cs", "Co") and char not in "\t\n\r":
            raise ValueError(f"{field} contains a control character (U+{ord(char):04X})")
    return " ".join(text.split())


class BrandColourIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hex: str = Field(max_length=9, description="#RRGGBB or #RGB")
    locked: bool = False

    @field_validator("hex")
    @classmethod
    def _hex(cls, value: str) -> str:
        try:
            return to_hex(parse_hex(value))
        except KilnError as exc:
            raise ValueError(str(exc)) from exc


class PanelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    width_mm: float = Field(default=100.0, ge=30.0, le=2000.0)
    height_mm: float = Field(default=150.0, ge=30.0, le=2000.0)

    @model_validator(mode="after")
    def _aspect(self) -> PanelIn:
        ratio = self.height_mm / self.width_mm
        if not 0.25 <= ratio <= 4.0:
            raise ValueError(f"panel aspect height/width {ratio:.2f} is outside 0.25..4")
        return self


class BriefIn(BaseModel):
    """A packaging brief."""

    model_config = ConfigDict(extra="forbid")

    product: str = Field(default="", max_length=MAX_TEXT, description="category, e.g. beverage, skincare")
    audience: str = Field(default="", max_length=MAX_TEXT, description="e.g. Gen-Z women")
    keywords: str | list[str] = Field(default="", description="mood words, English or Chinese")
    name: str = Field(default="", max_length=60, description="product name shown on the mock-up")
    tagline: str = Field(default="", max_length=100)
    claims: list[str] = Field(default_factory=list, max_length=3)
    brand_colors: list[BrandColourIn] = Field(default_factory=list, max_length=MAX_BRAND_COLOURS)
    reference_images: list[str] = Field(default_factory=list, max_length=MAX_REFERENCE_IMAGES)
    panel: PanelIn = Field(default_factory=PanelIn)
    count: int = Field(default=4, ge=1, le=8)
    seed: int = Field(default=0, ge=0, le=2**31 - 1)

    @field_validator("product", "audience", "name", "tagline")
    @classmethod
    def _text(cls, value: str, info: object) -> str:
        return _clean(value, getattr(info, "field_name", "text"))

    @field_validator("claims")
    @classmethod
    def _claims(cls, value: list[str]) -> list[str]:
        cleaned = [_clean(v, "claims") for v in value]
        if any(len(v) > 40 for v in cleaned):
            raise ValueError("each claim must be at most 40 characters")
        return [v for v in cleaned if v]

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: str | list[str]) -> str:
        if isinstance(value, list):
            if len(value) > 32:
                raise ValueError("at most 32 keywords")
            value = ", ".join(value)
        cleaned = _clean(value, "keywords")
        if len(cleaned) > MAX_KEYWORDS_CHARS:
            raise ValueError(f"keywords are {len(cleaned)} characters, at most {MAX_KEYWORDS_CHARS}")
        return cleaned

    @field_validator("reference_images")
    @classmethod
    def _references(cls, value: list[str]) -> list[str]:
        for item in value:
            if _IMAGE_ID.fullmatch(item):
                continue
            if not item.startswith("data:image/"):
                raise ValueError("each reference image must be an id from POST /v1/packaging/images or a data:image/... URL")
            if len(item) > MAX_DATA_URL_CHARS:
                raise ValueError(f"a data URL is {len(item)} characters, at most {MAX_DATA_URL_CHARS}")
        return value

    @model_validator(mode="after")
    def _locks(self) -> BriefIn:
        locked = [c for c in self.brand_colors if c.locked]
        if len(locked) > MAX_LOCKED:
            raise ValueError(f"{len(locked)} locked brand colours; at most {MAX_LOCKED} (a palette has 5 roles)")
        if not (self.product or self.audience or self.keywords):
            raise ValueError("the brief needs at least one of product, audience or keywords")
        return self

    def text_for_lexicon(self) -> str:
        return " , ".join(p for p in (self.product, self.audience, str(self.keywords)) if p)

    def display_name(self) -> str:
        return self.name or (self.product.title() if self.product else "Product")
