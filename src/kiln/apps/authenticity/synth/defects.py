"""Counterfeit defect families, difficulty levels, and which views of a counterfeit carry defects."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kiln.errors import KilnError

# Defect families a view can show. Every family scales with a magnitude in (0, 1]: the size of
# the deviation from the brand's house style (1 is blatant, small values need a trained eye).
FAMILIES: dict[str, tuple[str, ...]] = {
    "logo": ("font", "kerning", "bleed", "colour"),
    "stitching": ("stitch_pitch", "stitch_angle", "colour"),
    "hardware": ("finish", "font", "bleed"),
    "date_code": ("malformed_code", "font", "kerning"),
    "lining": ("colour", "bleed", "pattern"),
    "overall": ("shape", "colour", "finish"),
}

FAMILY_DESCRIPTIONS: dict[str, str] = {
    "font": "typeface deviates from the house font",
    "kerning": "letter spacing is uneven or off",
    "bleed": "print or engraving is bled or blurred",
    "colour": "colour deviates from the authentic shade",
    "stitch_pitch": "stitch spacing is uneven",
    "stitch_angle": "stitch slant is wrong or irregular",
    "finish": "hardware finish (plating tone, sheen) is wrong",
    "malformed_code": "date code does not follow the brand's format",
    "pattern": "lining pattern is mis-scaled or misregistered",
    "shape": "proportions of the item deviate from the model",
}


@dataclass(frozen=True)
class Difficulty:
    name: str
    magnitude: tuple[float, float]
    defective_views: tuple[int, int]  # inclusive range of how many views of a counterfeit are flawed


DIFFICULTIES: dict[str, Difficulty] = {
    "easy": Difficulty("easy", (0.75, 1.0), (3, 5)),
    "medium": Difficulty("medium", (0.5, 0.75), (2, 4)),
    "hard": Difficulty("hard", (0.3, 0.5), (2, 3)),
}
LEVELS: tuple[str, ...] = tuple(DIFFICULTIES)  # easiest first


@dataclass(frozen=True)
class Defect:
    family: str
    magnitude: float
    seed: int = 0  # the defect's own random stream, so that a clean twin renders the very same scene

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


def parse_difficulty(text: str) -> tuple[str, ...]:
    """``easy``, ``medium``, ``hard``, ``mixed`` (all three), or a comma-separated list."""
    text = text.strip().lower()
    if text in ("mixed", "all"):
        return LEVELS
    levels = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [level for level in levels if level not in DIFFICULTIES]
    if not levels or unknown:
        raise KilnError(
            f"--difficulty {text!r} is not a difficulty level",
            hint="use easy, medium, hard, mixed, or a comma-separated list such as medium,hard",
        )
    return levels


def sample_defects(rng: np.random.Generator, views: tuple[str, ...], level: str) -> dict[str, Defect]:
    """Chooses which views of a counterfeit are flawed, with which family and how strongly."""
    difficulty = DIFFICULTIES[level]
    low, high = difficulty.defective_views
    high = min(high, len(views))
    low = min(low, high)
    count = int(rng.integers(low, high + 1))
    chosen = rng.choice(len(views), size=count, replace=False)
    defects: dict[str, Defect] = {}
    for index in sorted(int(i) for i in chosen):
        view = views[index]
        family = str(rng.choice(FAMILIES[view]))
        magnitude = float(rng.uniform(*difficulty.magnitude))
        defects[view] = Defect(family, magnitude, int(rng.integers(0, 2**31 - 1)))
    return defects
