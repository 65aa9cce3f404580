"""``kiln auth evaluate``: case-level accuracy, coverage, ROC-AUC, confusion matrix and plots.

Every case goes through exactly what the server does: decode to the model's size, quality gate,
distribution check, fusion with the calibrated thresholds. Cases the system abstains on are
inconclusive; accuracy is reported on the cases it decided (with the coverage) and, for
comparison, with abstention switched off.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kiln.apps.authenticity.assessment import assess_case
from kiln.apps.authenticity.dataset import Dataset, Photo, load_dataset
from kiln.apps.authenticity.imaging import decode_photo
from kiln.apps.authenticity.predict import Predictor, predict_all
from kiln.apps.authenticity.quality import QualityMetrics, measure
from kiln.apps.authenticity.views import LABELS
from kiln.progress import NullReporter, Reporter


@dataclass
class CaseOutcome:
    case_id: str
    label: str
    verdict: str
    confidence: float
    counterfeit_probability: float | None
    difficulty: str
    rejected_photos: int


@dataclass
class EvaluationReport:
    predictor: str
    dataset: str
    cases: int
    coverage: float
    accuracy_covered: float
    accuracy_no_abstention: float
    roc_auc: float | None
    confusion: dict[str, dict[str, int]]  # truth -> verdict -> count
    by_difficulty: dict[str, dict[str, float]]
    rejected_photo_rate: float
    thresholds: dict[str, float]
    outcomes: list[CaseOutcome] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("outcomes")
        return data


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float | None:
    """Probability that a random counterfeit scores above a random authentic case (ties count half)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return None
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order), np.float64)
    values = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(values):  # average ranks over ties
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


def _decode(photos: list[Photo], predictor: Predictor, threads: int, reporter: Reporter) -> tuple[np.ndarray, list[QualityMetrics]]:
    def one(photo: Photo) -> tuple[np.ndarray, QualityMetrics]:
        decoded = decode_photo(photo.path.read_bytes(), predictor.preprocessing, name=str(photo.path))
        return decoded.pixels, measure(decoded.pixels, decoded.width, decoded.height)

    pixels: list[np.ndarray] = []
    metrics: list[QualityMetrics] = []
    with reporter.task(f"decode {len(photos)} photos", total=len(photos)) as task, ThreadPoolExecutor(threads) as pool:
        for p, m in pool.map(one, photos):
            pixels.append(p)
            metrics.append(m)
            task.advance()
    return np.stack(pixels), metrics


def evaluate(predictor: Predictor, data: Path | Dataset, *, threads: int = 2, reporter: Reporter | None = None) -> EvaluationReport:
    reporter = reporter or NullReporter()
    dataset = data if isinstance(data, Dataset) else load_dataset(Path(data))
    cases = dataset.evaluation_cases()
    photos = [p for members in cases.values() for p in members]
    pixels, metrics = _decode(photos, predictor, threads, reporter)
    with reporter.task(f"run {predictor.name}", total=1) as task:
        outputs = predict_all(predictor, pixels)
        task.advance()
    cal = predictor.calibration
    outcomes: list[CaseOutcome] = []
    start = 0
    rejected = 0
    for case_id, members in cases.items():
        idx = slice(start, start + len(members))
        start += len(members)
        result = assess_case([p.view for p in members], metrics[idx], {k: v[idx] for k, v in outputs.items()}, cal,
                             brand=members[0].brand, model=members[0].model)
        rejected += sum(1 for p in result.photos if not p.ok)
        fusion = result.fusion
        outcomes.append(CaseOutcome(
            case_id=case_id, label=LABELS[members[0].label], verdict=fusion.verdict.value,
            confidence=round(fusion.confidence, 5),
            counterfeit_probability=None if fusion.counterfeit_probability is None else round(fusion.counterfeit_probability, 6),
            difficulty=next((p.difficulty for p in members if p.difficulty), ""), rejected_photos=sum(1 for p in result.photos if not p.ok),
        ))
    return _report(predictor, dataset, outcomes, rejected / max(len(photos), 1))


def _accuracy(outcomes: list[CaseOutcome]) -> tuple[float, float, float]:
    """(coverage, accuracy on decided cases, accuracy deciding every case at probability 0.5)."""
    decided = [o for o in outcomes if o.verdict != "inconclusive"]
    coverage = len(decided) / max(len(outcomes), 1)
    covered = sum(o.verdict == o.label for o in decided) / max(len(decided), 1)
    forced = sum(
        (("counterfeit" if (o.counterfeit_probability or 0.0) >= 0.5 else "authentic") == o.label)
        for o in outcomes if o.counterfeit_probability is not None
    ) / max(len(outcomes), 1)
    return coverage, covered, forced


