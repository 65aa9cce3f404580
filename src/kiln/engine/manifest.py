"""The engine manifest: the single truth about an engine that the server and the apps read."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from kiln.engine.spec import BatchProfile, CalibrationMethod, ModelSource, Precision, Preprocessing
from kiln.errors import KilnError

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class TensorSpec(BaseModel):
    """One input or output: name, numpy dtype name, shape with -1 for dynamic dimensions."""

    name: str
    dtype: str
    shape: list[int]

    def describe(self) -> str:
        dims = "x".join("?" if d < 0 else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


class CalibrationInfo(BaseModel):
    method: CalibrationMethod
    images: int
    data_sha256: str
    per_channel: bool = True
    activation_type: str = "uint8"
    weight_type: str = "int8"
    # weights in 7 bits, for CPUs whose uint8×int8 kernels saturate (hardware.int8_dot_products_saturate);
    # engines built before this field existed used 8 bits
    reduce_range: bool = False


class ValidationReport(BaseModel):
    """Outcome of the accuracy gate: engine vs the FP32 reference on a labelled set."""

    dataset: str
    samples: int
    engine_top1: float
    reference_top1: float
    drop_points: float
    top1_agreement: float
    cosine_similarity: float
    max_drop: float
    passed: bool
    # outputs of several binary logits (``classifier_column`` set): the largest accuracy drop of any
    # column, each column's sign taken as its prediction; the gate holds it to max_drop as well
    max_column_drop_points: float | None = None


class EngineManifest(BaseModel):
    format_version: int = FORMAT_VERSION
    name: str
    backend: str
    precision: Precision
    device: str  # "cpu" | "cuda"
    source: ModelSource
    source_sha256: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    batch: BatchProfile
    preprocessing: Preprocessing
    files: dict[str, str] = Field(description="file name -> sha256, checked at load")
    compatibility: dict[str, Any] = Field(description="what must match on the loading machine")
    hardware: dict[str, Any]
    runtime: dict[str, Any]
    calibration: CalibrationInfo | None = None
    validation: ValidationReport | None = None
    build_options: dict[str, Any] = Field(default_factory=dict)
    extra: dict[str, Any] = Field(default_factory=dict, description="model-specific metadata (labels, heads)")
    cache_key: str
    built_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    build_seconds: float = 0.0

    def write(self, directory: Path) -> Path:
        path = directory / MANIFEST_NAME
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=2), encoding="utf-8")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, directory: Path) -> EngineManifest:
        path = Path(directory) / MANIFEST_NAME
        if not path.is_file():
            raise KilnError(
                f"{directory} is not an engine: no {MANIFEST_NAME}",
                hint="build one with `kiln build MODEL -o DIR`",
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KilnError(f"{path} is not valid JSON: {exc}", hint="rebuild the engine") from exc
        if data.get("format_version") != FORMAT_VERSION:
            raise KilnError(
                f"{path} has manifest format {data.get('format_version')}, this kiln reads {FORMAT_VERSION}",
                hint="rebuild the engine with this kiln version",
            )
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise KilnError(f"{path} is not a valid engine manifest: {exc.error_count()} problems: {exc}") from exc
