"""The synthetic generator: layout, labels, determinism, twins, difficulty levels, errors."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiln.apps.authenticity.synth import SYNTHETIC_NOTE, SynthSpec, generate_dataset, make_case
from kiln.apps.authenticity.synth.defects import DIFFICULTIES, FAMILIES, parse_difficulty
from kiln.apps.authenticity.synth.designs import MODELS
from kiln.apps.authenticity.views import VIEWS
from kiln.errors import KilnError


def test_dataset_layout_labels_and_synthetic_marks(synth_data: Path) -> None:
    rows = list(csv.DictReader((synth_data / "cases.csv").open()))
    assert (synth_data / "SYNTHETIC.txt").read_text().startswith(SYNTHETIC_NOTE)
    meta = json.loads((synth_data / "metadata.json").read_text())
    assert meta["synthetic"] is True and meta["cases"] == 24
    cases = {r["case_id"] for r in rows if not r["twin_of"]}
    assert len(cases) == 24
    for row in rows:
        path = synth_data / row["path"]
        brand, model, view, label, _name = Path(row["path"]).parts
        assert (brand, model, view, label) == (row["brand"], row["model"], row["view"], row["label"])
        assert view in VIEWS and label in ("authentic", "counterfeit")
        with Image.open(path) as image:
            assert image.format == "JPEG" and image.size == (96, 96)
            assert image.info.get("comment", b"").decode() == SYNTHETIC_NOTE
        assert row["synthetic"] == "1"
        if row["defect"]:
            assert row["label"] == "counterfeit" and row["photo_label"] == "counterfeit" and row["defect"] in FAMILIES[view]
        else:
            assert row["photo_label"] == "authentic"
    for case_id in cases:
        assert sorted(r["view"] for r in rows if r["case_id"] == case_id) == sorted(VIEWS)
    counterfeit = {r["case_id"] for r in rows if r["label"] == "counterfeit" and not r["twin_of"]}
    for case_id in counterfeit:
        flawed = [r for r in rows if r["case_id"] == case_id and r["defect"]]
        level = DIFFICULTIES[flawed[0]["difficulty"]]
        assert level.defective_views[0] <= len(flawed) <= level.defective_views[1]


def test_twins_differ_from_their_counterfeit_only_where_the_flaw_is() -> None:
    spec = SynthSpec(seed=11, size=128, twins=True)
    case = make_case(spec, 3, label="counterfeit", difficulty="hard")
    assert set(case.twins) == set(case.defects)
    plain = SynthSpec(seed=11, size=128, twins=False)
    again = make_case(plain, 3, label="counterfeit", difficulty="hard")
    for view, twin in case.twins.items():
        flawed = case.photos[view].astype(int)
        changed = np.abs(flawed - twin.astype(int)).max(axis=2) > 12
        assert 0.0 < changed.mean() < 0.9, f"{view}: the twin must differ, but not everywhere"
        assert np.array_equal(again.photos[view], case.photos[view]), "twins do not change the counterfeit"


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    def digest(folder: Path) -> str:
        h = hashlib.sha256()
        for path in sorted(folder.rglob("*.jpg")):
            h.update(path.read_bytes())
        return h.hexdigest()

    spec = SynthSpec(seed=3, size=80)
    generate_dataset(tmp_path / "a", 3, spec, workers=1)
    generate_dataset(tmp_path / "b", 3, spec, workers=2)
    generate_dataset(tmp_path / "c", 3, SynthSpec(seed=4, size=80), workers=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_every_design_view_and_family_renders() -> None:
    rng = np.random.default_rng(0)
    from kiln.apps.authenticity.synth.defects import Defect
    from kiln.apps.authenticity.synth.render import RENDERERS

    for design in MODELS:
        for view, families in FAMILIES.items():
            for family in (None, *families):
                defect = Defect(family, 0.9, 1) if family else None
                scene = RENDERERS[view](design, defect, rng, 64)
                assert scene.shape == (64, 64, 3) and np.isfinite(scene).all()


def test_difficulty_parsing_and_bad_arguments(tmp_path: Path) -> None:
    assert parse_difficulty("mixed") == ("easy", "medium", "hard")
    assert parse_difficulty("medium, hard") == ("medium", "hard")
    with pytest.raises(KilnError, match="not a difficulty level"):
        parse_difficulty("brutal")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("keep me")
    with pytest.raises(KilnError, match="not empty"):
        generate_dataset(tmp_path / "full", 2, SynthSpec(seed=0, size=64))
    with pytest.raises(KilnError, match="at least one case"):
        generate_dataset(tmp_path / "none", 0, SynthSpec(seed=0))
    with pytest.raises(KilnError, match="size"):
        generate_dataset(tmp_path / "small", 1, SynthSpec(seed=0, size=16))
