"""``kiln auth evaluate``: case-level accuracy, coverage, ROC-AUC, confusion matrix and plots.

Every case goes through exactly what the server does: decode to the model's size, quality gate,
distribution check, fusion with the calibrated thresholds. Cases the system abstains on are
inconclusive; accuracy is reported on the cases it decided (with the coverage) and, for
comparison, with abstention switched off. Per photo, the report says which views and which defect
kinds (where ``cases.csv`` names them) the classifier catches and which it misses.
"""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, astuple, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from kiln.apps.authenticity.assessment import assess_case
from kiln.apps.authenticity.dataset import Dataset, Photo, load_dataset
from kiln.apps.authenticity.imaging import decode_photo
from kiln.apps.authenticity.predict import Predictor, predict_all
from kiln.apps.authenticity.quality import QualityMetrics, measure
from kiln.apps.authenticity.views import LABELS
from kiln.errors import KilnError
from kiln.progress import NullReporter, Reporter

# What decodes the photos: "pillow" is the server's CPU path (DCT-domain scaling; what KILN_DECODE_DEVICE=auto and
# cpu serve), "nvjpeg" its GPU path on CUDA (KILN_DECODE_DEVICE=cuda), "torchvision" the GPU path's steps run on the
# CPU (libjpeg-turbo's full decode, the box filter and the resize), for a check of that path without a GPU.
DECODERS = ("pillow", "nvjpeg", "torchvision")
_DEVICE_BATCH = 32  # photos per call of the device path


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
class PhotoOutcome:
    case_id: str
    view: str
    target: int  # 1: the photo shows counterfeit evidence
    defect: str
    difficulty: str
    probability: float | None  # calibrated counterfeit evidence; None when the quality gate rejected the photo
    rejected_because: str  # the gate's finding codes, ';'-separated


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
    photo_outcomes: list[PhotoOutcome] = field(default_factory=list)
    by_view: dict[str, dict[str, Any]] = field(default_factory=dict)  # photo-level detection per view
    by_defect: dict[str, dict[str, Any]] = field(default_factory=dict)  # photo-level recall per defect kind
    # accuracy when the 90 % most confident cases are decided, whatever the thresholds (None: fewer
    # than 90 % of the cases had a usable photo)
    accuracy_at_90_coverage: float | None = None
    decoder: str = "pillow"  # DECODERS
    # photos that ``decoder`` left to Pillow (PNG, WebP, CMYK; a batch nvJPEG refused), as the server's GPU path would
    cpu_decoded_photos: int = 0

    def summary(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("outcomes")
        data.pop("photo_outcomes")
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


def _decode(photos: list[Photo], predictor: Predictor, threads: int, reporter: Reporter,
            device: str | None = None) -> tuple[np.ndarray, list[QualityMetrics], int]:
    """Model-size pixels and gate metrics of every photo (with Pillow, or on ``device`` through the server's GPU
    path), and how many of them Pillow decoded although the device path was asked for."""
    if device is not None:
        return _decode_on_device(photos, predictor, device, reporter)

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
    return np.stack(pixels), metrics, 0


def decoder_device(decoder: str) -> str | None:
    """The torch device a decoder (``DECODERS``) runs the server's GPU path on (``nvjpeg``: CUDA; ``torchvision``: the
    CPU), None for ``pillow``; an unknown decoder, or one this machine cannot run, is a ``KilnError``."""
    from kiln.apps.authenticity.gpu_imaging import gpu_decoding_available

    if decoder not in DECODERS:
        raise KilnError(f"unknown decoder {decoder!r}", hint=f"choose one of {', '.join(DECODERS)}")
    if decoder == "pillow":
        return None
    device = "cuda" if decoder == "nvjpeg" else "cpu"
    if not gpu_decoding_available(device):
        raise KilnError(f"the {decoder} decoder needs torch and torchvision{' with a CUDA GPU' if device == 'cuda' else ''}, "
                        "which this machine does not have", hint="use --decoder pillow, or torchvision for the GPU path's "
                        "steps on the CPU (libjpeg-turbo instead of nvJPEG)")
    return device


def _decode_on_device(photos: list[Photo], predictor: Predictor, device: str,
                      reporter: Reporter) -> tuple[np.ndarray, list[QualityMetrics], int]:
    """The server's GPU decode path (``gpu_imaging.decode_and_measure``) over the photos, a batch at a time (on one
    thread: the path batches itself): the pixels and the gate's metrics it gives. Photos it leaves to Pillow are
    measured on the CPU, as in the server, and counted."""
    from kiln.apps.authenticity.gpu_imaging import decode_and_measure

    pixels: list[np.ndarray] = []
    metrics: list[QualityMetrics] = []
    on_cpu = 0
    with reporter.task(f"decode {len(photos)} photos ({device})", total=len(photos)) as task:
        for start in range(0, len(photos), _DEVICE_BATCH):
            chunk = photos[start : start + _DEVICE_BATCH]
            decoded, measured = decode_and_measure([p.path.read_bytes() for p in chunk], [str(p.path) for p in chunk],
                                                   predictor.preprocessing, device)
            for photo, m in zip(decoded, measured, strict=True):
                pixels.append(photo.pixels)
                if m is None:
                    on_cpu += 1
                    m = measure(photo.pixels, photo.width, photo.height)
                metrics.append(m)
            task.advance(len(chunk))
    return np.stack(pixels), metrics, on_cpu


def evaluate(predictor: Predictor, data: Path | Dataset, *, threads: int = 2, reporter: Reporter | None = None,
             decoder: str = "pillow") -> EvaluationReport:
    """``decoder`` (``DECODERS``) names the decode path the photos take; the rest is the server's."""
    device = decoder_device(decoder)
    reporter = reporter or NullReporter()
    dataset = data if isinstance(data, Dataset) else load_dataset(Path(data))
    cases = dataset.evaluation_cases()
    photos = [p for members in cases.values() for p in members]
    pixels, metrics, cpu_decoded = _decode(photos, predictor, threads, reporter, device)
    with reporter.task(f"run {predictor.name}", total=1) as task:
        outputs = predict_all(predictor, pixels)
        task.advance()
    cal = predictor.calibration
    outcomes: list[CaseOutcome] = []
    photo_outcomes: list[PhotoOutcome] = []
    start = 0
    rejected = 0
    for case_id, members in cases.items():
        idx = slice(start, start + len(members))
        start += len(members)
        result = assess_case([p.view for p in members], metrics[idx], {k: v[idx] for k, v in outputs.items()}, cal,
                             brand=members[0].brand, model=members[0].model)
        rejected += sum(1 for p in result.photos if not p.ok)
        photo_outcomes += [
            PhotoOutcome(case_id, truth.view, truth.target, truth.defect, truth.difficulty,
                         None if seen.probability is None else round(seen.probability, 6),
                         ";".join(f.code for f in seen.findings))
            for truth, seen in zip(members, result.photos, strict=True)
        ]
        fusion = result.fusion
        outcomes.append(CaseOutcome(
            case_id=case_id, label=LABELS[members[0].label], verdict=fusion.verdict.value,
            confidence=round(fusion.confidence, 5),
            counterfeit_probability=None if fusion.counterfeit_probability is None else round(fusion.counterfeit_probability, 6),
            difficulty=next((p.difficulty for p in members if p.difficulty), ""), rejected_photos=sum(1 for p in result.photos if not p.ok),
        ))
    report = _report(predictor, dataset, outcomes, rejected / max(len(photos), 1))
    report.decoder, report.cpu_decoded_photos = decoder, cpu_decoded
    report.photo_outcomes = photo_outcomes
    report.by_view, report.by_defect = photo_breakdown(photo_outcomes)
    return report


def _share(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def photo_breakdown(photos: list[PhotoOutcome]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per view: how many flawed photos the classifier flags (calibrated evidence ≥ 0.5), how many
    clean ones it flags wrongly, and the photo-level ROC-AUC; per defect kind: its recall, overall
    and per difficulty level. Photos the quality gate rejected count only as rejected."""
    by_view: dict[str, dict[str, Any]] = {}
    for view in sorted({p.view for p in photos}):
        members = [p for p in photos if p.view == view]
        usable = [p for p in members if p.probability is not None]
        flawed = [p for p in usable if p.target]
        clean = [p for p in usable if not p.target]
        auc = roc_auc(np.array([p.probability for p in usable], np.float64), np.array([p.target for p in usable]))
        by_view[view] = {
            "photos": len(members), "rejected": len(members) - len(usable), "flawed": len(flawed),
            "flawed_recall": _share(sum((p.probability or 0.0) >= 0.5 for p in flawed), len(flawed)),
            "clean_false_alarms": _share(sum((p.probability or 0.0) >= 0.5 for p in clean), len(clean)),
            "roc_auc": None if auc is None else round(auc, 5),
        }
    by_defect: dict[str, dict[str, Any]] = {}
    for defect in sorted({p.defect for p in photos if p.defect}):
        members = [p for p in photos if p.defect == defect]
        usable = [p for p in members if p.probability is not None]
        levels = {}
        for level in sorted({p.difficulty for p in usable if p.difficulty}):
            at_level = [p for p in usable if p.difficulty == level]
            levels[level] = _share(sum((p.probability or 0.0) >= 0.5 for p in at_level), len(at_level))
        by_defect[defect] = {
            "photos": len(members), "rejected": len(members) - len(usable),
            "recall": _share(sum((p.probability or 0.0) >= 0.5 for p in usable), len(usable)),
            "median_probability": round(float(np.median([p.probability for p in usable])), 4) if usable else None,
            "recall_by_difficulty": levels,
        }
    return by_view, by_defect


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
        thresholds={"counterfeit": t.counterfeit, "authentic": t.authentic, "target_precision": t.target_precision,
                    "min_confidence": t.floor},
        outcomes=outcomes, accuracy_at_90_coverage=accuracy_at_coverage(outcomes, 0.9),
    )


def accuracy_at_coverage(outcomes: list[CaseOutcome], share: float) -> float | None:
    """Accuracy on the most confident ``share`` of the cases (rounded up to a whole case)."""
    coverage, accuracy = coverage_curve(outcomes)
    reached = np.nonzero(coverage >= share - 1e-12)[0]
    return round(float(accuracy[reached[0]]), 4) if len(reached) else None


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
    """metrics.json, cases.csv, photos.csv, coverage.png (coverage vs accuracy) and confusion.png under ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = [out / "metrics.json", out / "cases.csv", out / "photos.csv", out / "coverage.png", out / "confusion.png"]
    (out / "metrics.json").write_text(json.dumps(report.summary(), indent=2) + "\n", encoding="utf-8")
    lines = ["case_id,label,verdict,confidence,counterfeit_probability,difficulty,rejected_photos"]
    lines += [f"{o.case_id},{o.label},{o.verdict},{o.confidence},{'' if o.counterfeit_probability is None else o.counterfeit_probability},"
              f"{o.difficulty},{o.rejected_photos}" for o in report.outcomes]
    (out / "cases.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with (out / "photos.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([f.name for f in fields(PhotoOutcome)])
        writer.writerows(astuple(p) for p in report.photo_outcomes)

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
