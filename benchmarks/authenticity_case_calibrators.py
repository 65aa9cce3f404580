"""Is the case calibration what limits coverage? Alternative case calibrators on the same model.

Trains the default recipe (or takes --checkpoint), then for the validation cases and two held-out test
sets (unseen seeds 1001 mixed, 1002 hard) records each usable photo's temperature-scaled log-odds. Each
calibrator is a logistic regression on different case features (the soft maximum kiln uses; the maximum;
the two largest; soft maximum and mean; soft maximum and photo count; maximum and positive sum), fitted on
the validation cases with kiln's threshold rule (never looser than the confidence floor --min-confidence,
kiln's default 0.97; a second table varies that floor for kiln's own calibrator); it reports the
coverage and accuracy that gives on the test sets, and the oracle: the largest coverage at which the test
set's most confident cases are still ≥ 99 % right under kiln's own case probability. The "per-view" calibrators
first rescale each photo's log-odds with its view's own logistic fit (scale and bias per view, fitted on the
validation photos' flaw labels), so that a view whose scores carry little evidence weighs little in the pooling.

    python benchmarks/authenticity_case_calibrators.py --work /tmp/calib [--checkpoint auth.pt] [--cases 900]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from authenticity_sets import DEFAULT_SEED, test_sets  # noqa: E402

FLOORS = (0.99, 0.98, 0.97, 0.95)
FEATURES = ("soft max", "max", "top two", "soft max + mean", "soft max + count", "max + positive sum")


def features(log_odds: list[float], kind: str) -> list[float]:
    kind = kind.removeprefix("per-view ")
    values = np.array(log_odds, np.float64)
    top = np.sort(values)[::-1]
    soft = float(np.logaddexp.reduce(values))
    return {
        "soft max": [soft], "max": [top[0]], "top two": [top[0], top[1] if len(top) > 1 else top[0]],
        "soft max + mean": [soft, float(values.mean())], "soft max + count": [soft, float(len(values))],
        "max + positive sum": [top[0], float(np.clip(values, 0, None).sum())],
    }[kind]


def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """kiln's logistic fit (fit_logistic_features) as one vector: the weights, then the bias."""
    from kiln.apps.authenticity.calibration import fit_logistic_features

    weights, bias = fit_logistic_features(x, y)
    return np.array([*weights, bias])


