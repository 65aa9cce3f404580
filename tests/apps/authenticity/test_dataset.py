"""Reading users' photos in the documented layout, grouping by cases.csv, splitting by case."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from kiln.apps.authenticity.dataset import load_dataset
from kiln.errors import KilnError


def _photo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (120, 80, 40)).save(path)


def _layout(root: Path, items: int = 6) -> None:
    for i in range(items):
        label = "counterfeit" if i % 2 else "authentic"
        for view in ("logo", "lining"):
            _photo(root / "acme" / "tote" / view / label / f"item{i}_{view}.jpg")


def test_layout_without_grouping_file_makes_every_photo_a_case(tmp_path: Path) -> None:
    _layout(tmp_path)
    data = load_dataset(tmp_path)
    assert len(data.photos) == 12 and len(data.cases()) == 12
    photo = next(p for p in data.photos if p.path.name == "item1_logo.jpg")
    assert (photo.brand, photo.model, photo.view, photo.label, photo.target) == ("acme", "tote", "logo", 1, 1)
    assert not data.synthetic


def test_cases_csv_groups_photos_and_sets_photo_labels(tmp_path: Path) -> None:
    _layout(tmp_path)
    lines = ["case_id,path,photo_label"]
    for i in range(6):
        label = "counterfeit" if i % 2 else "authentic"
        lines.append(f"case{i},acme/tote/logo/{label}/item{i}_logo.jpg,{label}")
        lines.append(f"case{i},acme/tote/lining/{label}/item{i}_lining.jpg,authentic")
    (tmp_path / "cases.csv").write_text("\n".join(lines) + "\n")
    data = load_dataset(tmp_path)
    cases = data.cases()
    assert len(cases) == 6 and all(len(v) == 2 for v in cases.values())
    lining = next(p for p in cases["case1"] if p.view == "lining")
    assert lining.label == 1 and lining.target == 0, "a clean-looking photo of a counterfeit item"


def test_cases_csv_names_the_defect_a_photo_shows(tmp_path: Path) -> None:
    _layout(tmp_path)
    lines = ["case_id,path,photo_label,defect"]
    lines.append("case1,acme/tote/logo/counterfeit/item1_logo.jpg,counterfeit,kerning")
    lines.append("case1,acme/tote/lining/counterfeit/item1_lining.jpg,authentic,")
    (tmp_path / "cases.csv").write_text("\n".join(lines) + "\n")
    photos = {p.view: p for p in load_dataset(tmp_path).cases()["case1"]}
    assert (photos["logo"].defect, photos["lining"].defect) == ("kerning", "")
    lines[2] = "case1,acme/tote/lining/counterfeit/item1_lining.jpg,authentic,colour"
    (tmp_path / "cases.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(KilnError, match=r"cases\.csv:3: defect 'colour' on a photo without counterfeit evidence"):
        load_dataset(tmp_path)


def test_split_is_by_case_and_keeps_twins_in_training(synth_data: Path) -> None:
    data = load_dataset(synth_data)
    assert data.synthetic
    train, val = data.split(0.25, seed=0)
    train_cases = {p.case_id for p in train.photos}
    val_cases = {p.case_id for p in val.photos}
    assert not train_cases & val_cases
    assert all(not p.twin_of for p in val.photos)
    assert all(p.twin_of not in val_cases for p in train.photos if p.twin_of)
    assert len(val.evaluation_cases()) == len(val_cases) > 0


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        (lambda r: None, "holds no photos"),
        (lambda r: _photo(r / "acme" / "tote" / "sole" / "authentic" / "a.jpg"), "unknown view folder 'sole'"),
        (lambda r: _photo(r / "acme" / "tote" / "logo" / "fake" / "a.jpg"), "label folder 'fake'"),
        (lambda r: _photo(r / "acme" / "logo" / "authentic" / "a.jpg"), "BRAND/MODEL/VIEW/LABEL/FILE"),
        (lambda r: _photo(r / "acme" / "tote" / "logo" / "authentic" / "a.jpg"), "only authentic"),
    ],
)
def test_layout_problems_are_named(tmp_path: Path, setup: object, needle: str) -> None:
    setup(tmp_path)  # type: ignore[operator]
    with pytest.raises(KilnError, match=needle):
        load_dataset(tmp_path)


def test_cases_csv_problems_are_named(tmp_path: Path) -> None:
    _layout(tmp_path)
    (tmp_path / "cases.csv").write_text("case_id,path\nc1,acme/tote/logo/authentic/missing.jpg\n")
    with pytest.raises(KilnError, match=r"missing\.jpg.*is not a photo"):
        load_dataset(tmp_path)
    (tmp_path / "cases.csv").write_text("case_id,path\nc1,acme/tote/logo/authentic/item0_logo.jpg\nc1,acme/tote/logo/counterfeit/item1_logo.jpg\n")
    with pytest.raises(KilnError, match="mixes brands, models or labels"):
        load_dataset(tmp_path)
    (tmp_path / "cases.csv").write_text("path\nx\n")
    with pytest.raises(KilnError, match="missing columns"):
        load_dataset(tmp_path)
