"""Design heads: a classifier per (brand, model) next to the generic one, chosen by the claimed item."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.apps.authenticity.assessment import assess_case, head_outputs
from kiln.apps.authenticity.calibration import AuthCalibration
from kiln.apps.authenticity.dataset import load_dataset
from kiln.apps.authenticity.model import auth_multiview, source_string
from kiln.apps.authenticity.quality import measure
from kiln.apps.authenticity.train import TrainResult, train
from kiln.apps.authenticity.views import design_key
from kiln.engine.validate import predictions
from kiln.errors import KilnError

from .conftest import TINY_CONFIG


@pytest.fixture(scope="module")
def trained_heads(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    config = replace(TINY_CONFIG, design_heads=True, epochs=1)
    return train(synth_data, tmp_path_factory.mktemp("heads") / "auth.pt", config)


def test_each_head_pools_its_own_heatmap() -> None:
    torch.manual_seed(0)
    model = auth_multiview(backbone="test_resnet", embed_dim=16, heads=4).eval()
    with torch.inference_mode():
        logit, embedding, heatmap = model(torch.randn(3, 3, 64, 64))
    assert logit.shape == (3, 4) and embedding.shape == (3, 16) and heatmap.dim() == 4 and heatmap.shape[:2] == (3, 4)
    cells = heatmap.flatten(2)
    assert torch.all(logit >= cells.mean(2) - 1e-4) and torch.all(logit <= cells.max(2).values + 1e-4)
    with pytest.raises(KilnError, match="heads"):
        auth_multiview(backbone="test_resnet", heads=0)
    assert source_string("resnet10t", 128, 0.5) == "kiln:auth_multiview?backbone=resnet10t&embed_dim=128&width=0.5"
    assert source_string("resnet10t", 128, 0.5, 9).endswith("&heads=9")


def test_the_claimed_item_picks_its_head() -> None:
    cal = AuthCalibration(backbone="b", embed_dim=8, image_size=64, designs=["aurelle/celeste", "ormond/vesper"])
    assert cal.heads == 3
    assert cal.head_for("Aurelle", "  Celeste ") == 1 and cal.head_for("ormond", "vesper") == 2
    assert cal.head_for("aurelle", "vesper") == 0 and cal.head_for(None, None) == 0
    assert design_key(" Ormond ", "Vesper  Flap") == "ormond/vesper flap"
    logits = np.array([[0.1, 2.0, -3.0], [0.2, 4.0, -5.0]], np.float32)
    heat = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    chosen, maps = head_outputs({"logit": logits, "heatmap": heat}, 2, 2)
    assert chosen.tolist() == [-3.0, -5.0] and np.array_equal(maps, heat[:, 2])
    chosen, maps = head_outputs({"logit": logits, "heatmap": heat}, 2, 7)  # no such head: the generic one
    assert np.allclose(chosen, [0.1, 0.2]) and np.array_equal(maps, heat[:, 0])
    single = {"logit": logits[:, :1], "heatmap": heat[:, 0]}  # a single-head model's shapes
    chosen, maps = head_outputs(single, 2, 1)
    assert np.allclose(chosen, [0.1, 0.2]) and np.array_equal(maps, heat[:, 0])


def test_the_gate_scores_the_configured_column() -> None:
    scores = np.array([[-1.0, 5.0, 3.0], [2.0, -4.0, 9.0]])
    assert predictions(scores).tolist() == [1, 2]  # argmax of a multi-class output
    assert predictions(scores, 0).tolist() == [0, 1]  # the sign of one binary logit


def test_training_with_design_heads(trained_heads: TrainResult, synth_data: Path) -> None:
    cal = trained_heads.calibration
    dataset = load_dataset(synth_data)
    assert cal.designs == sorted({design_key(p.brand, p.model) for p in dataset.photos}) and len(cal.designs) > 1
    state = torch.load(trained_heads.checkpoint, weights_only=True)["state_dict"]
    assert state["classifier.weight"].shape[0] == cal.heads
    assert cal.trained_on["source"].endswith(f"&heads={cal.heads}")
    assert {"photo_accuracy", "generic_photo_accuracy"} <= set(cal.validation)


def test_engine_and_assessment_use_the_claimed_design(trained_heads: TrainResult, synth_data: Path, tmp_path: Path) -> None:
    from kiln.apps.authenticity.engine import build_auth_engine
    from kiln.apps.authenticity.imaging import decode_photo
    from kiln.apps.authenticity.predict import CheckpointPredictor, EnginePredictor
    from kiln.engine.spec import BatchProfile, Precision

    # FP32 with the accuracy gate on: it scores the generic column of the B×heads logit.
    outcome = build_auth_engine(trained_heads.checkpoint, synth_data, tmp_path / "fp32", precision=Precision.FP32,
                                batch=BatchProfile(min=1, opt=6, max=8), cache_dir=tmp_path / "cache")
    assert outcome.manifest.validation is not None and outcome.manifest.validation.passed
    assert outcome.manifest.validation.max_column_drop_points is not None  # every head was held to the gate
    engine = EnginePredictor(tmp_path / "fp32")
    reference = CheckpointPredictor(trained_heads.checkpoint)
    cal = engine.calibration
    case = [p for p in load_dataset(synth_data).photos if p.case_id == load_dataset(synth_data).photos[0].case_id]
    decoded = [decode_photo(p.path.read_bytes(), engine.preprocessing) for p in case]
    pixels = np.stack([d.pixels for d in decoded])
    got, want = engine(pixels), reference(pixels)
    assert got["logit"].shape == (len(case), cal.heads) and got["heatmap"].shape[:2] == (len(case), cal.heads)
    assert np.allclose(got["logit"], want["logit"], atol=1e-3)
    engine.close()
    metrics = [measure(d.pixels, d.width, d.height) for d in decoded]
    views = [p.view for p in case]
    head = cal.head_for(case[0].brand, case[0].model)
    assert head >= 1
    claimed = assess_case(views, metrics, got, cal, brand=case[0].brand, model=case[0].model)
    generic = assess_case(views, metrics, got, cal)
    assert [p.logit for p in claimed.photos] == pytest.approx(got["logit"][:, head].tolist())
    assert [p.logit for p in generic.photos] == pytest.approx(got["logit"][:, 0].tolist())
    assert np.array_equal(claimed.photos[0].heatmap, got["heatmap"][0, head])


def test_items_outside_the_designs_get_the_generic_calibration_and_a_note(trained_heads: TrainResult) -> None:
    cal = trained_heads.calibration
    assert cal.generic is not None
    generic = cal.for_head(0)
    assert generic.temperature == cal.generic.temperature and generic.thresholds.counterfeit == cal.generic.counterfeit
    assert generic.thresholds.target_precision == cal.thresholds.target_precision
    assert cal.for_head(1) is cal
    metrics = [measure(np.full((64, 64, 3), 128, np.uint8), 64, 64)] * 2
    outputs = {"logit": np.zeros((2, cal.heads), np.float32), "embedding": np.zeros((2, 32), np.float32),
               "heatmap": np.zeros((2, cal.heads, 2, 2), np.float32)}
    unknown = assess_case(["logo", "lining"], metrics, outputs, cal, brand="Nobody", model="Nothing")
    assert any("not one of the designs" in note for note in unknown.notes)
    brand, model = cal.designs[0].split("/")
    known = assess_case(["logo", "lining"], metrics, outputs, cal, brand=brand, model=model)
    assert not any("not one of the designs" in note for note in known.notes)
