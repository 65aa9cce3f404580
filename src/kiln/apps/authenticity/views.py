"""The vocabulary of a case: views, labels and verdicts."""

from __future__ import annotations

from enum import StrEnum

from kiln.errors import KilnError

VIEWS: tuple[str, ...] = ("logo", "stitching", "hardware", "date_code", "lining", "overall")
LABELS: tuple[str, ...] = ("authentic", "counterfeit")  # folder names; index = training target
MAX_PHOTOS = 6


class Verdict(StrEnum):
    AUTHENTIC = "authentic"
    COUNTERFEIT = "counterfeit"
    INCONCLUSIVE = "inconclusive"


VIEW_DESCRIPTIONS: dict[str, str] = {
    "logo": "the brand stamp or printed logo, filling most of the frame",
    "stitching": "a seam with its stitches, close up and in focus",
    "hardware": "a metal part (clasp, plate, ring) with its engraving",
    "date_code": "the date-code or serial stamp, readable",
    "lining": "the inside lining fabric and its pattern",
    "overall": "the whole item, front on, on a plain background",
}


def item_key(text: str) -> str:
    """How brands and models are compared: case- and space-insensitive."""
    return " ".join(text.strip().lower().split())


def design_key(brand: str, model: str) -> str:
    """One (brand, model) as the design heads and references name it: ``brand/model``, normalised."""
    return f"{item_key(brand)}/{item_key(model)}"


def check_view(view: str, *, where: str = "view") -> str:
    """Returns the normalised view name or raises naming the valid ones."""
    name = view.strip().lower().replace("-", "_").replace(" ", "_")
    if name not in VIEWS:
        raise KilnError(f"{where}: unknown view {view!r}", hint="valid views: " + ", ".join(VIEWS))
    return name
