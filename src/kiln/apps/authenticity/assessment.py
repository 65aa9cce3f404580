"""From one engine pass over a case's photos to gated, fused findings (shared by serving and evaluation)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kiln.apps.authenticity.calibration import AuthCalibration
from kiln.apps.authenticity.fusion import FusionResult, ViewScore, fuse, hottest_region
from kiln.apps.authenticity.ood import check_distribution, view_similarities
from kiln.apps.authenticity.quality import Finding, QualityMetrics, check_quality
from kiln.apps.authenticity.quality import QualityLimits as _Limits
from kiln.apps.authenticity.views import Verdict

FOREIGN_CODES = frozenset({"wrong_view", "out_of_distribution"})


@dataclass
class PhotoAssessment:
    index: int
    view: str
    metrics: QualityMetrics
    findings: list[Finding]
    logit: float
    embedding: np.ndarray
    heatmap: np.ndarray
    view_similarity: float
    probability: float | None = None  # calibrated counterfeit evidence; None when the photo was rejected

    @property
    def ok(self) -> bool:
        return not self.findings

    def region(self) -> str:
        return hottest_region(self.heatmap, 1.0 if (self.probability or 0.0) >= 0.5 else -1.0)


@dataclass
class CaseAssessment:
    photos: list[PhotoAssessment]
    fusion: FusionResult
    notes: list[str] = field(default_factory=list)


def head_column(outputs: dict[str, np.ndarray], photos: int, head: int) -> int:
    """``head`` when the engine's outputs have that column, otherwise the generic one (0)."""
    columns = np.asarray(outputs["logit"]).reshape(photos, -1).shape[1]
    return head if 0 <= head < columns else 0


def head_outputs(outputs: dict[str, np.ndarray], photos: int, head: int) -> tuple[np.ndarray, np.ndarray]:
    """One classifier's logits (N) and heatmaps (N×h×w) from the engine's outputs (B×H, B×H×h×w,
    or a single head's B×1 and B×h×w)."""
    logits = np.asarray(outputs["logit"], np.float32).reshape(photos, -1)
    heatmaps = np.asarray(outputs["heatmap"], np.float32)
    column = head_column(outputs, photos, head)
    if heatmaps.ndim == 4:
        heatmaps = heatmaps[:, column if column < heatmaps.shape[1] else 0]
    return logits[:, column], heatmaps


def assess_case(
    views: list[str],
    metrics: list[QualityMetrics],
    outputs: dict[str, np.ndarray],
    cal: AuthCalibration,
    *,
    brand: str | None = None,
    model: str | None = None,
) -> CaseAssessment:
    """Quality gate, distribution check, then fusion of the photos that passed both.

    The claimed ``brand`` and ``model`` choose the classifier: the design head of that item when
    the model has one, the generic head otherwise."""
    # an engine without the claimed design's column: the generic one, calibrated as such
    head = head_column(outputs, len(views), cal.head_for(brand, model))
    logits, heatmaps = head_outputs(outputs, len(views), head)
    fallback = bool(cal.designs) and head == 0
    cal = cal.for_head(head)
    embeddings = np.asarray(outputs["embedding"], np.float32).reshape(len(views), -1)
    photos: list[PhotoAssessment] = []
    usable: list[ViewScore] = []
    for index, view in enumerate(views):
        profile = cal.views.get(view)
        limits = profile.quality if profile is not None else _Limits()
        findings = check_quality(metrics[index], limits)
        findings += check_distribution(view, embeddings[index], metrics[index].stats(), cal)
        sims = view_similarities(embeddings[index], cal)
        photo = PhotoAssessment(
            index=index, view=view, metrics=metrics[index], findings=findings, logit=float(logits[index]),
            embedding=embeddings[index], heatmap=heatmaps[index], view_similarity=sims.get(view, 0.0),
        )
        if photo.ok:
            score = ViewScore(index, view, photo.logit, photo.heatmap)
            photo.probability = score.probability(cal)
            usable.append(score)
        photos.append(photo)
    notes: list[str] = []
    if fallback:
        notes.append(f"{brand or '?'} / {model or '?'} is not one of the designs this model learnt: "
                     "judged by its generic classifier, without that item's house style")
    counts: dict[str, int] = {}
    for view in views:
        counts[view] = counts.get(view, 0) + 1
    repeated = sorted(v for v, n in counts.items() if n > 1)
    if repeated:
        notes.append("views photographed more than once: " + ", ".join(repeated))
    fusion = fuse(usable, cal, rejected=len(photos) - len(usable))
    foreign = [p for p in photos if any(f.code in FOREIGN_CODES for f in p.findings)]
    if foreign and len(foreign) >= cal.thresholds.max_foreign_share * len(photos) and fusion.verdict is not Verdict.INCONCLUSIVE:
        # Photos of something else in the case: the usable ones may not show the claimed item either.
        fusion = FusionResult(
            Verdict.INCONCLUSIVE, fusion.confidence, fusion.counterfeit_probability,
            [f"{len(foreign)} of {len(photos)} photos do not look like the claimed views of this item "
             f"({', '.join(sorted({p.view.replace('_', ' ') for p in foreign}))}): no verdict until they are retaken"],
            [p.index for p in foreign],
        )
    return CaseAssessment(photos, fusion, notes)
