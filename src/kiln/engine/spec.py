"""What a build is asked for: model source, precision, batch and input-size profiles, preprocessing."""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, model_validator

from kiln.errors import KilnError


class Precision(StrEnum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    @property
    def safer(self) -> Precision | None:
        """The next safer precision the accuracy gate falls back to."""
        order = [Precision.INT8, Precision.FP16, Precision.FP32]
        if self is Precision.BF16:
            return Precision.FP32
        index = order.index(self)
        return order[index + 1] if index + 1 < len(order) else None


class CalibrationMethod(StrEnum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"
    # weights int8 ahead of time, activations quantised at run time: no calibration data; for
    # transformer/text models on CPU (onnxruntime QOperator form, not QDQ)
    DYNAMIC = "dynamic"


def _coerce(value: str) -> Any:
    lowered = value.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if re.fullmatch(r"-?\d+", value):
        return int(value)
    if re.fullmatch(r"-?\d+\.\d*(e-?\d+)?", lowered):
        return float(value)
    return value


class ModelSource(BaseModel):
    """Where a model comes from: ``timm:NAME?opt=val``, ``kiln:NAME?opt=val`` (kiln's own registry)
    or a path to an ``.onnx`` file. An optional checkpoint supplies trained weights."""

    model_config = ConfigDict(frozen=True)

    kind: str  # "timm" | "kiln" | "onnx"
    name: str
    options: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = None

    @classmethod
    def parse(cls, text: str, checkpoint: str | Path | None = None) -> ModelSource:
        ckpt = str(checkpoint) if checkpoint is not None else None
        if ckpt is not None and not Path(ckpt).is_file():
            raise KilnError(f"checkpoint not found: {ckpt}", hint="pass the path of a .pt/.pth/.safetensors file")
        for kind in ("timm", "kiln"):
            if text.startswith(kind + ":"):
                rest = text[len(kind) + 1 :]
                name, _, query = rest.partition("?")
                if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name or ""):
                    raise KilnError(
                        f"model name {name!r} in {text!r} is not a valid {kind} name",
                        hint=f"use {kind}:NAME, for example {kind}:resnet18?num_classes=2",
                    )
                options = {key: _coerce(val) for key, val in parse_qsl(query, keep_blank_values=False)}
                return cls(kind=kind, name=name, options=options, checkpoint=ckpt)
        path = Path(text)
        if path.suffix.lower() == ".onnx":
            if not path.is_file():
                raise KilnError(f"ONNX file not found: {text}")
            if ckpt is not None:
                raise KilnError("--checkpoint applies to timm/kiln models, not to an ONNX file")
            return cls(kind="onnx", name=str(path.resolve()))
        raise KilnError(
            f"unknown model {text!r}",
            hint="give timm:NAME (e.g. timm:resnet18?num_classes=2), kiln:NAME, or a path to an .onnx file",
        )

    def describe(self) -> str:
        if self.kind == "onnx":
            return self.name
        query = "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.kind}:{self.name}" + (f"?{query}" if query else "")


class BatchProfile(BaseModel):
    """Batch sizes an engine must serve: min, opt (tuned for) and max."""

    model_config = ConfigDict(frozen=True)

    min: int = 1
    opt: int = 8
    max: int = 32
    # explicit sizes to compile/warm (each gets its own kernels and CUDA graph); default: powers of two
    buckets: tuple[int, ...] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> BatchProfile:
        if not (1 <= self.min <= self.opt <= self.max):
            raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self.min}:{self.opt}:{self.max}")
        if self.buckets is not None and (not self.buckets or min(self.buckets) < self.min or max(self.buckets) != self.max):
            raise ValueError(f"batch buckets {list(self.buckets)} must lie in [{self.min}, {self.max}] and include max")
        return self

    @classmethod
    def parse(cls, text: str, buckets: str | None = None) -> BatchProfile:
        parts = text.split(":")
        try:
            numbers = [int(p) for p in parts]
        except ValueError:
            numbers = []
        if len(numbers) == 1:
            numbers = [1, numbers[0], numbers[0]]
        if len(numbers) != 3:
            raise KilnError(f"--batch {text!r} is not MIN:OPT:MAX", hint="for example --batch 1:8:32")
        chosen: tuple[int, ...] | None = None
        if buckets:
            try:
                chosen = tuple(int(b) for b in buckets.split(",") if b.strip())
            except ValueError as exc:
                raise KilnError(f"--buckets {buckets!r} is not a comma-separated list of batch sizes") from exc
        try:
            return cls(min=numbers[0], opt=numbers[1], max=numbers[2], buckets=chosen)
        except ValueError as exc:
            raise KilnError(f"--batch {text!r} --buckets {buckets!r}: {exc.errors()[0]['msg'] if hasattr(exc, 'errors') else exc}") from exc

    def sizes(self) -> list[int]:
        """Distinct batch sizes worth warming up: the buckets, or min, powers of two in between, opt, max."""
        if self.buckets is not None:
            return sorted(set(self.buckets))
        sizes = {self.min, self.opt, self.max}
        size = 1
        while size < self.max:
            if size >= self.min:
                sizes.add(size)
            size *= 2
        return sorted(sizes)


def parse_input_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)(?:x(\d+))?", text.strip())
    if not match:
        raise KilnError(f"--input-size {text!r} is not H or HxW", hint="for example --input-size 224 or 256x192")
    height = int(match.group(1))
    width = int(match.group(2) or height)
    if not (8 <= height <= 4096 and 8 <= width <= 4096):
        raise KilnError(f"--input-size {text!r} out of range 8..4096")
    return height, width


class Preprocessing(BaseModel):
    """How raw images become the engine's input tensor; travels with the engine in its manifest."""

    input_size: tuple[int, int, int] = (3, 224, 224)  # C, H, W
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"  # bilinear | bicubic | nearest
    crop_pct: float = 0.875
    crop_mode: str = "center"  # center | squash | border
    color: str = "RGB"
    # "float32": normalised NCHW floats; "uint8": raw NHWC pixels, normalised inside the engine
    # (4x fewer bytes to copy to a GPU, no normalisation on the CPU)
    input_format: str = "float32"

    @property
    def layout(self) -> str:
        return "NHWC" if self.input_format == "uint8" else "NCHW"

    @classmethod
    def from_timm_config(cls, config: dict[str, Any]) -> Preprocessing:
        return cls(
            input_size=tuple(config.get("input_size", (3, 224, 224))),  # type: ignore[arg-type]
            mean=tuple(config.get("mean", cls.model_fields["mean"].default)),  # type: ignore[arg-type]
            std=tuple(config.get("std", cls.model_fields["std"].default)),  # type: ignore[arg-type]
            interpolation=str(config.get("interpolation", "bilinear")),
            crop_pct=float(config.get("crop_pct", 0.875)),
            crop_mode=str(config.get("crop_mode", "center")),
        )

    def with_size(self, height: int, width: int) -> Preprocessing:
        return self.model_copy(update={"input_size": (self.input_size[0], height, width)})
