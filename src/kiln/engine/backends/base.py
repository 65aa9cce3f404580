"""The backend interface: ``build`` turns a model into engine files, ``create_runner`` runs them.

Runners follow Polygraphy's shape: the public ``activate``/``infer``/``deactivate`` own input
validation and timing, and each backend implements only the ``*_impl`` hooks.
"""

from __future__ import annotations

import importlib
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from kiln.engine.manifest import CalibrationInfo, EngineManifest, TensorSpec
from kiln.engine.spec import BatchProfile, CalibrationMethod, Precision, Preprocessing
from kiln.errors import KilnError
from kiln.progress import Reporter

if TYPE_CHECKING:
    from kiln.engine.source import LoadedSource


@dataclass
class BuildRequest:
    precision: Precision
    batch: BatchProfile
    preprocessing: Preprocessing
    device: str
    calibration_dir: Path | None = None
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    calibration_limit: int = 256
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildResult:
    files: list[str]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    calibration: CalibrationInfo | None = None
    options: dict[str, Any] = field(default_factory=dict)


class Runner(ABC):
    """Runs one engine. Thread-safety: one ``infer`` at a time per runner; make N runners for N instances."""

    def __init__(self, directory: Path, manifest: EngineManifest) -> None:
        self.directory = Path(directory)
        self.manifest = manifest
        self.is_active = False
        self.last_inference_ms: float | None = None
        self.last_gather_s = 0.0  # how long the last ``infer_parts`` took to join its parts
        self._lock = threading.Lock()

    # --- public API -------------------------------------------------------------------------
    @property
    def inputs(self) -> list[TensorSpec]:
        return self.manifest.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.manifest.outputs

    @property
    def max_batch_size(self) -> int:
        return self.manifest.batch.max

    def activate(self) -> Runner:
        if not self.is_active:
            self.activate_impl()
            self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self.deactivate_impl()
            self.is_active = False

    def __enter__(self) -> Runner:
        return self.activate()

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        if not self.is_active:
            raise KilnError(f"runner for {self.manifest.name} is not active", hint="call activate() first")
        if check:
            self.check_inputs(inputs)
        start = time.perf_counter()
        with self._lock:
            outputs = self.infer_impl(inputs)
        self.last_inference_ms = (time.perf_counter() - start) * 1e3
        return outputs

    def infer_parts(self, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """One batch made of several requests' inputs (the batcher's call), unchecked: the parts are
        joined along the batch dimension by ``gather_impl`` and run as one. The outputs' rows follow
        the parts' order. ``last_gather_s`` says how long the join took."""
        if not self.is_active:
            raise KilnError(f"runner for {self.manifest.name} is not active", hint="call activate() first")
        with self._lock:
            start = time.perf_counter()
            inputs = self.gather_impl(parts)
            gathered = time.perf_counter()
            outputs = self.infer_impl(inputs)
        self.last_gather_s = gathered - start
        self.last_inference_ms = (time.perf_counter() - gathered) * 1e3  # as for ``infer``: the engine, not the join
        return outputs

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        expected = {spec.name: spec for spec in self.inputs}
        missing = sorted(set(expected) - set(inputs))
        extra = sorted(set(inputs) - set(expected))
        if missing or extra:
            raise KilnError(
                f"inputs {sorted(inputs)} do not match the engine's inputs {sorted(expected)}"
                + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else "")
            )
        for name, array in inputs.items():
            spec = expected[name]
            if str(array.dtype) != spec.dtype:
                raise KilnError(f"Input tensor: {name} | Received unexpected dtype: {array.dtype}. Expected: {spec.dtype}")
            if array.ndim != len(spec.shape) or any(
                want >= 0 and have != want for have, want in zip(array.shape, spec.shape, strict=False)
            ):
                raise KilnError(
                    f"Input tensor: {name} | Received incompatible shape: {list(array.shape)}. "
                    f"Expected: {spec.shape} (-1 is any size)"
                )
            if array.shape[0] > self.max_batch_size:
                raise KilnError(
                    f"Input tensor: {name} | batch {array.shape[0]} exceeds the engine's max batch {self.max_batch_size}"
                )

    # --- hooks ------------------------------------------------------------------------------
    @abstractmethod
    def activate_impl(self) -> None: ...

    @abstractmethod
    def infer_impl(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def gather_impl(self, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """The parts joined along the batch dimension; a backend may instead write them straight
        into the memory its engine reads from (one copy fewer)."""
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def deactivate_impl(self) -> None:
        return None


class Backend(ABC):
    """Builds engine files from a loaded model and creates runners for them."""

    name: ClassVar[str]

    @abstractmethod
    def available(self) -> bool:
        """Whether the runtime this backend needs is importable here."""

    @abstractmethod
    def default_device(self) -> str: ...

    @abstractmethod
    def supported_precisions(self, device: str) -> list[Precision]: ...

    @abstractmethod
    def compatibility(self, device: str) -> dict[str, Any]:
        """Facts of this machine that an engine built here depends on (checked at load)."""

    @abstractmethod
    def build(self, source: LoadedSource, request: BuildRequest, workdir: Path, reporter: Reporter) -> BuildResult: ...

    @abstractmethod
    def create_runner(self, directory: Path, manifest: EngineManifest, **options: Any) -> Runner: ...

    def serving_options(self, device: str) -> dict[str, Any]:
        """Runner options ``kiln serve`` uses unless a model's config sets them (``engine_options``)."""
        return {}

    def check_precision(self, precision: Precision, device: str) -> None:
        supported = self.supported_precisions(device)
        if precision not in supported:
            raise KilnError(
                f"backend {self.name} on {device} does not support {precision.value}",
                hint="supported here: " + ", ".join(p.value for p in supported),
            )


# --- registry -------------------------------------------------------------------------------
_BACKEND_MODULES = {
    "onnxruntime": "kiln.engine.backends.onnxruntime",
    "torch": "kiln.engine.backends.torch",
}
_BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    _BACKENDS[cls.name] = cls
    return cls


def backend_names() -> list[str]:
    return sorted(_BACKEND_MODULES)


def get_backend(name: str) -> Backend:
    if name not in _BACKEND_MODULES:
        raise KilnError(f"unknown backend {name!r}", hint="choose one of: " + ", ".join(backend_names()))
    if name not in _BACKENDS:
        importlib.import_module(_BACKEND_MODULES[name])
    backend = _BACKENDS[name]()
    if not backend.available():
        raise KilnError(f"backend {name} needs its runtime installed", hint=f"pip install {name}")
    return backend


