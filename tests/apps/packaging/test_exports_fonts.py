"""Exports round-trip; fonts are discovered from the files and work without fontconfig."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from kiln.apps.packaging import fonts
from kiln.apps.packaging.exports import palette_ase, palette_css, palette_svg, read_ase

PALETTE = {
    "style": "Fresh & airy", "harmony": "analogous",
    "colours": [
        {"role": r, "hex": h, "rgb": list(int(h[i : i + 2], 16) for i in (1, 3, 5)), "lab": [50.0, 0.0, 0.0],
         "cmyk": [0.0, 0.0, 0.0, 50.0], "locked": r == "primary"}
        for r, h in zip(("background", "primary", "secondary", "accent", "text"), ("#F0FAFF", "#00777F", "#A0D0E0", "#FFAA33", "#102030"), strict=True)
    ],
    "contrast": [{"usage": "body", "foreground": "text", "background": "background", "ratio": 15.2, "minimum": 4.5, "level": "AA normal text"}],
}


def test_ase_round_trip() -> None:
    colours = read_ase(palette_ase(PALETTE, "kiln fresh 1"))
    assert [name.split()[-1] for name, _ in colours] == [c["hex"] for c in PALETTE["colours"]]
    for (_, rgb), entry in zip(colours, PALETTE["colours"], strict=True):
        assert np.allclose(np.array(rgb) * 255, entry["rgb"], atol=1e-3)


def test_css_and_svg() -> None:
    css = palette_css(PALETTE).decode()
    assert "--kiln-primary: #00777F;" in css and "--kiln-text-rgb: 16 32 48;" in css
    root = ET.fromstring(palette_svg(PALETTE))
    assert root.tag.endswith("svg")
    assert sum(1 for e in root.iter() if e.tag.endswith("rect")) == 6  # page + 5 swatches


def test_font_discovery_measures_traits_and_licences(tmp_path: Path) -> None:
    faces = fonts.discover_fonts(cache=tmp_path / "fonts.json")
    families = {f.family for f in faces}
    assert {"Roboto", "Lato", "Caladea"} <= families
    lato = next(f for f in faces if f.family == "Lato" and f.weight == 400)
    assert 0.45 < lato.x_height < 0.56 and not lato.serif and lato.licence == "OFL-1.1"
    caladea = next(f for f in faces if f.family == "Caladea" and f.weight == 400)
    assert caladea.serif and caladea.contrast > lato.contrast
    cached = json.loads((tmp_path / "fonts.json").read_text())
    assert cached and fonts.discover_fonts(cache=tmp_path / "fonts.json") == faces


def test_discovery_without_fontconfig_or_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(fonts, "_matplotlib_font_files", lambda: [])
    faces = fonts.discover_fonts(cache=tmp_path / "fonts.json")
    assert faces and all(f.source.startswith("PyPI") for f in faces)
    pairing = fonts.pair_fonts(faces, ("serif",), ("sans",), (), np.random.default_rng(0), needs_cjk=True)
    assert "no CJK font" in " ".join(pairing.notes)
    assert "x-height" in pairing.reason
