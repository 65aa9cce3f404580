"""Build the app's engine from a trained checkpoint with kiln's own toolkit (INT8 by default).

Calibration images are the dataset's photos; the accuracy gate runs on the validation cases'
photos laid out as an ImageFolder (authentic / counterfeit by what each photo shows), so the
engine is refused, or falls back to a safer precision, when quantisation costs too much.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from kiln.apps.authenticity.calibration import AuthCalibration
from kiln.apps.authenticity.dataset import Dataset, load_dataset
from kiln.apps.authenticity.model import source_string
from kiln.engine.build import BuildOutcome, BuildSettings, build_engine
from kiln.engine.spec import BatchProfile, CalibrationMethod, ModelSource, Precision
from kiln.errors import KilnError
from kiln.progress import Reporter

DEFAULT_BATCH = BatchProfile(min=1, opt=6, max=32)


def read_calibration(checkpoint: Path) -> AuthCalibration:
    import torch

    try:
        data: Any = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError) as exc:
        raise KilnError(f"cannot read checkpoint {checkpoint}: {exc}") from exc
    extra = data.get("kiln_extra") if isinstance(data, dict) else None
    return AuthCalibration.from_extra(extra if isinstance(extra, dict) else {}, where=str(checkpoint))


def validation_folder(dataset: Dataset, val_fraction: float, seed: int, root: Path) -> Path:
    """The validation photos as DIR/{authentic,counterfeit}/ (symbolic links; copies where links fail)."""
    _, val = dataset.split(val_fraction, seed)
    names = sorted(f"{p.target}:{p.path}" for p in val.photos)
    folder = root / ("validation-" + hashlib.sha256("\n".join(names).encode()).hexdigest()[:16])
    done = folder / ".complete"
    if done.is_file():
        return folder
    for label in ("authentic", "counterfeit"):
        (folder / label).mkdir(parents=True, exist_ok=True)
    for index, photo in enumerate(sorted(val.photos, key=lambda p: str(p.path))):
        target = folder / ("counterfeit" if photo.target else "authentic") / f"{index:06d}{photo.path.suffix.lower()}"
        if target.exists() or target.is_symlink():
            target.unlink()
        try:
            os.symlink(photo.path.resolve(), target)
        except OSError:
            target.write_bytes(photo.path.read_bytes())
    done.write_text("ok\n", encoding="utf-8")
    return folder


def build_auth_engine(
    checkpoint: Path,
    data: Path,
    output: Path,
    *,
    precision: Precision = Precision.INT8,
    backend: str = "onnxruntime",
    batch: BatchProfile = DEFAULT_BATCH,
    max_drop: float = 1.0,
    calibration_limit: int = 256,
    validate: bool = True,
    cache_dir: Path | None = None,
    name: str = "authenticity",
    reporter: Reporter | None = None,
    device: str | None = None,
    options: dict[str, Any] | None = None,
) -> BuildOutcome:
    """``kiln:auth_multiview`` + checkpoint → engine directory ``output`` (cached by content).

    ``device`` and ``options`` go to the backend, e.g. ``backend="torch", device="cuda",
    precision=FP16, options={"input_format": "uint8", "compile": "none"}`` for a GPU engine that
    takes the decoded pixels as they are and normalises them itself."""
    from kiln.config import get_settings
    from kiln.engine.artifact import EngineCache

    cal = read_calibration(checkpoint)
    dataset = load_dataset(data)
    cache = EngineCache(cache_dir or get_settings().engine_cache_dir)
    seed = int(cal.trained_on.get("config", {}).get("seed", 0))
    val_fraction = float(cal.trained_on.get("config", {}).get("val_fraction", 0.2))
    validate_dir = validation_folder(dataset, val_fraction, seed, cache.root.parent / "auth-validation") if validate else None
    settings = BuildSettings(
        source=ModelSource.parse(source_string(cal.backbone, cal.embed_dim, cal.width, cal.heads), checkpoint),
        backend=backend,
        precision=precision,
        batch=batch,
        input_size=(cal.image_size, cal.image_size),
        calibration_dir=Path(data) if precision is Precision.INT8 else None,
        calibration_method=CalibrationMethod.MINMAX,
        calibration_limit=calibration_limit,
        name=name,
        device=device,
        options=dict(options or {}),
    )
    return build_engine(settings, cache=cache, output=output, validate_dir=validate_dir, max_drop=max_drop, reporter=reporter)