def _report(predictor: Predictor, dataset: Dataset, outcomes: list[CaseOutcome], rejected_rate: float) -> EvaluationReport:
    coverage, covered, forced = _accuracy(outcomes)
    confusion = {truth: {v: 0 for v in ("authentic", "counterfeit", "inconclusive")} for truth in LABELS}
    for o in outcomes:
        confusion[o.label][o.verdict] += 1
    scored = [o for o in outcomes if o.counterfeit_probability is not None]
    auc = roc_auc(np.array([o.counterfeit_probability for o in scored], np.float64),
                  np.array([LABELS.index(o.label) for o in scored])) if scored else None
    by_difficulty: dict[str, dict[str, float]] = {}
    authentic = [o for o in outcomes if o.label == "authentic"]
    for level in sorted({o.difficulty for o in outcomes if o.difficulty}):
        # Each level: its counterfeits plus all authentic cases (which carry no difficulty).
        subset = [o for o in outcomes if o.difficulty == level] + authentic
        cov, acc, full = _accuracy(subset)
        detected = [o for o in outcomes if o.difficulty == level]
        by_difficulty[level] = {
            "cases": len(subset), "counterfeits": len(detected), "coverage": round(cov, 4), "accuracy_covered": round(acc, 4),
            "accuracy_no_abstention": round(full, 4),
            "counterfeit_recall": round(sum(o.verdict == "counterfeit" for o in detected) / max(len(detected), 1), 4),
        }
    t = predictor.calibration.thresholds
    return EvaluationReport(
        predictor=predictor.name, dataset=str(dataset.root), cases=len(outcomes), coverage=round(coverage, 4),
        accuracy_covered=round(covered, 4), accuracy_no_abstention=round(forced, 4),
        roc_auc=None if auc is None else round(auc, 5), confusion=confusion, by_difficulty=by_difficulty,
        rejected_photo_rate=round(rejected_rate, 4),
        thresholds={"counterfeit": t.counterfeit, "authentic": t.authentic, "target_precision": t.target_precision},
        outcomes=outcomes,
    )


def coverage_curve(outcomes: list[CaseOutcome]) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy when deciding only the most confident fraction of cases, for every fraction."""
    scored = [o for o in outcomes if o.counterfeit_probability is not None]
    if not scored:
        return np.zeros(0), np.zeros(0)
    p = np.array([o.counterfeit_probability for o in scored], np.float64)
    truth = np.array([LABELS.index(o.label) for o in scored])
    confidence = np.maximum(p, 1 - p)
    order = np.argsort(-confidence, kind="mergesort")
    correct = ((p[order] >= 0.5).astype(int) == truth[order]).astype(np.float64)
    counts = np.arange(1, len(order) + 1)
    coverage = counts / len(outcomes)
    accuracy = np.cumsum(correct) / counts
    return coverage, accuracy


def write_outputs(report: EvaluationReport, out: Path, title: str = "") -> list[Path]:
    """metrics.json, cases.csv, coverage.png (coverage vs accuracy) and confusion.png under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "cases.csv", out / "coverage.png", out / "confusion.png"]
    (out / "metrics.json").write_text(json.dumps(report.summary(), indent=2) + "\n", encoding="utf-8")
    lines = ["case_id,label,verdict,confidence,counterfeit_probability,difficulty,rejected_photos"]
    lines += [f"{o.case_id},{o.label},{o.verdict},{o.confidence},{'' if o.counterfeit_probability is None else o.counterfeit_probability},"
              f"{o.difficulty},{o.rejected_photos}" for o in report.outcomes]
    (out / "cases.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")

    coverage, accuracy = coverage_curve(report.outcomes)
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    if len(coverage):
        ax.plot(coverage * 100, accuracy * 100, color="#1f6feb", lw=2, label="most confident cases first")
    ax.scatter([report.coverage * 100], [report.accuracy_covered * 100], color="#b42318", zorder=3,
               label=f"calibrated thresholds: {report.coverage:.1%} covered, {report.accuracy_covered:.2%} accurate")
    ax.set_xlabel("coverage (% of cases decided)")
    ax.set_ylabel("accuracy on decided cases (%)")
    ax.set_xlim(0, 100)
    low = min(90.0, float(accuracy.min() * 100) - 1 if len(accuracy) else 90.0)
    ax.set_ylim(max(0.0, low), 100.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or f"coverage vs accuracy: {report.cases} cases", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "coverage.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.6, 3), dpi=120)
    verdicts = ["authentic", "counterfeit", "inconclusive"]
    grid = np.array([[report.confusion[t][v] for v in verdicts] for t in LABELS])
    ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(3), verdicts)
    ax.set_yticks(range(2), [f"truly {t}" for t in LABELS])
    for i in range(2):
        for j in range(3):
            ax.text(j, i, str(grid[i, j]), ha="center", va="center", color="white" if grid[i, j] > grid.max() / 2 else "black")
    ax.set_title("confusion matrix (cases)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "confusion.png")
    plt.close(fig)
    return written
