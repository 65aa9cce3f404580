"""What training learns besides the weights, fitted on held-out validation cases.

- a temperature for the per-view logits (calibrated per-view probabilities),
- per view, a logistic rescaling of those log-odds fitted on its own photos (a view whose scores
  carry little evidence, such as a date code the model reads poorly, then weighs little),
- a case-level logistic calibration of the pooled view scores (calibrated case confidence),
- abstention thresholds chosen for a target precision,
- per-view profiles for the quality gate and the out-of-distribution check.

It travels inside the checkpoint (``kiln_extra``) and so inside every engine's manifest
(``manifest.extra``): the engine carries everything the app needs to reach a verdict.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, get_args

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from kiln.apps.authenticity.quality import QualityLimits
from kiln.apps.authenticity.views import design_key
from kiln.errors import KilnError

FORMAT = 1


class ViewProfile(BaseModel):
    """What photos of one view look like in the training data."""

    centroid: list[float]  # unit-norm mean embedding
    min_similarity: float  # cosine to the centroid below which a photo is out of distribution
    # how much closer to its own centroid than to any other view's a photo of this view must be
    # (-2: no such check, for calibrations made before it existed)
    min_margin: float = -2.0
    stats_mean: list[float]
    stats_std: list[float]
    quality: QualityLimits = Field(default_factory=QualityLimits)
    photos: int = 0


class Thresholds(BaseModel):
    counterfeit: float = 0.99  # case probability at or above which the verdict is counterfeit
    authentic: float = 0.01  # case probability at or below which the verdict is authentic
    target_precision: float = 0.99
    min_authentic_views: int = 3  # an authentic verdict needs this many usable photos
    wrong_view_margin: float = 0.05  # another view's centroid closer by this much → wrong view
    max_stats_z: float = 6.0  # image statistics further than this many SDs → out of distribution
    # a case where at least this share of the photos do not look like the claimed views gets no verdict
    max_foreign_share: float = 0.5
    # the floor counterfeit/authentic were chosen with (choose_thresholds); None in calibrations made
    # before it was a setting, which used the target precision
    min_confidence: float | None = None

    @property
    def floor(self) -> float:
        """The confidence floor the thresholds were chosen with."""
        return self.target_precision if self.min_confidence is None else self.min_confidence


Pooling = Literal["soft_max", "top_two"]
POOLINGS: tuple[str, ...] = get_args(Pooling)


class HeadCalibration(BaseModel):
    """The temperature, case calibration and thresholds of one classifier column."""

    temperature: float
    fusion_scale: float
    fusion_bias: float
    counterfeit: float
    authentic: float
    pooling: Pooling = "soft_max"
    fusion_second_scale: float = 0.0
    view_scales: dict[str, tuple[float, float]] = Field(default_factory=dict)


class AuthCalibration(BaseModel):
    app: str = "authenticity"
    format: int = FORMAT
    classifier_output: str = "logit"
    classifier_column: int = 0  # the accuracy gate scores the generic head
    backbone: str
    width: float = 1.0
    embed_dim: int
    image_size: int
    temperature: float = 1.0
    # How the usable photos' log-odds become the case's score (fusion.case_score):
    # soft_max: fusion_scale * logsumexp(log-odds) + fusion_bias;
    # top_two: fusion_scale * largest + fusion_second_scale * second largest + fusion_bias.
    pooling: Pooling = "soft_max"
    fusion_scale: float = 1.0
    fusion_second_scale: float = 0.0
    fusion_bias: float = 0.0
    # view -> (scale, bias) applied to a photo's temperature-scaled log-odds; a view not listed
    # (and every view of calibrations made before this existed) keeps them as they are
    view_scales: dict[str, tuple[float, float]] = Field(default_factory=dict)
    thresholds: Thresholds = Field(default_factory=Thresholds)
    views: dict[str, ViewProfile] = Field(default_factory=dict)
    # "brand/model" of the design heads, in column order from column 1 (column 0 is the generic
    # classifier); empty for a single-head model
    designs: list[str] = Field(default_factory=list)
    # with design heads, the generic column's own calibration (for items outside ``designs``); the
    # fields above then belong to the design heads
    generic: HeadCalibration | None = None
    validation: dict[str, Any] = Field(default_factory=dict)
    trained_on: dict[str, Any] = Field(default_factory=dict)
    trained_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def heads(self) -> int:
        return 1 + len(self.designs)

    def head_for(self, brand: str | None, model: str | None) -> int:
        """The logit column for a case that claims ``brand``/``model``: its design head when the
        model was trained on that design, otherwise the generic one (0)."""
        key = design_key(brand or "", model or "")
        try:
            return 1 + self.designs.index(key)
        except ValueError:
            return 0

    def for_head(self, head: int) -> AuthCalibration:
        """The calibration that judges column ``head``: the design heads' (the fields of this object),
        or the generic column's own when the model has design heads."""
        if head != 0 or not self.designs or self.generic is None:
            return self
        g = self.generic
        return self.model_copy(update={
            "temperature": g.temperature, "fusion_scale": g.fusion_scale, "fusion_bias": g.fusion_bias,
            "pooling": g.pooling, "fusion_second_scale": g.fusion_second_scale, "view_scales": g.view_scales,
            "thresholds": self.thresholds.model_copy(update={"counterfeit": g.counterfeit, "authentic": g.authentic}),
        })

    @classmethod
    def from_extra(cls, extra: dict[str, Any], where: str = "engine") -> AuthCalibration:
        if extra.get("app") != "authenticity":
            raise KilnError(
                f"{where} was not trained by `kiln auth train` (its manifest has no authenticity calibration)",
                hint="build the engine from a checkpoint written by `kiln auth train`",
            )
        try:
            return cls.model_validate(extra)
        except ValidationError as exc:
            raise KilnError(f"{where}: the authenticity calibration is invalid: {exc.error_count()} problems: {exc}") from exc


