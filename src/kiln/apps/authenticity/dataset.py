"""The dataset layout for users' own photos, read into cases, and split by case.

```
DATA/
  BRAND/MODEL/VIEW/authentic/*.jpg|png|webp
  BRAND/MODEL/VIEW/counterfeit/*.jpg|png|webp
  cases.csv            optional: groups photos into cases (items)
```

``cases.csv`` has the columns ``case_id, path`` (relative to DATA) and optionally ``photo_label``
(``authentic`` or ``counterfeit``: whether this photo itself shows counterfeit evidence; by
default every photo of a counterfeit item counts as counterfeit evidence) and ``twin_of`` (the case
id of a counterfeit this photo is a flawless counterpart of: a training aid that the synthetic
generator writes; twins always stay with their counterfeit in the training split and are never
evaluated). Without the file every photo is its own case. The folder names give brand, model, view
and the item's label.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from kiln.apps.authenticity.views import LABELS, VIEWS
from kiln.errors import KilnError

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}
CASES_FILE = "cases.csv"


@dataclass(frozen=True)
class Photo:
    path: Path
    brand: str
    model: str
    view: str
    label: int  # the item's label: 0 authentic, 1 counterfeit
    target: int  # what this photo shows: 0 no counterfeit evidence, 1 counterfeit evidence
    case_id: str
    difficulty: str = ""
    twin_of: str = ""
    defect: str = ""  # the kind of flaw this photo shows, where the data says (e.g. synthetic defect families)

    @property
    def group(self) -> str:
        """Photos of one group always land in the same split."""
        return self.twin_of or self.case_id


@dataclass
class Dataset:
    root: Path
    photos: list[Photo]
    synthetic: bool = False
    problems: list[str] = field(default_factory=list)

    def cases(self) -> dict[str, list[Photo]]:
        grouped: dict[str, list[Photo]] = defaultdict(list)
        for photo in self.photos:
            grouped[photo.case_id].append(photo)
        return dict(grouped)

    def subset(self, case_ids: Iterable[str]) -> Dataset:
        keep = set(case_ids)
        return replace(self, photos=[p for p in self.photos if p.case_id in keep])

    def evaluation_cases(self) -> dict[str, list[Photo]]:
        """The real cases: twins (training aids) left out."""
        return {case_id: photos for case_id, photos in self.cases().items() if not photos[0].twin_of}

    def split(self, val_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
        """Train/validation split by case, stratified by (brand, model, label); twins train only."""
        if not 0.0 < val_fraction < 1.0:
            raise KilnError(f"validation fraction {val_fraction} must be between 0 and 1")
        strata: dict[tuple[str, str, int], list[str]] = defaultdict(list)
        for case_id, photos in sorted(self.evaluation_cases().items()):
            first = photos[0]
            strata[(first.brand, first.model, first.label)].append(case_id)
        rng = np.random.default_rng(seed)
        val: set[str] = set()
        for key in sorted(strata):
            ids = strata[key]
            order = rng.permutation(len(ids))
            take = round(len(ids) * val_fraction)
            val.update(ids[i] for i in order[:take])
        train = [p for p in self.photos if p.group not in val]
        held_out = [p for p in self.photos if p.case_id in val]
        if not held_out or not train:
            raise KilnError(
                f"{self.root}: {len(self.evaluation_cases())} cases are too few to split {val_fraction:.0%} off for validation",
                hint="add more cases (each brand/model/label needs a few)",
            )
        return replace(self, photos=train), replace(self, photos=held_out)

    def summary(self) -> dict[str, object]:
        cases = self.evaluation_cases()
        labels = [LABELS[photos[0].label] for photos in cases.values()]
        return {
            "photos": len(self.photos),
            "cases": len(cases),
            "authentic_cases": labels.count("authentic"),
            "counterfeit_cases": labels.count("counterfeit"),
            "views": {view: sum(1 for p in self.photos if p.view == view) for view in VIEWS},
            "models": sorted({f"{p.brand}/{p.model}" for p in self.photos}),
        }


def _walk(root: Path) -> tuple[list[Photo], list[str]]:
    photos: list[Photo] = []
    problems: list[str] = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in PHOTO_SUFFIXES:
            continue
        parts = path.relative_to(root).parts
        if len(parts) != 5:
            problems.append(f"{path.relative_to(root)}: not at BRAND/MODEL/VIEW/LABEL/FILE")
            continue
        brand, model, view, label, _ = parts
        if view not in VIEWS:
            problems.append(f"{path.relative_to(root)}: unknown view folder {view!r} (valid: {', '.join(VIEWS)})")
            continue
        if label not in LABELS:
            problems.append(f"{path.relative_to(root)}: label folder {label!r} is not authentic or counterfeit")
            continue
        index = LABELS.index(label)
        photos.append(Photo(path, brand, model, view, index, index, path.stem))
    return photos, problems


def _apply_cases(root: Path, photos: list[Photo]) -> list[Photo]:
    """Regroups photos by the optional cases.csv (case_id, path[, photo_label, difficulty])."""
    csv_path = root / CASES_FILE
    if not csv_path.is_file():
        return photos
    by_path = {p.path.relative_to(root).as_posix(): p for p in photos}
    result: list[Photo] = []
    seen: set[str] = set()
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = {"case_id", "path"} - set(reader.fieldnames or [])
        if missing:
            raise KilnError(f"{csv_path}: missing columns {sorted(missing)}", hint="columns: case_id,path[,photo_label]")
        for line, row in enumerate(reader, start=2):
            rel = (row.get("path") or "").strip()
            photo = by_path.get(rel)
            if photo is None:
                raise KilnError(f"{csv_path}:{line}: {rel!r} is not a photo in the layout under {root}")
            target = photo.label
            photo_label = (row.get("photo_label") or "").strip()
            if photo_label:
                if photo_label not in LABELS:
                    raise KilnError(f"{csv_path}:{line}: photo_label {photo_label!r} is not authentic or counterfeit")
                target = LABELS.index(photo_label)
                if photo.label == 0 and target == 1:
                    raise KilnError(f"{csv_path}:{line}: a photo of an authentic item cannot show counterfeit evidence")
            case_id = (row.get("case_id") or "").strip() or photo.case_id
            twin_of = (row.get("twin_of") or "").strip()
            if twin_of and photo.label != 0:
                raise KilnError(f"{csv_path}:{line}: a twin (twin_of={twin_of}) must be an authentic photo")
            defect = (row.get("defect") or "").strip()
            if defect and target == 0:
                raise KilnError(f"{csv_path}:{line}: defect {defect!r} on a photo without counterfeit evidence",
                                hint="a defect needs photo_label counterfeit (or a counterfeit item)")
            result.append(replace(photo, case_id=case_id, target=target, difficulty=(row.get("difficulty") or "").strip(),
                                  twin_of=twin_of, defect=defect))
            seen.add(rel)
    # Photos the file does not mention stay cases of their own.
    result.extend(p for rel, p in by_path.items() if rel not in seen)
    _check_cases(csv_path, result)
    return result


def _check_cases(csv_path: Path, photos: list[Photo]) -> None:
    groups: dict[str, list[Photo]] = defaultdict(list)
    for photo in photos:
        groups[photo.case_id].append(photo)
    for case_id, members in groups.items():
        items = {(p.brand, p.model, p.label) for p in members}
        if len(items) > 1:
            raise KilnError(f"{csv_path}: case {case_id} mixes brands, models or labels: {sorted(items)}")


def load_dataset(root: Path) -> Dataset:
    """Reads the layout under ``root``; raises with every problem named when nothing usable is found."""
    root = Path(root)
    if not root.is_dir():
        raise KilnError(f"{root} is not a directory", hint="point --data at DATA/BRAND/MODEL/VIEW/{authentic,counterfeit}/")
    photos, problems = _walk(root)
    if not photos:
        detail = ("; ".join(problems[:5]) + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else "")) if problems else "no photos found"
        raise KilnError(
            f"{root} holds no photos in the dataset layout: {detail}",
            hint="use DATA/BRAND/MODEL/VIEW/{authentic,counterfeit}/*.jpg; see docs/authenticity.md",
        )
    photos = _apply_cases(root, photos)
    labels = {p.label for p in photos}
    if labels != {0, 1}:
        raise KilnError(f"{root} has only {LABELS[labels.pop()]} photos", hint="training needs authentic and counterfeit items")
    return Dataset(root, photos, synthetic=(root / "SYNTHETIC.txt").is_file(), problems=problems)
