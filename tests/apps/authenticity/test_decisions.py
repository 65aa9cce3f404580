"""Calibration, thresholds, fusion, the quality gate and the distribution check, on controlled inputs."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kiln.apps.authenticity.assessment import assess_case
from kiln.apps.authenticity.calibration import (
    AuthCalibration,
    HeadCalibration,
    Thresholds,
    ViewProfile,
    choose_thresholds,
    fit_logistic,
    fit_logistic_features,
    fit_temperature,
)
from kiln.apps.authenticity.fusion import ViewScore, case_probability, fuse, hottest_region, pooled_features
from kiln.apps.authenticity.ood import check_distribution
from kiln.apps.authenticity.quality import QualityLimits, check_quality, learn_limits, measure
from kiln.apps.authenticity.views import VIEWS, Verdict
from kiln.errors import KilnError


def _calibration(**thresholds: float) -> AuthCalibration:
    eye = np.eye(len(VIEWS), 8)
    views = {
        view: ViewProfile(centroid=eye[i].tolist(), min_similarity=0.6, stats_mean=[0.5] * 6, stats_std=[0.1] * 6)
        for i, view in enumerate(VIEWS)
    }
    return AuthCalibration(backbone="x", embed_dim=8, image_size=64, temperature=2.0, fusion_scale=1.0, fusion_bias=0.0,
                           thresholds=Thresholds(counterfeit=0.95, authentic=0.05, min_authentic_views=3, **thresholds),
                           views=views)


def test_temperature_recovers_the_true_scale() -> None:
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 3, 20000)
    targets = (rng.random(20000) < 1 / (1 + np.exp(-true_logits))).astype(float)
    assert fit_temperature(true_logits * 2.5, targets) == pytest.approx(2.5, rel=0.05)


def test_logistic_calibration_and_thresholds_meet_the_target_precision() -> None:
    rng = np.random.default_rng(1)
    labels = (rng.random(4000) < 0.5).astype(int)
    scores = rng.normal(labels * 4 - 2, 1.5)
    a, b = fit_logistic(scores, labels)
    p = 1 / (1 + np.exp(-(a * scores + b)))
    t_c, t_a = choose_thresholds(p, labels, 0.99)
    assert t_c >= 0.99 and t_a <= 0.01
    fake = p >= t_c
    real = p <= t_a
    assert labels[fake].mean() >= 0.99 and (1 - labels[real]).mean() >= 0.99
    assert 0.2 < fake.mean() + real.mean() < 1.0, "some cases are decided, some abstained on"


def _calibrated_cases(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated case probabilities of two overlapping classes (p is the true chance of counterfeit)."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.5).astype(int)
    scores = rng.normal(labels * 4 - 2, 1.5)
    a, b = fit_logistic(scores, labels)
    return 1 / (1 + np.exp(-(a * scores + b))), labels


def _decided(p: np.ndarray, labels: np.ndarray, thresholds: tuple[float, float]) -> tuple[float, float]:
    """(coverage, precision of the decided cases)."""
    fake, real = p >= thresholds[0], p <= thresholds[1]
    correct = (fake & (labels == 1)) | (real & (labels == 0))
    return float((fake | real).mean()), float(correct[fake | real].mean())


def test_a_lower_confidence_floor_decides_more_cases_and_keeps_the_precision_on_new_ones() -> None:
    new_p, new_y = _calibrated_cases(20000, seed=4)
    coverage = {}
    for floor in (0.99, 0.97, 0.9):
        covered, precise = [], []
        for seed in range(10, 20):  # validation sets of 600 cases, as a training run holds out
            val_p, val_y = _calibrated_cases(600, seed)
            thresholds = choose_thresholds(val_p, val_y, 0.99, min_confidence=floor)
            assert thresholds[0] >= floor and thresholds[1] <= 1 - floor
            c, p = _decided(new_p, new_y, thresholds)
            covered.append(c)
            precise.append(p)
        coverage[floor] = float(np.mean(covered))
        if floor >= 0.97:
            assert min(precise) >= 0.99, f"floor {floor}: the target holds on new cases"
        else:  # only just reaching the target on validation misses it on new cases
            assert np.mean(precise) < 0.99
    assert coverage[0.99] < coverage[0.97] < coverage[0.9]
    strict = choose_thresholds(new_p, new_y, 0.99, min_confidence=0.999)  # a floor above the target binds
    assert strict[0] >= 0.999 and strict[1] <= 0.001


def test_two_feature_logistic_recovers_its_weights() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(0, 2, (20000, 2))
    y = (rng.random(20000) < 1 / (1 + np.exp(-(1.5 * x[:, 0] - 0.7 * x[:, 1] + 0.4)))).astype(int)
    weights, bias = fit_logistic_features(x, y, l2=1e-6)
    assert weights == pytest.approx([1.5, -0.7], abs=0.1) and bias == pytest.approx(0.4, abs=0.1)
    # one class only: the identity on the first feature, not a degenerate fit
    assert fit_logistic_features(x, np.zeros(len(x))) == ([1.0, 0.0], 0.0)
    # the one-feature form is the same fit
    a, b = fit_logistic(x[:, 0], y, l2=1e-6)
    one, bias1 = fit_logistic_features(x[:, :1], y, l2=1e-6)
    assert (a, b) == pytest.approx((one[0], bias1))


def test_top_two_pooling_counts_a_second_suspicious_view() -> None:
    assert pooled_features([-3.0, 2.0, 1.0], "top_two") == [2.0, 1.0]
    assert pooled_features([0.5], "top_two") == [0.5, 0.5]  # one photo: its score twice
    assert pooled_features([0.0, 0.0], "soft_max") == [pytest.approx(np.log(2))]
    with pytest.raises(ValueError, match="pooling"):
        pooled_features([0.0], "median")
    cal = _calibration().model_copy(update={"pooling": "top_two", "fusion_scale": 1.0, "fusion_second_scale": 0.5,
                                            "fusion_bias": -1.0})
    one = case_probability([-4.0, -4.0, 2.0], cal)
    two = case_probability([-4.0, 2.0, 2.0], cal)
    assert one == pytest.approx(1 / (1 + np.exp(-(2.0 - 2.0 - 1.0))))
    assert two == pytest.approx(1 / (1 + np.exp(-(2.0 + 1.0 - 1.0)))) and two > one


def test_view_scales_weigh_a_view_by_its_own_evidence() -> None:
    cal = _calibration()
    heat = np.zeros((3, 3))
    clean = [ViewScore(i, v, -14.0, -np.ones((3, 3))) for i, v in enumerate(VIEWS) if v != "date_code"]
    alarm = ViewScore(5, "date_code", 14.0, heat)
    assert fuse([*clean, alarm], cal).verdict is Verdict.COUNTERFEIT
    # a date-code reader that is nearly at chance: its alarm carries little evidence
    weak = cal.model_copy(update={"view_scales": {"date_code": (0.05, -5.0)}})
    assert alarm.log_odds(weak) == pytest.approx(0.05 * 7.0 - 5.0)
    assert clean[0].log_odds(weak) == clean[0].log_odds(cal) == -7.0  # views without a scale are unchanged
    assert fuse([*clean, alarm], weak).verdict is Verdict.AUTHENTIC


def test_calibrations_from_before_view_scales_and_pooling_load_unchanged() -> None:
    old = _calibration().model_dump(mode="json")
    for key in ("pooling", "fusion_second_scale", "view_scales"):
        old.pop(key)
    old["thresholds"].pop("min_confidence")
    cal = AuthCalibration.from_extra(old)
    assert cal.pooling == "soft_max" and cal.view_scales == {} and cal.fusion_second_scale == 0.0
    assert cal.thresholds.min_confidence is None and cal.thresholds.floor == cal.thresholds.target_precision
    assert case_probability([-2.0, 1.0], cal) == pytest.approx(1 / (1 + np.exp(-np.logaddexp(-2.0, 1.0))))
    # a generic head's own pooling and scales apply to it
    designed = cal.model_copy(update={"designs": ["a/b"], "generic": HeadCalibration(
        temperature=1.0, fusion_scale=2.0, fusion_bias=0.0, counterfeit=0.9, authentic=0.1, pooling="top_two",
        fusion_second_scale=1.0, view_scales={"logo": (2.0, 0.0)})})
    generic = designed.for_head(0)
    assert generic.pooling == "top_two" and generic.view_scales == {"logo": (2.0, 0.0)}
    assert designed.for_head(1).pooling == "soft_max"
    round_trip = AuthCalibration.from_extra(generic.model_dump(mode="json"))
    assert round_trip.view_scales == {"logo": (2.0, 0.0)}


def test_one_convincing_view_makes_a_counterfeit_and_the_reason_names_it() -> None:
    cal = _calibration()
    heat = np.zeros((3, 3))
    heat[0, 2] = 5.0
    scores = [ViewScore(i, v, -12.0, -np.ones((3, 3))) for i, v in enumerate(VIEWS[:5])]
    scores.append(ViewScore(5, "overall", 14.0, heat))
    result = fuse(scores, cal)
    assert result.verdict is Verdict.COUNTERFEIT and result.confidence >= 0.95
    assert result.drivers == [5]
    assert "overall" in result.reasons[0] and "upper right" in result.reasons[0]


def test_authentic_needs_enough_views_and_low_scores() -> None:
    cal = _calibration()
    clean = [ViewScore(i, v, -14.0, -np.ones((3, 3))) for i, v in enumerate(VIEWS)]
    result = fuse(clean, cal)
    assert result.verdict is Verdict.AUTHENTIC and result.confidence > 0.95
    few = fuse(clean[:2], cal)
    assert few.verdict is Verdict.INCONCLUSIVE and "needs 3 views" in few.reasons[0]
    doubtful = fuse([*clean[:5], ViewScore(5, "overall", 0.0, np.zeros((3, 3)))], cal)
    assert doubtful.verdict is Verdict.INCONCLUSIVE and "overall" in doubtful.reasons[0]
    assert fuse([], cal, rejected=3).verdict is Verdict.INCONCLUSIVE


def test_hottest_region_names() -> None:
    grid = np.zeros((5, 5))
    grid[4, 0] = 1
    assert hottest_region(grid) == "lower left"
    grid[2, 2] = 3
    assert hottest_region(grid) == "centre"
    assert hottest_region(-grid, sign=-1) == "centre"


def _texture(seed: int = 0, size: int = 96) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(40, 215, (24, 24, 3), dtype=np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    return np.clip(base.astype(int) + rng.integers(-25, 25, base.shape), 0, 255).astype(np.uint8)


def test_quality_gate_finds_blur_darkness_glare_and_small_photos() -> None:
    limits = QualityLimits(min_side=200, min_sharpness=50.0)
    sharp = _texture()
    assert check_quality(measure(sharp, 1000, 800), limits) == []
    blurred = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    assert [f.code for f in check_quality(measure(blurred, 1000, 800), limits)] == ["blur"]
    dark = (sharp * 0.05).astype(np.uint8)
    assert "underexposed" in [f.code for f in check_quality(measure(dark, 1000, 800), limits)]
    glare = sharp.copy()
    glare[10:60, 10:60] = 255
    codes = [f.code for f in check_quality(measure(glare, 1000, 800), limits)]
    assert "glare" in codes
    assert [f.code for f in check_quality(measure(sharp, 150, 800), limits)] == ["resolution"]
    finding = check_quality(measure(blurred, 1000, 800), limits)[0]
    assert finding.guidance and "sharpness" in finding.message


def test_learned_limits_accept_the_training_photos() -> None:
    photos = [measure(_texture(seed), 512, 512) for seed in range(40)]
    limits = learn_limits(photos, min_side=224)
    assert all(check_quality(m, limits) == [] for m in photos)


def test_distribution_check_finds_wrong_views_and_strangers() -> None:
    cal = _calibration()
    stats = [0.5] * 6
    own = np.eye(len(VIEWS), 8)[VIEWS.index("logo")]
    assert check_distribution("logo", own, stats, cal) == []
    lining = np.eye(len(VIEWS), 8)[VIEWS.index("lining")]
    wrong = check_distribution("logo", lining, stats, cal)
    assert [f.code for f in wrong] == ["wrong_view"] and "lining" in wrong[0].message
    stranger = np.zeros(8)
    stranger[7] = 1.0
    assert [f.code for f in check_distribution("logo", stranger, stats, cal)] == ["out_of_distribution"]
    odd_stats = [0.5] * 5 + [5.0]
    assert [f.code for f in check_distribution("logo", own, odd_stats, cal)] == ["out_of_distribution"]


def test_rejected_photos_never_count() -> None:
    """Even a photo the model scores as blatantly counterfeit is ignored once the gate rejects it."""
    cal = _calibration()
    views = list(VIEWS)
    embeddings = np.eye(len(VIEWS), 8)
    good = measure(_texture(), 1000, 1000)
    metrics = [good] * 6
    # stats must match the profiles: give every profile the good photo's statistics
    for profile in cal.views.values():
        profile.stats_mean = good.stats()
    logits = np.full((6, 1), -14.0, np.float32)
    logits[2] = 30.0
    embeddings[2] = 0.0
    embeddings[2, 7] = 1.0  # hardware photo of something else entirely
    result = assess_case(views, metrics, {"logit": logits, "embedding": embeddings, "heatmap": np.zeros((6, 3, 3))}, cal)
    assert not result.photos[2].ok and result.photos[2].probability is None
    assert result.fusion.verdict is Verdict.AUTHENTIC


def test_calibration_must_come_from_auth_training() -> None:
    with pytest.raises(KilnError, match="not trained by `kiln auth train`"):
        AuthCalibration.from_extra({}, where="engine x")
    with pytest.raises(KilnError, match="invalid"):
        AuthCalibration.from_extra({"app": "authenticity"}, where="engine x")
