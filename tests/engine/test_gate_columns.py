"""The accuracy gate on an output of several binary logits: column 0 is scored, and every column is held to max_drop."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from PIL import Image

from kiln.engine.spec import Preprocessing
from kiln.engine.validate import validate


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for label in ("authentic", "counterfeit"):
        (tmp_path / label).mkdir()
        for i in range(10):
            value = 40 if label == "authentic" else 210  # the mean brightness tells the classes apart
            pixels = np.clip(rng.normal(value, 5, (16, 16, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / label / f"{i}.png")
    return tmp_path


def _scores(batch: np.ndarray, flip: int | None) -> np.ndarray:
    brightness = batch.reshape(batch.shape[0], -1).mean(axis=1, keepdims=True)
    logits = np.repeat(brightness, 3, axis=1)  # three heads that all see the same evidence
    if flip is not None:
        logits[:, flip] *= -1.0  # this column's decisions all turn over
    return logits.astype(np.float32)


class _Runner:
    def __init__(self, flip: int | None) -> None:
        self.flip = flip
        self.max_batch_size = 8
        self.manifest = SimpleNamespace(
            name="heads", inputs=[SimpleNamespace(name="input", shape=(-1, 3, 16, 16))], outputs=[SimpleNamespace(name="logit")],
            preprocessing=Preprocessing(input_size=(3, 16, 16), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
            extra={"classifier_output": "logit", "classifier_column": 0},
        )

    def infer(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"logit": _scores(feeds["input"], self.flip)}


def _reference(feeds: dict[str, Any]) -> dict[str, np.ndarray]:
    return {"logit": _scores(feeds["input"], None)}


def test_a_faithful_engine_passes_with_every_column(folder: Path) -> None:
    report = validate(_Runner(None), _reference, folder)  # type: ignore[arg-type]
    assert report.passed and report.drop_points == 0 and report.max_column_drop_points == 0


def test_a_column_other_than_the_scored_one_can_fail_the_gate(folder: Path) -> None:
    report = validate(_Runner(2), _reference, folder)  # type: ignore[arg-type]
    assert report.drop_points == 0  # column 0, the scored one, is untouched
    assert report.max_column_drop_points == pytest.approx(100.0) and not report.passed
