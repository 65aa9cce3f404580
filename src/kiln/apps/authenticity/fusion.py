"""Multi-view fusion: per-view scores of the usable photos → authentic / counterfeit / inconclusive.

Each photo's logit becomes log-odds with the model's temperature and then its view's own logistic
rescaling (both fitted on validation photos). A counterfeit needs only one convincingly wrong
detail, so the views are pooled by the most counterfeit-looking ones: a soft maximum
(log-sum-exp), or the largest and the second largest as two features (``top_two``); a logistic
calibration fitted on validation cases turns them into the case's counterfeit probability. The verdict
abstains (inconclusive) unless that probability clears a threshold chosen on validation data for
the target precision, and an authentic verdict also needs enough usable views.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kiln.apps.authenticity.calibration import AuthCalibration, sigmoid
from kiln.apps.authenticity.views import Verdict

_REGIONS = (("upper left", "top", "upper right"), ("left", "centre", "right"), ("lower left", "bottom", "lower right"))


@dataclass(frozen=True)
class ViewScore:
    index: int  # position of the photo in the case
    view: str
    logit: float  # raw model output
    heatmap: np.ndarray  # h×w class-activation map (log-odds contributions)

    def log_odds(self, cal: AuthCalibration) -> float:
        value = self.logit / cal.temperature
        scale = cal.view_scales.get(self.view)
        return value if scale is None else scale[0] * value + scale[1]

    def probability(self, cal: AuthCalibration) -> float:
        return float(sigmoid(self.log_odds(cal)))


@dataclass
class FusionResult:
    verdict: Verdict
    confidence: float  # probability that the verdict is right (for inconclusive: of the likelier side)
    counterfeit_probability: float | None
    reasons: list[str] = field(default_factory=list)
    drivers: list[int] = field(default_factory=list)  # photo indices that drove the verdict


def pooled_score(log_odds: list[float]) -> float:
    """Soft maximum of the views' log-odds: dominated by the most counterfeit-looking view."""
    values = np.asarray(log_odds, np.float64)
    return float(np.logaddexp.reduce(values))


def pooled_features(log_odds: list[float], pooling: str) -> list[float]:
    """The case features that ``pooling`` makes of the photos' log-odds (at least one photo)."""
    if pooling == "soft_max":
        return [pooled_score(log_odds)]
    if pooling == "top_two":
        ranked = sorted(log_odds, reverse=True)
        return [ranked[0], ranked[1] if len(ranked) > 1 else ranked[0]]
    raise ValueError(f"unknown pooling {pooling!r}")


def case_score(log_odds: list[float], cal: AuthCalibration) -> float:
    features = pooled_features(log_odds, cal.pooling)
    weights = [cal.fusion_scale, cal.fusion_second_scale][: len(features)]
    return float(np.dot(weights, features)) + cal.fusion_bias


def case_probability(log_odds: list[float], cal: AuthCalibration) -> float:
    return float(sigmoid(case_score(log_odds, cal)))


def hottest_region(heatmap: np.ndarray, sign: float = 1.0) -> str:
    """Where in the photo the evidence for ``sign`` (+1 counterfeit, -1 authentic) is strongest."""
    grid = np.asarray(heatmap, np.float64) * sign
    if grid.ndim != 2 or grid.size == 0:
        return "whole photo"
    y, x = np.unravel_index(int(np.argmax(grid)), grid.shape)
    row = min(2, int(3 * (y + 0.5) / grid.shape[0]))
    col = min(2, int(3 * (x + 0.5) / grid.shape[1]))
    return _REGIONS[row][col]


def fuse(scores: list[ViewScore], cal: AuthCalibration, rejected: int = 0) -> FusionResult:
    """The case verdict from the usable photos' scores; ``rejected`` photos are only mentioned."""
    note = f"; {rejected} photo{'s' if rejected != 1 else ''} rejected by the quality gate" if rejected else ""
    if not scores:
        return FusionResult(Verdict.INCONCLUSIVE, 0.0, None,
                            ["no usable photo: every photo was rejected by the quality gate" if rejected else "no photos"])
    thresholds = cal.thresholds
    log_odds = [s.log_odds(cal) for s in scores]
    p = case_probability(log_odds, cal)
    ranked = sorted(scores, key=lambda s: s.log_odds(cal), reverse=True)
    if p >= thresholds.counterfeit:
        flagged = [s for s in ranked if s.probability(cal) >= 0.5] or ranked[:1]
        reasons = [
            f"{s.view.replace('_', ' ')}: counterfeit evidence {s.probability(cal):.2f}, strongest at the {hottest_region(s.heatmap)}"
            for s in flagged
        ]
        return FusionResult(Verdict.COUNTERFEIT, p, p, reasons, [s.index for s in flagged])
    if p <= thresholds.authentic:
        if len(scores) < thresholds.min_authentic_views:
            return FusionResult(
                Verdict.INCONCLUSIVE, 1.0 - p, p,
                [f"only {len(scores)} usable photo{'s' if len(scores) != 1 else ''}: an authentic verdict needs "
                 f"{thresholds.min_authentic_views} views, so that no detail goes unchecked{note}"],
            )
        top = ranked[0]
        reasons = [
            f"all {len(scores)} usable views match the authentic house style; the least convincing is "
            f"{top.view.replace('_', ' ')} (counterfeit evidence {top.probability(cal):.2f}){note}"
        ]
        return FusionResult(Verdict.AUTHENTIC, 1.0 - p, p, reasons, [s.index for s in scores])
    top = ranked[0]
    reasons = [
        f"the evidence is not strong enough either way (counterfeit probability {p:.2f}; a verdict needs "
        f"≥ {thresholds.counterfeit:.2f} or ≤ {thresholds.authentic:.2f}); most doubtful view: "
        f"{top.view.replace('_', ' ')} ({top.probability(cal):.2f}, at the {hottest_region(top.heatmap)}){note}"
    ]
    return FusionResult(Verdict.INCONCLUSIVE, max(p, 1.0 - p), p, reasons, [top.index])
