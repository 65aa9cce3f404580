"""The accuracy gate: an engine against its FP32 reference on a labelled ImageFolder set."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kiln.engine.backends.base import Runner
from kiln.engine.images import labelled_images, load_image, preprocess
from kiln.engine.manifest import EngineManifest, ValidationReport
from kiln.engine.reference import ReferenceFn
from kiln.errors import KilnError
from kiln.progress import NullReporter, Reporter


def scored_output(manifest: EngineManifest) -> str:
    """The output whose argmax (or sign, for a single logit) is the prediction."""
    return str(manifest.extra.get("classifier_output", manifest.outputs[0].name))


def scored_column(manifest: EngineManifest) -> int | None:
    """For an output of several binary logits (e.g. a generic head and per-design heads), the column
    the gate scores; None when the output's argmax (or single logit's sign) is the prediction."""
    column = manifest.extra.get("classifier_column")
    return int(column) if isinstance(column, int) and not isinstance(column, bool) and column >= 0 else None


def predictions(scores: np.ndarray, column: int | None = None) -> np.ndarray:
    scores = scores.reshape(scores.shape[0], -1)
    if column is not None:
        if column >= scores.shape[1]:
            raise KilnError(f"the manifest's classifier_column {column} is past the output's {scores.shape[1]} columns")
        scores = scores[:, column : column + 1]
    if scores.shape[1] == 1:
        return (scores[:, 0] > 0).astype(np.int64)
    return scores.argmax(axis=1)


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(denom > 0, (a * b).sum(axis=1) / np.maximum(denom, 1e-30), 1.0)


def validate(
    runner: Runner,
    reference: ReferenceFn,
    data_dir: Path,
    *,
    max_drop: float = 1.0,
    batch_size: int = 8,
    limit: int | None = None,
    reporter: Reporter | None = None,
) -> ValidationReport:
    reporter = reporter or NullReporter()
    manifest = runner.manifest
    paths, labels, _classes = labelled_images(data_dir)
    if limit is not None:
        paths, labels = paths[:limit], labels[:limit]
    if len(manifest.inputs) != 1 or len(manifest.inputs[0].shape) != 4:
        raise KilnError(
            f"the accuracy gate measures image classifiers; {manifest.name} has inputs "
            + ", ".join(spec.describe() for spec in manifest.inputs),
            hint="compare other models' outputs with kiln.engine.validate.cosine_rows on your own data",
        )
    output = scored_output(manifest)
    column = scored_column(manifest)
    input_name = manifest.inputs[0].name
    batch_size = max(1, min(batch_size, runner.max_batch_size))
    engine_pred: list[np.ndarray] = []
    ref_pred: list[np.ndarray] = []
    cosines: list[np.ndarray] = []
    got_scores: list[np.ndarray] = []  # every column of a multi-logit output, for the per-column check
    want_scores: list[np.ndarray] = []
    with reporter.task(f"validate on {len(paths)} images", total=len(paths)) as task:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            batch = np.stack([preprocess(load_image(p), manifest.preprocessing) for p in chunk])
            got = runner.infer({input_name: batch})[output]
            want = reference({input_name: batch})[output]
            if got.shape != want.shape:
                raise KilnError(f"engine output {output} has shape {got.shape}, reference {want.shape}")
            engine_pred.append(predictions(got, column))
            ref_pred.append(predictions(want, column))
            cosines.append(cosine_rows(got, want))
            if column is not None:
                got_scores.append(got.reshape(got.shape[0], -1))
                want_scores.append(want.reshape(want.shape[0], -1))
            task.advance(len(chunk))
    truth = np.asarray(labels)
    eng = np.concatenate(engine_pred)
    ref = np.concatenate(ref_pred)
    engine_top1 = float((eng == truth).mean() * 100)
    reference_top1 = float((ref == truth).mean() * 100)
    drop = reference_top1 - engine_top1
    column_drop = None
    if got_scores and got_scores[0].shape[1] > 1:
        g, w = np.concatenate(got_scores) > 0, np.concatenate(want_scores) > 0
        hits = truth[:, None].astype(bool)
        column_drop = float(((w == hits).mean(axis=0) - (g == hits).mean(axis=0)).max() * 100)
    return ValidationReport(
        dataset=str(Path(data_dir).resolve()),
        samples=len(truth),
        engine_top1=round(engine_top1, 3),
        reference_top1=round(reference_top1, 3),
        drop_points=round(drop, 3),
        top1_agreement=round(float((eng == ref).mean() * 100), 3),
        cosine_similarity=round(float(np.concatenate(cosines).mean()), 6),
        max_drop=max_drop,
        passed=drop <= max_drop and (column_drop is None or column_drop <= max_drop),
        max_column_drop_points=None if column_drop is None else round(column_drop, 3),
    )
