"""Wrong-view and out-of-distribution checks: is this photo what the claimed view looks like?

Two independent tests, both learned per view from the training photos:
- the embedding: cosine similarity to the claimed view's centroid must reach the view's
  ``min_similarity``, and no other view's centroid may be clearly closer (wrong view);
- cheap image statistics (brightness, contrast, sharpness, saturation, edges, colour cast) must lie
  within ``max_stats_z`` standard deviations of the view's training photos.
A photo failing either never contributes to a verdict.
"""

from __future__ import annotations

import numpy as np

from kiln.apps.authenticity.calibration import AuthCalibration
from kiln.apps.authenticity.quality import STAT_NAMES, Finding
from kiln.apps.authenticity.views import VIEW_DESCRIPTIONS


def view_similarities(embedding: np.ndarray, cal: AuthCalibration) -> dict[str, float]:
    """Cosine similarity of a unit-norm embedding to every view's centroid."""
    e = np.asarray(embedding, np.float32).ravel()
    return {view: float(np.dot(np.asarray(profile.centroid, np.float32), e)) for view, profile in cal.views.items()}


def check_distribution(view: str, embedding: np.ndarray, stats: list[float], cal: AuthCalibration) -> list[Finding]:
    profile = cal.views.get(view)
    if profile is None:
        return [Finding(
            "out_of_distribution",
            f"the model was not trained on {view} photos",
            "submit the views the model knows: " + ", ".join(cal.views),
        )]
    sims = view_similarities(embedding, cal)
    own = sims[view]
    best_view = max(sims, key=lambda v: sims[v])
    findings: list[Finding] = []
    if best_view != view and sims[best_view] - own > cal.thresholds.wrong_view_margin:
        findings.append(Finding(
            "wrong_view",
            f"this looks like a {best_view.replace('_', ' ')} photo, not {view.replace('_', ' ')} "
            f"(similarity {sims[best_view]:.2f} vs {own:.2f})",
            f"for the {view.replace('_', ' ')} view, photograph {VIEW_DESCRIPTIONS.get(view, 'the claimed detail')}",
        ))
    elif own < profile.min_similarity:
        findings.append(Finding(
            "out_of_distribution",
            f"this does not look like a {view.replace('_', ' ')} photo of the items the model knows "
            f"(similarity {own:.2f}, needs {profile.min_similarity:.2f})",
            f"photograph {VIEW_DESCRIPTIONS.get(view, 'the claimed detail')}",
        ))
    else:
        runner_up = max((v for v in sims if v != view), key=lambda v: sims[v], default=None)
        if runner_up is not None and own - sims[runner_up] < profile.min_margin:
            findings.append(Finding(
                "out_of_distribution",
                f"this does not clearly look like a {view.replace('_', ' ')} photo: it is almost as close to the "
                f"{runner_up.replace('_', ' ')} view (similarity {own:.2f} vs {sims[runner_up]:.2f})",
                f"photograph {VIEW_DESCRIPTIONS.get(view, 'the claimed detail')}",
            ))
    mean = np.asarray(profile.stats_mean, np.float64)
    std = np.maximum(np.asarray(profile.stats_std, np.float64), 1e-6)
    z = np.abs((np.asarray(stats, np.float64) - mean) / std)
    if not findings and z.size and float(z.max()) > cal.thresholds.max_stats_z:
        worst = STAT_NAMES[int(np.argmax(z))] if len(STAT_NAMES) == z.size else "statistics"
        findings.append(Finding(
            "out_of_distribution",
            f"the photo's {worst.replace('_', ' ')} is unlike any {view.replace('_', ' ')} photo the model was trained on "
            f"({float(z.max()):.1f} standard deviations away)",
            f"photograph {VIEW_DESCRIPTIONS.get(view, 'the claimed detail')} in even light, filling the frame",
        ))
    return findings