def probability(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    """kiln's overflow-free sigmoid of the fitted score (weights ``w[:-1]``, bias ``w[-1]``)."""
    from kiln.apps.authenticity.calibration import sigmoid

    return np.asarray(sigmoid(np.asarray(x, np.float64) @ w[:-1] + w[-1]))


def case_rows(predictor: Any, dataset: Any, threads: int = 2) -> list[dict[str, Any]]:
    from kiln.apps.authenticity.assessment import assess_case
    from kiln.apps.authenticity.evaluate import _decode, predict_all
    from kiln.progress import NullReporter

    cal = predictor.calibration
    cases = dataset.evaluation_cases()
    photos = [p for members in cases.values() for p in members]
    pixels, metrics = _decode(photos, predictor, threads, NullReporter())
    outputs = predict_all(predictor, pixels)
    rows, start = [], 0
    for members in cases.values():
        idx = slice(start, start + len(members))
        start += len(members)
        result = assess_case([p.view for p in members], metrics[idx], {k: v[idx] for k, v in outputs.items()}, cal,
                             brand=members[0].brand, model=members[0].model)
        temperature = cal.for_head(cal.head_for(members[0].brand, members[0].model)).temperature
        ok = [(member, p) for member, p in zip(members, result.photos, strict=True) if p.ok]
        rows.append({"label": int(members[0].label), "log_odds": [p.logit / temperature for _, p in ok],
                     "views": [m.view for m, _ in ok], "targets": [int(m.target) for m, _ in ok],
                     "p": result.fusion.counterfeit_probability, "decided": result.fusion.verdict.value != "inconclusive"})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=None, help="a checkpoint trained on WORK/train (default: train one)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cases", type=int, default=900, help="training cases, when WORK/train is made here")
    parser.add_argument("--min-confidence", type=float, default=0.97, help="thresholds' confidence floor for the main table")
    parser.add_argument("--test-seed", type=int, default=DEFAULT_SEED, help="seed of the mixed test set (hard: the next)")
    args = parser.parse_args()

    from kiln.apps.authenticity.calibration import choose_thresholds
    from kiln.apps.authenticity.dataset import load_dataset
    from kiln.apps.authenticity.predict import CheckpointPredictor
    from kiln.apps.authenticity.synth import SynthSpec, generate_dataset
    from kiln.apps.authenticity.train import TrainConfig, train

    work = args.work
    sets = test_sets(args.test_seed)
    for name, cases, seed, levels, twins in (("train", args.cases, 1, ("easy", "medium", "hard"), True),
                                             *((t.folder, 400, t.seed, t.levels, False) for t in sets)):
        if not (work / name / "cases.csv").is_file():
            generate_dataset(work / name, cases, SynthSpec(seed=seed, size=176, levels=levels, twins=twins), workers=args.threads)
    config = TrainConfig(threads=args.threads)
    checkpoint = args.checkpoint or work / "auth.pt"
    if not checkpoint.is_file():
        train(work / "train", checkpoint, config)
    predictor = CheckpointPredictor(checkpoint, threads=args.threads)
    _, val_set = load_dataset(work / "train").split(config.val_fraction, config.seed)
    val = [r for r in case_rows(predictor, val_set, args.threads) if r["log_odds"]]
    tests = {t.key: case_rows(predictor, load_dataset(work / t.folder), args.threads) for t in sets}
    # Per-view logistic fits of the photos' flaw labels on their log-odds (validation photos only).
    view_fits = {}
    for view in sorted({v for r in val for v in r["views"]}):
        x = np.array([lo for r in val for lo, v in zip(r["log_odds"], r["views"], strict=True) if v == view])
        t = np.array([tg for r in val for tg, v in zip(r["targets"], r["views"], strict=True) if v == view], np.float64)
        view_fits[view] = fit(x.reshape(-1, 1), t) if 0 < t.sum() < len(t) else np.array([1.0, 0.0])
    for rows in (val, *tests.values()):
        for r in rows:
            r["view_log_odds"] = [float(view_fits[v][0] * lo + view_fits[v][1]) if v in view_fits else lo
                                  for lo, v in zip(r["log_odds"], r["views"], strict=True)]
    kinds = [*FEATURES, *(f"per-view {k}" for k in FEATURES)]

    def odds(r: dict[str, Any], kind: str) -> list[float]:
        return r["view_log_odds"] if kind.startswith("per-view ") else r["log_odds"]
    results: dict[str, Any] = {"checkpoint": str(checkpoint), "test_seeds": {t.key: t.seed for t in sets},
                               "kiln": {"pooling": predictor.calibration.pooling,
                                        "view_scales": bool(predictor.calibration.view_scales),
                                        **{name: {"coverage": round(float(np.mean([r["decided"] for r in rows])), 4)}
                                           for name, rows in tests.items()}},
                               "calibrators": {}, "oracle": {},
                               "view_fits": {v: [round(float(a), 4) for a in w] for v, w in view_fits.items()}}
    y_val = np.array([r["label"] for r in val], np.float64)

    def decide(kind: str, floor: float) -> dict[str, Any]:
        """Fit the calibrator ``kind`` and its thresholds (confidence floor ``floor``) on validation; score the tests."""
        w = fit(np.array([features(odds(r, kind), kind) for r in val]), y_val)
        counterfeit_t, authentic_t = choose_thresholds(probability(w, np.array([features(odds(r, kind), kind) for r in val])),
                                                       y_val.astype(int), 0.99, min_confidence=floor)
        entry = {}
        for name, rows in tests.items():
            usable = [r for r in rows if r["log_odds"]]
            p = probability(w, np.array([features(odds(r, kind), kind) for r in usable]))
            y = np.array([r["label"] for r in usable])
            decided = (p >= counterfeit_t) | (p <= authentic_t)
            correct = ((p >= counterfeit_t) & (y == 1)) | ((p <= authentic_t) & (y == 0))
            entry[name] = {"coverage": round(float(decided.sum()) / len(rows), 4),
                           "accuracy": round(float(correct[decided].mean()), 4) if decided.any() else None}
        return entry

    for kind in kinds:
        results["calibrators"][kind] = decide(kind, args.min_confidence)
    # the product's calibrator with other confidence floors (TrainConfig.min_confidence)
    results["floors"] = {str(floor): decide("per-view top two", floor) for floor in FLOORS}
    for name, rows in tests.items():
        p = np.array([r["p"] if r["p"] is not None else 0.5 for r in rows])
        y = np.array([r["label"] for r in rows])
        right = ((p >= 0.5) == (y == 1))[np.argsort(-np.abs(p - 0.5), kind="stable")]
        within = np.where(np.cumsum(right) / np.arange(1, len(p) + 1) >= 0.99)[0]
        results["oracle"][name] = {"coverage_at_99": round(float((within.max() + 1) / len(p)) if len(within) else 0.0, 4),
                                   "decided_by_kiln": round(float(np.mean([r["decided"] for r in rows])), 4)}
    def cells(entry: dict[str, Any]) -> str:
        return " | ".join(f"{e['coverage']:.1%}, {e['accuracy']:.2%}" if e["accuracy"] is not None else f"{e['coverage']:.1%}, –"
                          for e in entry.values())

    print(f"| case calibrator (fitted on validation, floor {args.min_confidence}) | mixed: coverage, accuracy | hard: coverage, accuracy |")
    print("|---|---|---|")
    for kind, entry in results["calibrators"].items():
        print(f"| {kind} | {cells(entry)} |")
    print("| per-view top two, confidence floor | mixed | hard |\n|---|---|---|")
    for floor, entry in results["floors"].items():
        print(f"| {floor} | {cells(entry)} |")
    print("oracle:", json.dumps(results["oracle"]))
    print("the checkpoint's own calibration:", json.dumps(results["kiln"]))
    (work / "case_calibrators.json").write_text(json.dumps(results, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
