"""Run the per-view model over photos: the FP32 checkpoint in PyTorch, or a built engine.

Both predictors take uint8 photos at the model's size and return the engine's outputs, so that
evaluation compares the two on exactly the same inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from kiln.apps.authenticity.calibration import AuthCalibration
from kiln.apps.authenticity.imaging import engine_input, to_batch
from kiln.apps.authenticity.model import OUTPUT_NAMES, source_string
from kiln.engine.spec import Preprocessing


class Predictor(Protocol):
    name: str
    preprocessing: Preprocessing
    calibration: AuthCalibration
    max_batch: int

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]: ...


class CheckpointPredictor:
    """The trained checkpoint in PyTorch eager FP32 (the reference the engines are measured against)."""

    def __init__(self, checkpoint: Path, threads: int | None = None) -> None:
        import torch

        from kiln.engine.source import load_source
        from kiln.engine.spec import ModelSource

        data: Any = torch.load(checkpoint, map_location="cpu", weights_only=True)
        extra = data.get("kiln_extra", {}) if isinstance(data, dict) else {}
        self.calibration = AuthCalibration.from_extra(extra, where=str(checkpoint))
        source = source_string(self.calibration.backbone, self.calibration.embed_dim, self.calibration.width,
                               self.calibration.heads)
        loaded = load_source(ModelSource.parse(source, checkpoint))
        assert loaded.module is not None
        self.module = loaded.module.eval()
        size = self.calibration.image_size
        self.preprocessing = loaded.preprocessing.with_size(size, size)
        self.name = f"{checkpoint} (PyTorch FP32)"
        self.max_batch = 64
        if threads:
            torch.set_num_threads(threads)

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            values = self.module(torch.from_numpy(to_batch(pixels, self.preprocessing)))
        return {name: v.float().numpy() for name, v in zip(OUTPUT_NAMES, values, strict=True)}


class EnginePredictor:
    """A built engine directory (any backend and precision)."""

    def __init__(self, engine: Path) -> None:
        from kiln.engine.loader import load_engine

        self.runner = load_engine(engine)
        manifest = self.runner.manifest
        self.calibration = AuthCalibration.from_extra(manifest.extra, where=str(engine))
        self.preprocessing = manifest.preprocessing
        self.input_name = manifest.inputs[0].name
        self.name = f"{engine} ({manifest.backend} {manifest.precision.value})"
        self.max_batch = manifest.batch.max

    def __call__(self, pixels: np.ndarray) -> dict[str, np.ndarray]:
        return self.runner.infer({self.input_name: engine_input(pixels, self.preprocessing)})

    def close(self) -> None:
        self.runner.deactivate()


def predict_all(predictor: Predictor, pixels: np.ndarray, batch: int = 32) -> dict[str, np.ndarray]:
    """Outputs for every photo, in batches the predictor accepts."""
    step = max(1, min(batch, predictor.max_batch))
    parts: dict[str, list[np.ndarray]] = {name: [] for name in OUTPUT_NAMES}
    for start in range(0, len(pixels), step):
        out = predictor(pixels[start : start + step])
        for name in OUTPUT_NAMES:
            parts[name].append(np.asarray(out[name]))
    return {name: np.concatenate(chunks) if chunks else np.zeros((0,)) for name, chunks in parts.items()}
