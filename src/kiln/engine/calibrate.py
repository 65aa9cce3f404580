"""INT8 calibration data: a folder of unlabelled images, preprocessed as the engine will be fed."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import numpy as np

from kiln.engine.images import IMAGE_SUFFIXES, iter_image_files, load_image, preprocess
from kiln.engine.spec import Preprocessing
from kiln.errors import KilnError
from kiln.progress import Task


def calibration_files(directory: Path, limit: int, seed: int = 0, *, images: bool = True) -> list[Path]:
    """Images for image models; ``.npz`` files (arrays named like the inputs) for other models."""
    files = list(iter_image_files(directory)) if images else sorted(Path(directory).rglob("*.npz"))
    if not files:
        what = "images" if images else ".npz files (one array per model input, batch first)"
        raise KilnError(f"calibration folder {directory} holds no {what}", hint=f"point --calib at a folder of {what}")
    if len(files) > limit:
        files = sorted(random.Random(seed).sample(files, limit))
    return files


def files_digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def calibration_digest(directory: Path) -> str:
    """Identity of a calibration folder's content (images and .npz arrays), for cache keys."""
    root = Path(directory)
    if not root.is_dir():
        raise KilnError(f"calibration folder {directory} is not a directory")
    files = [p for p in sorted(root.rglob("*")) if p.is_file() and (p.suffix.lower() in IMAGE_SUFFIXES or p.suffix == ".npz")]
    if not files:
        raise KilnError(f"calibration folder {directory} holds no images or .npz files")
    return files_digest(files)


class ImageCalibrationReader:
    """onnxruntime's CalibrationDataReader protocol over image files, with progress."""

    def __init__(
        self, files: list[Path], pre: Preprocessing, input_name: str, batch_size: int = 8, task: Task | None = None
    ) -> None:
        self.files = files
        self.pre = pre
        self.input_name = input_name
        self.batch_size = batch_size
        self.task = task
        self._position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self.files):
            return None
        chunk = self.files[self._position : self._position + self.batch_size]
        self._position += len(chunk)
        batch = np.stack([preprocess(load_image(path), self.pre) for path in chunk])
        if self.task is not None:
            self.task.advance(len(chunk))
        return {self.input_name: batch}

    def rewind(self) -> None:
        self._position = 0


class ArrayCalibrationReader:
    """Calibration batches for non-image models: ``.npz`` files holding one array per input."""

    def __init__(self, files: list[Path], input_names: list[str], task: Task | None = None) -> None:
        self.files = files
        self.input_names = input_names
        self.task = task
        self._position = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._position >= len(self.files):
            return None
        path = self.files[self._position]
        self._position += 1
        with np.load(path) as data:
            missing = [name for name in self.input_names if name not in data]
            if missing:
                raise KilnError(f"calibration file {path} lacks arrays {missing}", hint=f"save arrays named {self.input_names}")
            batch = {name: data[name] for name in self.input_names}
        if self.task is not None:
            self.task.advance()
        return batch

    def rewind(self) -> None:
        self._position = 0
