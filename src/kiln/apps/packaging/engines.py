"""Build the packaging app's engines into a model repository with kiln's own toolkit.

::

    REPO/brief_encoder/1/      INT8 (dynamic) all-MiniLM-L6-v2 engine     + config.json, quality.json
    REPO/style_scorer/1/       INT8 (static, .npz calibration) style MLP  + config.json, quality.json,
                               checkpoint.pt (trained here on synthetic style images)

Each engine is checked against its FP32 source before it is published: the encoder by cosine
similarity on the lexicon's phrases and the style prototypes, the scorer by top-1 agreement on a
held-out synthetic set; an INT8 engine that falls short is replaced by FP32 and the reason recorded.
A second run reuses what is there (the engine cache, and the trained checkpoint while
``stylescore.TRAINING_VERSION`` is unchanged), so it takes seconds.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import kiln.apps.packaging.models  # noqa: F401  (registers the kiln: models even without the entry point)
from kiln.engine.artifact import EngineCache
from kiln.engine.spec import BatchProfile, CalibrationMethod, ModelSource, Precision
from kiln.errors import KilnError
from kiln.progress import NullReporter, Reporter

ENCODER_MODEL = "brief_encoder"
SCORER_MODEL = "style_scorer"
MIN_ENCODER_COSINE = 0.98  # mean; and no phrase below 0.95
MIN_SCORER_AGREEMENT = 0.98
_SERVING_CONFIG = {"max_batch_size": 16, "max_queue_delay_us": 300, "timeout_s": 10}


@dataclass
class EngineQuality:
    model: str
    precision: str
    calibration: str
    checks: dict[str, float]
    passed: bool
    notes: list[str] = field(default_factory=list)
    build_seconds: float = 0.0


@dataclass
class BuildReport:
    repo: Path
    engines: list[EngineQuality]

    def as_dict(self) -> dict[str, Any]:
        return {"repo": str(self.repo), "engines": [asdict(e) for e in self.engines]}


def _write_config(model_dir: Path) -> None:
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(_SERVING_CONFIG, indent=2) + "\n")


def encoder_texts() -> list[str]:
    """Phrases the encoder is checked on: every lexicon phrase and style prototype."""
    from kiln.apps.packaging.lexicon import default_lexicon
    from kiln.apps.packaging.styles import taxonomy

    phrases = sorted({c.english for c in default_lexicon().entries.values()})
    prototypes = [p for s in taxonomy() for p in s.prototypes]
    return phrases + prototypes


def _encoder_quality(engine_dir: Path, texts: list[str]) -> dict[str, float]:
    import torch

    from kiln.apps.packaging.encoder import load_minilm, tokenizer
    from kiln.engine.loader import load_engine

    module = load_minilm()
    cosines: list[np.ndarray] = []
    with load_engine(engine_dir) as runner:
        for start in range(0, len(texts), 16):
            tokens = tokenizer()(texts[start : start + 16])
            got = runner.infer(tokens.arrays())["embedding"]
            with torch.inference_mode():
                want = module(torch.from_numpy(tokens.input_ids), torch.from_numpy(tokens.attention_mask)).numpy()
            cosines.append((got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1)))
    values = np.concatenate(cosines)
    return {"texts": float(len(values)), "cosine_mean": round(float(values.mean()), 5), "cosine_min": round(float(values.min()), 5)}


def build_encoder(repo: Path, cache: EngineCache, reporter: Reporter, *, calibration: str = "dynamic") -> EngineQuality:
    """INT8 MiniLM (dynamic, or static from .npz of tokenised phrases), gated by cosine vs FP32."""
    from kiln.apps.packaging.encoder import tokenizer
    from kiln.engine.build import BuildSettings, build_engine

    texts = encoder_texts()
    target = repo / ENCODER_MODEL / "1"
    started = time.perf_counter()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kiln-calib-") as tmp:
        calib_dir: Path | None = None
        method = CalibrationMethod.DYNAMIC
        if calibration == "static":
            calib_dir = Path(tmp)
            for index, start in enumerate(range(0, len(texts), 16)):
                np.savez(calib_dir / f"{index:04d}.npz", **tokenizer()(texts[start : start + 16]).arrays())  # type: ignore[arg-type]
            method = CalibrationMethod.MINMAX
        elif calibration != "dynamic":
            raise KilnError(f"encoder calibration {calibration!r} is not 'dynamic' or 'static'")
        settings = BuildSettings(
            source=ModelSource.parse("kiln:minilm_encoder"),
            precision=Precision.INT8,
            calibration_method=method,
            calibration_dir=calib_dir,
            batch=BatchProfile(min=1, opt=4, max=16),
            name=ENCODER_MODEL,
        )
        build_engine(settings, cache=cache, output=target, reporter=reporter)
    with reporter.task("check the encoder engine against FP32 (cosine)", total=1) as task:
        checks = _encoder_quality(target, texts)
        task.advance()
    precision = "int8"
    passed = checks["cosine_mean"] >= MIN_ENCODER_COSINE and checks["cosine_min"] >= 0.95
    if not passed:
        notes.append(f"int8 ({calibration}) gave cosine mean {checks['cosine_mean']}, min {checks['cosine_min']}: using fp32")
        build_engine(
            BuildSettings(source=ModelSource.parse("kiln:minilm_encoder"), precision=Precision.FP32,
                          batch=BatchProfile(min=1, opt=4, max=16), name=ENCODER_MODEL),
            cache=cache, output=target, reporter=reporter,
        )
        checks = _encoder_quality(target, texts)
        precision, calibration, passed = "fp32", "none", True
    _write_config(target.parent)
    quality = EngineQuality(ENCODER_MODEL, precision, calibration, checks, passed, notes, round(time.perf_counter() - started, 1))
    (target.parent / "quality.json").write_text(json.dumps(asdict(quality), indent=2) + "\n")
    return quality


def _scorer_is_current(model_dir: Path, device: str | None = None) -> bool:
    from kiln.apps.packaging.stylescore import TRAINING_VERSION
    from kiln.engine.manifest import EngineManifest

    manifest_path = model_dir / "1" / "manifest.json"
    if not manifest_path.is_file() or not (model_dir / "checkpoint.pt").is_file():
        return False
    try:
        manifest = EngineManifest.read(model_dir / "1")
    except KilnError:
        return False
    wanted = ("onnxruntime", "cpu") if device is None else ("torch", device)
    return bool(manifest.extra.get("training_version") == TRAINING_VERSION and (manifest.backend, manifest.device) == wanted)


def build_style_scorer(repo: Path, cache: EngineCache, reporter: Reporter, *, force: bool = False,
                       device: str | None = None) -> EngineQuality:
    """Train the style MLP on synthetic style images, build INT8 (static), gate by top-1 agreement.

    ``device`` ("cuda", or "cpu" for tests): a torch FP32 engine on that device instead (eager: the
    MLP is a handful of kernels), for servers whose reference images are decoded on the GPU."""
    import torch

    from kiln.apps.packaging.styles import taxonomy
    from kiln.apps.packaging.stylescore import (
        FEATURE_NAMES,
        TRAINING_VERSION,
        synthetic_dataset,
        train_style_scorer,
    )
    from kiln.engine.build import BuildSettings, build_engine

    model_dir = repo / SCORER_MODEL
    if not force and _scorer_is_current(model_dir, device) and (model_dir / "quality.json").is_file():
        data = json.loads((model_dir / "quality.json").read_text())
        return EngineQuality(**{**data, "notes": [*data.get("notes", []), "reused (training version unchanged)"]})
    started = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 64-unit MLP trains fastest on one thread; more only contend
    try:
        with reporter.task("render synthetic style images", total=2) as task:
            train = synthetic_dataset(per_style=60, seed=1)
            task.advance()
            holdout = synthetic_dataset(per_style=20, seed=2)
            task.advance()
        with reporter.task("train the style scorer", total=1) as task:
            model = train_style_scorer(train)
            task.advance()
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        reference = model(torch.from_numpy(holdout.features)).numpy()
    accuracy = float((reference.argmax(1) == holdout.labels).mean())
    model_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = model_dir / "checkpoint.pt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "kiln_extra": {
                "styles": [s.id for s in taxonomy()],
                "features": list(FEATURE_NAMES),
                "training_version": TRAINING_VERSION,
                "train_samples": len(train.labels),
                "holdout_samples": len(holdout.labels),
                "holdout_accuracy": round(accuracy, 4),
                "training_data": "synthetic panels rendered from the style taxonomy (stylescore.render_style_sample)",
            },
        },
        checkpoint,
    )
    target = model_dir / "1"
    notes: list[str] = []
    if device is not None:
        build_engine(
            BuildSettings(source=ModelSource.parse(f"kiln:{SCORER_MODEL}", checkpoint=checkpoint), backend="torch",
                          precision=Precision.FP32, device=device, options={"compile": "none"},
                          batch=BatchProfile(min=1, opt=4, max=16), name=SCORER_MODEL),
            cache=cache, output=target, reporter=reporter, force=True,
        )
        return _finish_scorer(model_dir, target, holdout, reference, accuracy, "fp32", f"none (torch on {device})", notes, started)
    with tempfile.TemporaryDirectory(prefix="kiln-calib-") as tmp:
        for index, start in enumerate(range(0, len(train.labels), 32)):
            np.savez(Path(tmp) / f"{index:04d}.npz", features=train.features[start : start + 32])
        build_engine(
            BuildSettings(
                source=ModelSource.parse(f"kiln:{SCORER_MODEL}", checkpoint=checkpoint),
                precision=Precision.INT8, calibration_method=CalibrationMethod.MINMAX, calibration_dir=Path(tmp),
                batch=BatchProfile(min=1, opt=4, max=16), name=SCORER_MODEL,
            ),
            cache=cache, output=target, reporter=reporter, force=True,
        )

    agree = _agreement(target, holdout, reference)
    if agree < MIN_SCORER_AGREEMENT:
        notes.append(f"int8 agreed with fp32 on {agree:.3f} of held-out images: using fp32")
        build_engine(
            BuildSettings(source=ModelSource.parse(f"kiln:{SCORER_MODEL}", checkpoint=checkpoint), precision=Precision.FP32,
                          batch=BatchProfile(min=1, opt=4, max=16), name=SCORER_MODEL),
            cache=cache, output=target, reporter=reporter, force=True,
        )
        return _finish_scorer(model_dir, target, holdout, reference, accuracy, "fp32", "none", notes, started)
    return _finish_scorer(model_dir, target, holdout, reference, accuracy, "int8", "minmax (.npz features)", notes, started)


def _agreement(target: Path, holdout: Any, reference: np.ndarray) -> float:
    """Top-1 agreement of the engine with the FP32 model on the held-out synthetic images."""
    from kiln.engine.loader import load_engine

    with load_engine(target) as runner:
        got = np.concatenate([
            runner.infer({"features": holdout.features[i : i + 16]})["probabilities"] for i in range(0, len(holdout.labels), 16)
        ])
    return float((got.argmax(1) == reference.argmax(1)).mean())


def _finish_scorer(model_dir: Path, target: Path, holdout: Any, reference: np.ndarray, accuracy: float, precision: str,
                   calibration: str, notes: list[str], started: float) -> EngineQuality:
    agree = _agreement(target, holdout, reference)
    _write_config(model_dir)
    checks = {"holdout_accuracy_fp32": round(accuracy, 4), "top1_agreement": round(agree, 4), "holdout_samples": float(len(holdout.labels))}
    quality = EngineQuality(SCORER_MODEL, precision, calibration, checks, True, notes, round(time.perf_counter() - started, 1))
    (model_dir / "quality.json").write_text(json.dumps(asdict(quality), indent=2) + "\n")
    return quality


def build_engines(
    repo: Path,
    *,
    cache: EngineCache | None = None,
    reporter: Reporter | None = None,
    force: bool = False,
    encoder_calibration: str = "dynamic",
    scorer_device: str | None = None,
) -> BuildReport:
    """Both packaging engines into ``repo`` (created if needed); returns what was built and checked.

    ``scorer_device="cuda"`` builds the style scorer as a torch engine on the GPU, where the server then
    also decodes reference images; the brief encoder stays an INT8 engine on the CPU."""
    from kiln.config import get_settings

    repo = Path(repo)
    if repo.exists() and not repo.is_dir():
        raise KilnError(f"{repo} exists and is not a directory")
    repo.mkdir(parents=True, exist_ok=True)
    cache = cache or EngineCache(get_settings().engine_cache_dir)
    report_to = reporter or NullReporter()
    if force:
        for name in (ENCODER_MODEL, SCORER_MODEL):
            shutil.rmtree(repo / name, ignore_errors=True)
    encoder = build_encoder(repo, cache, report_to, calibration=encoder_calibration)
    scorer = build_style_scorer(repo, cache, report_to, force=force, device=scorer_device)
    return BuildReport(repo, [encoder, scorer])
