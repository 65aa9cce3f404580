"""Shared fixtures: an isolated KILN_HOME per test and tiny image sets made on the fly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def kiln_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    from kiln.config import get_settings

    home = tmp_path_factory.mktemp("kiln-home")
    monkeypatch.setenv("KILN_HOME", str(home))
    get_settings.cache_clear()
    yield home
    get_settings.cache_clear()


def make_image_folder(root: Path, classes: int = 2, per_class: int = 6, size: tuple[int, int] = (96, 80), seed: int = 0) -> Path:
    """ImageFolder layout whose classes differ in colour, so a model can tell them apart."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.zeros((size[1], size[0], 3), dtype=np.float32)
            base[..., c % 3] = 200
            noise = rng.normal(0, 40, base.shape)
            Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))
