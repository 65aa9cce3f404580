"""The registered model, its INT8 engine built by kiln's toolkit, training output and evaluation."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kiln.apps.authenticity.calibration import AuthCalibration
from kiln.apps.authenticity.imaging import decode_photo
from kiln.apps.authenticity.model import MODEL_NAME, OUTPUT_NAMES, PREPROCESSING, auth_multiview
from kiln.apps.authenticity.train import TrainResult
from kiln.engine.models import get_model
from kiln.errors import KilnError


def test_model_is_registered_with_kiln() -> None:
    entry = get_model(MODEL_NAME)
    assert entry.output_names == OUTPUT_NAMES and entry.dynamic_hw is False
    assert entry.preprocessing.crop_pct == 1.0


def test_one_pass_gives_logit_unit_embedding_and_heatmap() -> None:
    torch.manual_seed(0)
    model = auth_multiview(backbone="test_resnet", embed_dim=16).eval()
    with torch.inference_mode():
        logit, embedding, heatmap = model(torch.randn(3, 3, 64, 64))
    assert logit.shape == (3, 1) and embedding.shape == (3, 16) and heatmap.dim() == 3 and heatmap.shape[0] == 3
    assert torch.allclose(embedding.norm(dim=1), torch.ones(3), atol=1e-4)
    # The logit is a smooth maximum of the heatmap: between its mean and its maximum.
    cells = heatmap.flatten(1)
    assert torch.all(logit[:, 0] >= cells.mean(1) - 1e-4) and torch.all(logit[:, 0] <= cells.max(1).values + 1e-4)


def test_bad_backbone_options() -> None:
    with pytest.raises(KilnError, match="no backbone"):
        auth_multiview(backbone="no_such_net")
    with pytest.raises(KilnError, match="embed_dim"):
        auth_multiview(embed_dim=3)


def test_checkpoint_carries_the_calibration(trained: TrainResult) -> None:
    data = torch.load(trained.checkpoint, weights_only=True)
    cal = AuthCalibration.from_extra(data["kiln_extra"])
    assert cal.backbone == "test_resnet" and cal.image_size == 64 and cal.embed_dim == 32
    assert set(cal.views) == {"logo", "stitching", "hardware", "date_code", "lining", "overall"}
    for profile in cal.views.values():
        assert len(profile.centroid) == 32 and abs(np.linalg.norm(profile.centroid) - 1) < 1e-3
        assert len(profile.stats_mean) == len(profile.stats_std) == 6
    assert 0.05 <= cal.temperature <= 50
    assert cal.thresholds.min_confidence == 0.97
    assert cal.thresholds.counterfeit >= 0.97 and cal.thresholds.authentic <= 0.03
    assert cal.trained_on["synthetic"] is True
    assert set(cal.validation) >= {"cases", "coverage", "accuracy_covered", "photo_accuracy"}
    # the default case calibration: top-two pooling over per-view rescaled log-odds
    assert cal.pooling == "top_two" and cal.view_scales and set(cal.view_scales) <= set(cal.views)
    assert all(len(scale) == 2 and np.isfinite(scale).all() for scale in cal.view_scales.values())
    assert len(trained.history) == 2
    summary = json.loads(json.dumps(trained.history[0].__dict__))
    assert summary["epoch"] == 1


def test_int8_engine_from_checkpoint_matches_fp32_and_carries_calibration(
    trained: TrainResult, synth_data: Path, tmp_path: Path
) -> None:
    from kiln.apps.authenticity.engine import build_auth_engine
    from kiln.apps.authenticity.predict import CheckpointPredictor, EnginePredictor
    from kiln.engine.spec import BatchProfile, Precision

    outcome = build_auth_engine(trained.checkpoint, synth_data, tmp_path / "int8", precision=Precision.INT8,
                                batch=BatchProfile(min=1, opt=6, max=8), max_drop=100.0, calibration_limit=32,
                                cache_dir=tmp_path / "cache")
    manifest = outcome.manifest
    assert manifest.precision is Precision.INT8 and [o.name for o in manifest.outputs] == list(OUTPUT_NAMES)
    assert manifest.extra["app"] == "authenticity" and manifest.preprocessing.input_size == (3, 64, 64)
    assert manifest.validation is not None and manifest.validation.samples > 0
    photos = sorted(synth_data.rglob("*.jpg"))[:6]
    pixels = np.stack([decode_photo(p.read_bytes(), manifest.preprocessing).pixels for p in photos])
    engine = EnginePredictor(tmp_path / "int8")
    reference = CheckpointPredictor(trained.checkpoint)
    got, want = engine(pixels), reference(pixels)
    assert got["heatmap"].shape == want["heatmap"].shape
    cos = (got["embedding"] * want["embedding"]).sum(1)
    assert cos.min() > 0.9, "INT8 embeddings stay close to FP32"
    engine.close()


def test_evaluate_writes_metrics_and_plots(trained: TrainResult, synth_data: Path, tmp_path: Path) -> None:
    from kiln.apps.authenticity.evaluate import evaluate, roc_auc, write_outputs
    from kiln.apps.authenticity.predict import CheckpointPredictor

    report = evaluate(CheckpointPredictor(trained.checkpoint), synth_data)
    assert report.cases == 24 and 0.0 <= report.coverage <= 1.0
    assert sum(sum(row.values()) for row in report.confusion.values()) == 24
    written = write_outputs(report, tmp_path / "eval")
    for path in written:
        assert path.is_file() and path.stat().st_size > 0
    with Image.open(tmp_path / "eval" / "coverage.png") as plot:
        assert plot.format == "PNG"
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(metrics) >= {"coverage", "accuracy_covered", "roc_auc", "confusion", "by_difficulty", "by_view", "by_defect"}
    # per photo: every evaluated photo once, with the defect the synthetic data says it shows
    with (tmp_path / "eval" / "photos.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(report.photo_outcomes) == sum(row["photos"] for row in metrics["by_view"].values())
    flawed = [r for r in rows if r["target"] == "1"]
    assert flawed and all(r["defect"] for r in flawed) and not any(r["defect"] for r in rows if r["target"] == "0")
    assert sum(row["photos"] for row in metrics["by_defect"].values()) == len(flawed)
    assert roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    assert metrics["accuracy_at_90_coverage"] is None or 0.0 <= metrics["accuracy_at_90_coverage"] <= 1.0


def test_accuracy_at_coverage_decides_the_most_confident_cases_first() -> None:
    from kiln.apps.authenticity.evaluate import CaseOutcome, accuracy_at_coverage

    def case(label: str, p: float | None) -> CaseOutcome:
        return CaseOutcome(case_id="c", label=label, verdict="inconclusive", confidence=0.5, counterfeit_probability=p,
                           difficulty="", rejected_photos=0)
    # ten cases, most confident first: 8 right, then a wrong one at 0.6, a right one at 0.55
    outcomes = [case("counterfeit", 0.99 - i * 0.01) for i in range(8)] + [case("authentic", 0.6), case("counterfeit", 0.55)]
    assert accuracy_at_coverage(outcomes, 0.8) == 1.0
    assert accuracy_at_coverage(outcomes, 0.9) == pytest.approx(8 / 9, abs=1e-4)
    assert accuracy_at_coverage([*outcomes[:8], case("authentic", None), case("authentic", None)], 0.9) is None


def test_photo_breakdown_counts_catches_false_alarms_and_rejections() -> None:
    from kiln.apps.authenticity.evaluate import PhotoOutcome, photo_breakdown

    def photo(view: str, target: int, defect: str, probability: float | None, level: str = "hard") -> PhotoOutcome:
        return PhotoOutcome("c", view, target, defect, level, probability, "" if probability is not None else "blur")

    photos = [
        photo("logo", 1, "kerning", 0.9), photo("logo", 1, "kerning", 0.2), photo("logo", 1, "font", 0.7, "easy"),
        photo("logo", 1, "font", None), photo("logo", 0, "", 0.6), photo("logo", 0, "", 0.1), photo("logo", 0, "", 0.3),
        photo("lining", 0, "", 0.05),
    ]
    by_view, by_defect = photo_breakdown(photos)
    logo = by_view["logo"]
    assert (logo["photos"], logo["rejected"], logo["flawed"]) == (7, 1, 3)
    assert logo["flawed_recall"] == pytest.approx(2 / 3, abs=1e-4) and logo["clean_false_alarms"] == pytest.approx(1 / 3, abs=1e-4)
    assert logo["roc_auc"] == pytest.approx(7 / 9, abs=1e-4)  # flawed 0.9, 0.2, 0.7 against clean 0.6, 0.1, 0.3
    assert by_view["lining"]["flawed_recall"] is None and by_view["lining"]["roc_auc"] is None
    assert by_defect["kerning"] == {"photos": 2, "rejected": 0, "recall": 0.5, "median_probability": 0.55,
                                    "recall_by_difficulty": {"hard": 0.5}}
    assert by_defect["font"]["rejected"] == 1 and by_defect["font"]["recall_by_difficulty"] == {"easy": 1.0}


def test_decode_uses_the_same_pixels_as_the_engine_preprocessing() -> None:
    from kiln.engine.images import decode_image, resize_and_crop

    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    ours = decode_photo(buffer.getvalue(), PREPROCESSING).pixels
    engine = np.asarray(resize_and_crop(decode_image(buffer.getvalue()), PREPROCESSING))
    assert np.array_equal(ours, engine)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea"])
def test_jpeg_dct_scaled_decode_is_close_to_the_full_decode(name: str) -> None:
    """JPEGs are decoded at a reduced DCT scale: close to, not equal to, the full decode.

    Measured on photographs (pure noise, with all its energy at the highest frequencies, is where
    any two anti-aliasing filters disagree most and says nothing about photos)."""
    from kiln.engine.images import decode_image, resize_and_crop

    skimage_data = pytest.importorskip("skimage.data")
    buffer = io.BytesIO()
    Image.fromarray(getattr(skimage_data, name)()).resize((1600, 1200), Image.Resampling.LANCZOS).save(
        buffer, format="JPEG", quality=95)
    fast = decode_photo(buffer.getvalue(), PREPROCESSING)
    full = np.asarray(resize_and_crop(decode_image(buffer.getvalue()), PREPROCESSING))
    assert (fast.width, fast.height) == (1600, 1200)
    assert fast.pixels.shape == full.shape
    assert np.abs(fast.pixels.astype(int) - full.astype(int)).mean() < 6


def test_recalibrate_command_refits_the_pooling_and_keeps_the_weights(
    trained: TrainResult, synth_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sys

    from kiln.cli import main

    out = tmp_path / "soft.pt"
    monkeypatch.setattr(sys, "argv", ["kiln", "auth", "recalibrate", "--checkpoint", str(trained.checkpoint), "--data",
                                      str(synth_data), "-o", str(out), "--pooling", "soft_max", "--no-view-scaling",
                                      "--threads", "1"])
    main()
    before = torch.load(trained.checkpoint, weights_only=True)
    after = torch.load(out, weights_only=True)
    cal = AuthCalibration.from_extra(after["kiln_extra"])
    assert cal.pooling == "soft_max" and cal.view_scales == {} and cal.fusion_second_scale == 0.0
    assert AuthCalibration.from_extra(before["kiln_extra"]).pooling == "top_two", "the source checkpoint is untouched"
    for name, tensor in before["state_dict"].items():
        assert torch.equal(tensor, after["state_dict"][name])
    capsys.readouterr()
    for option, value, named in (("--pooling", "median", "median"), ("--min-confidence", "0.995", "--min-confidence 0.995")):
        monkeypatch.setattr(sys, "argv", ["kiln", "auth", "recalibrate", "--checkpoint", str(out), "--data", str(synth_data),
                                          option, value])
        with pytest.raises(SystemExit) as exited:
            main()
        printed = capsys.readouterr()
        assert exited.value.code == 2 and named in printed.out + printed.err
        assert "Traceback" not in printed.out + printed.err


def test_evaluate_through_the_gpu_decode_path(trained: TrainResult, synth_data: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """``--decoder torchvision`` runs the server's GPU decode path (here on the CPU) instead of Pillow's; photos that
    path leaves to Pillow (a PNG) are counted."""
    import shutil

    import kiln.apps.authenticity.evaluate as evaluation
    import kiln.apps.authenticity.gpu_imaging as gpu_imaging
    from kiln.apps.authenticity.dataset import load_dataset
    from kiln.apps.authenticity.predict import CheckpointPredictor

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    photos = [p.path for members in load_dataset(data).evaluation_cases().values() for p in members]
    with Image.open(photos[0]) as image:  # a PNG under a .jpg name: formats are read from the bytes
        image.save(photos[0], format="PNG")
    with Image.open(photos[1]) as image:  # four times the model's size: the box filter runs
        image.convert("RGB").resize((384, 384)).save(photos[1], format="JPEG", quality=90)
    predictor = CheckpointPredictor(trained.checkpoint)
    baseline = evaluation.evaluate(predictor, data)
    pillow_decodes = []
    real_decode_photo = gpu_imaging.decode_photo

    def counted(*args: object, **kwargs: object) -> object:
        pillow_decodes.append(1)
        return real_decode_photo(*args, **kwargs)  # type: ignore[arg-type]

    def no_pillow(*args: object, **kwargs: object) -> None:
        raise AssertionError("the evaluation's own Pillow path should not run")

    monkeypatch.setattr(evaluation, "decode_photo", no_pillow)
    monkeypatch.setattr(gpu_imaging, "decode_photo", counted)
    report = evaluation.evaluate(predictor, data, decoder="torchvision")
    assert report.decoder == "torchvision" and baseline.decoder == "pillow"
    assert report.cpu_decoded_photos == 1 == len(pillow_decodes), "only the PNG goes to Pillow"
    assert baseline.cpu_decoded_photos == 0 and report.cases == baseline.cases == 24
    # the same photos in the same order, with near-identical pixels at this size: near-identical evidence
    pairs = list(zip(baseline.photo_outcomes, report.photo_outcomes, strict=True))
    assert all((a.case_id, a.view) == (b.case_id, b.view) for a, b in pairs)
    scored = [(a.probability, b.probability) for a, b in pairs if a.probability is not None and b.probability is not None]
    assert scored and max(abs(a - b) for a, b in scored) < 0.1
    evaluation.write_outputs(report, tmp_path / "eval")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["decoder"] == "torchvision" and metrics["cpu_decoded_photos"] == 1


def test_evaluate_refuses_an_unknown_or_unavailable_decoder(trained: TrainResult, synth_data: Path, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import kiln.apps.authenticity.gpu_imaging as gpu_imaging
    from kiln.apps.authenticity.evaluate import evaluate
    from kiln.apps.authenticity.predict import CheckpointPredictor

    predictor = CheckpointPredictor(trained.checkpoint)
    with pytest.raises(KilnError, match="unknown decoder 'libjpeg'"):
        evaluate(predictor, synth_data, decoder="libjpeg")
    monkeypatch.setattr(gpu_imaging, "gpu_decoding_available", lambda device: False)
    with pytest.raises(KilnError, match="nvjpeg decoder needs torch and torchvision with a CUDA GPU"):
        evaluate(predictor, synth_data, decoder="nvjpeg")
    cases = [("bogus", "--decoder 'bogus' is not one of pillow, nvjpeg, torchvision")]
    if not torch.cuda.is_available():
        cases.append(("nvjpeg", "the nvjpeg decoder needs torch and torchvision with a CUDA GPU"))
    for value, message in cases:  # the CLI says so before it loads anything, without a traceback
        done = subprocess.run([sys.executable, "-m", "kiln", "auth", "evaluate", "--data", str(synth_data), "--checkpoint",
                               str(trained.checkpoint), "--decoder", value, "-o", str(tmp_path / value)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and message in " ".join(done.stderr.split()) and "Traceback" not in done.stderr
        assert not (tmp_path / value).exists()