# --- fitting ----------------------------------------------------------------------------------------
def sigmoid(x: Any) -> Any:
    """The logistic function, without overflow for large |x| (a float for a float, an array for an array)."""
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    # log(1 + exp(-y*z)) with y in {-1, +1}, computed stably
    signed = np.where(targets > 0.5, logits, -logits)
    return float(np.mean(np.logaddexp(0.0, -signed)))


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature T minimising the validation NLL of sigmoid(logit / T)."""
    logits = np.asarray(logits, np.float64).ravel()
    targets = np.asarray(targets, np.float64).ravel()
    if len(np.unique(targets)) < 2:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.05), np.log(50.0), 241))
    losses = [_nll(logits / t, targets) for t in grid]
    best = int(np.argmin(losses))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    for _ in range(40):  # golden-section refinement between the grid neighbours
        a = high - (high - low) / 1.618
        b = low + (high - low) / 1.618
        if _nll(logits / a, targets) < _nll(logits / b, targets):
            high = b
        else:
            low = a
    return float((low + high) / 2)


def fit_logistic(scores: np.ndarray, targets: np.ndarray, l2: float = 1e-3) -> tuple[float, float]:
    """Platt scaling: (a, b) maximising the likelihood of sigmoid(a * score + b), lightly regularised."""
    weights, bias = fit_logistic_features(np.asarray(scores, np.float64).reshape(-1, 1), targets, l2)
    return weights[0], bias


def fit_logistic_features(features: np.ndarray, targets: np.ndarray, l2: float = 1e-3) -> tuple[list[float], float]:
    """Logistic regression of ``targets`` on the columns of ``features`` (one row per sample):
    (weights, bias) maximising the lightly regularised likelihood; with one class only, the
    identity on the first column (weight 1, the rest 0, bias 0)."""
    x = np.asarray(features, np.float64)
    if x.ndim == 1:
        x = x.reshape(-1, 1)
    y = np.asarray(targets, np.float64).ravel()
    k = x.shape[1]
    if len(np.unique(y)) < 2:
        return [1.0] + [0.0] * (k - 1), 0.0
    design = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(k + 1)
    w[0] = 1.0
    ridge = l2 * len(x) * np.eye(k + 1)
    for _ in range(100):  # Newton's method on a strictly convex objective
        p = sigmoid(design @ w)
        curvature = np.maximum(p * (1 - p), 1e-9)
        grad = design.T @ (p - y) + ridge @ w
        hess = (design * curvature[:, None]).T @ design + ridge
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-9:
            break
    return [float(v) for v in w[:k]], float(w[k])


def choose_thresholds(probabilities: np.ndarray, labels: np.ndarray, target_precision: float, *,
                      min_confidence: float | None = None) -> tuple[float, float]:
    """(counterfeit threshold, authentic threshold) for ``target_precision`` on validation cases.

    Each side on its own: the loosest threshold whose covered validation cases reach the target
    precision, and never looser than ``min_confidence`` (default: the target itself), so that no case
    gets a verdict that its own calibrated probability puts below that. The floor is what keeps the
    precision on new cases: a threshold that only just reaches the target on the validation cases
    reaches it on new ones about half the time (tests/apps/authenticity/test_decisions.py).
    """
    p = np.asarray(probabilities, np.float64).ravel()
    y = np.asarray(labels, np.int64).ravel()
    floor = float(target_precision if min_confidence is None else min_confidence)
    counterfeit = _tightest(p, y, target_precision, floor)
    authentic = _tightest(1.0 - p, 1 - y, target_precision, floor)
    return counterfeit, 1.0 - authentic


def _tightest(scores: np.ndarray, positives: np.ndarray, target: float, floor: float) -> float:
    candidates = np.unique(scores[scores >= floor])
    for threshold in candidates:  # ascending: the loosest threshold that meets the target
        covered = scores >= threshold
        if positives[covered].mean() >= target:
            return float(threshold)
    return float(max(floor, float(scores.max(initial=floor)) + 1e-9)) if len(candidates) else floor
