"""One served model version: its engine instances behind a batcher, its state, request checks."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import KilnError, UnavailableError
from kiln.serve.batcher import BatchPolicy, DynamicBatcher, InstanceRunner
from kiln.serve.model_config import ModelConfig
from kiln.serve.tensors import oip_datatype

if TYPE_CHECKING:
    from kiln.engine.manifest import EngineManifest, TensorSpec
    from kiln.serve.metrics import ModelMetrics

log = logging.getLogger(__name__)


class ModelState(StrEnum):
    """Triton's model states, as the repository index reports them."""

    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"
    UNLOADING = "UNLOADING"


def _numpy_dtype(spec: TensorSpec) -> np.dtype[Any]:
    return np.dtype(np.object_) if oip_datatype(spec.dtype) == "BYTES" else np.dtype(spec.dtype)


def _as_text(name: str, array: np.ndarray) -> np.ndarray:
    """BYTES elements as UTF-8 text: onnxruntime's string tensors take ``str``, and would turn
    ``bytes`` into their repr."""
    flat = array.reshape(-1)
    out = np.empty(flat.shape[0], dtype=np.object_)
    for i, item in enumerate(flat):
        if isinstance(item, bytes):
            try:
                out[i] = item.decode("utf-8")
            except UnicodeDecodeError:
                raise KilnError(f"input {name!r}: BYTES element {i} is not UTF-8 text, which this engine's string input needs") from None
        else:
            out[i] = item
    return out.reshape(array.shape)


@dataclass
class ServedModel:
    """A model version as the server sees it; ``batcher`` exists once the version is READY."""

    name: str
    version: str
    directory: Path
    config: ModelConfig
    state: ModelState = ModelState.LOADING
    reason: str = ""
    manifest: EngineManifest | None = None
    batcher: DynamicBatcher | None = None
    max_batch_size: int = 1
    metrics: ModelMetrics | None = None
    engine_host: str | None = None  # address of the engine host (``--shared-engines``): run there, not here
    remote: bool = False  # whether this version's instances are calls to the engine host
    _dtypes: dict[str, np.dtype[Any]] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.state is ModelState.READY and self.batcher is not None and self.batcher.healthy

    @property
    def platform(self) -> str:
        return f"kiln_{self.manifest.backend}" if self.manifest else "kiln"

    def fail(self, reason: str) -> None:
        self.state = ModelState.UNAVAILABLE
        self.reason = reason
        if self.metrics is not None:
            self.metrics.ready.set(0)

    # --- loading ---------------------------------------------------------------------------------
    @property
    def engine_dir(self) -> Path:
        """The engine artifact of this version: the version folder itself, or its one engine subfolder."""
        if (self.directory / "manifest.json").is_file():
            return self.directory
        engines = sorted(p for p in self.directory.iterdir() if (p / "manifest.json").is_file()) if self.directory.is_dir() else []
        if len(engines) != 1:
            found = "none" if not engines else ", ".join(p.name for p in engines)
            raise KilnError(
                f"version folder {self.directory} must hold one engine (manifest.json + files); found {found}",
                hint="copy the output of `kiln build ... -o DIR` into the version folder",
            )
        return engines[0]

    def load(self) -> list[InstanceRunner]:
        """Loads ``config.instances`` runners and warms each one for every configured batch size (blocking)."""
        from kiln.engine.loader import load_engine
        from kiln.engine.manifest import EngineManifest

        engine_dir = self.engine_dir
        manifest = EngineManifest.read(engine_dir)
        self.manifest = manifest
        self.max_batch_size = self.config.resolved_batch_size(manifest.batch.max)
        self._dtypes = {spec.name: _numpy_dtype(spec) for spec in manifest.inputs}
        self.remote = self.engine_host is not None and self._fits_engine_link(manifest)
        if self.remote:
            return [self.new_runner() for _ in range(self.remote_calls)]
        runners: list[InstanceRunner] = []
        for _ in range(self.config.instances):
            runner = load_engine(engine_dir, **self.engine_options(manifest))
            if self.config.warmup:
                self.warm(runner)
            runners.append(runner)
        return runners

    def engine_options(self, manifest: EngineManifest) -> dict[str, Any]:
        """The backend's serving defaults (CPU onnxruntime: no spinning), overridden by the config's ``engine_options``."""
        from kiln.engine.backends.base import get_backend

        return {**get_backend(manifest.backend).serving_options(manifest.device), **self.config.engine_options}

    @property
    def remote_calls(self) -> int:
        """Calls to the engine host one worker keeps in flight for this version."""
        return max(4, 2 * self.config.instances)

    def _fits_engine_link(self, manifest: EngineManifest) -> bool:
        """Text (BYTES) tensors are Python objects, which cannot cross shared memory: such models load here."""
        specs = [*manifest.inputs, *manifest.outputs]
        if any(oip_datatype(spec.dtype) == "BYTES" for spec in specs):
            log.info("model %s version %s has text tensors: loaded in this worker, not the engine host", self.name, self.version)
            return False
        return True

    def new_runner(self) -> InstanceRunner:
        """A fresh warmed instance (used to replace one that hung); a new link when the engine host runs it."""
        if self.remote:
            from kiln.serve.remote_runner import RemoteRunner

            assert self.engine_host is not None
            return RemoteRunner(self.engine_host, self.name, self.version, self.engine_dir, self.config)
        from kiln.engine.loader import load_engine
        from kiln.engine.manifest import EngineManifest

        runner = load_engine(self.engine_dir, **self.engine_options(EngineManifest.read(self.engine_dir)))
        if self.config.warmup:
            self.warm(runner)
        return runner

    def warmup_sizes(self) -> list[int]:
        assert self.manifest is not None
        profile = self.manifest.batch
        sizes = {1, self.max_batch_size, *self.config.preferred_batch_sizes}
        return sorted(s for s in sizes if profile.min <= s <= self.max_batch_size)

    def warm(self, runner: InstanceRunner) -> None:
        assert self.manifest is not None
        for size in self.warmup_sizes():
            runner.infer(self.example_inputs(size), check=True)

    def example_inputs(self, batch: int) -> dict[str, np.ndarray]:
        """Inputs of the engine's shapes: the engine's own example maker (text, uint8 images, ...)
        when it fits the manifest, else zeros with dynamic image sides at the preprocessing size."""
        assert self.manifest is not None
        from kiln.engine.profile import example_maker

        try:
            candidate = example_maker(self.manifest)(batch, 0)
            self.check_inputs(candidate)
            return candidate
        except (KilnError, KeyError, ValueError, TypeError):  # e.g. ONNX files without input descriptions
            pass
        _, height, width = self.manifest.preprocessing.input_size
        inputs: dict[str, np.ndarray] = {}
        for spec in self.manifest.inputs:
            shape = [batch]
            for axis, dim in enumerate(spec.shape[1:], start=1):
                if dim >= 0:
                    shape.append(dim)
                elif len(spec.shape) == 4 and axis == 2:
                    shape.append(height)
                elif len(spec.shape) == 4 and axis == 3:
                    shape.append(width)
                else:
                    shape.append(1)
            dtype = self._dtypes[spec.name]
            if dtype == np.object_:
                inputs[spec.name] = np.full(shape, b"", dtype=np.object_)
            else:
                inputs[spec.name] = np.zeros(shape, dtype=dtype)
        return inputs

    def start(self, runners: list[InstanceRunner], metrics: ModelMetrics | None) -> None:
        """Puts the loaded instances behind a batcher (on the running event loop) and marks READY."""
        self.metrics = metrics
        config = self.config
        # Remote instances: the engine host batches all workers' calls with the config's delay and
        # sizes; here a call leaves as soon as one of this worker's links is free.
        batching = config.dynamic_batching and not self.remote
        policy = BatchPolicy(
            max_batch_size=self.max_batch_size,
            max_queue_delay_s=config.max_queue_delay_us / 1e6 if batching else 0.0,
            preferred_batch_sizes=list(config.preferred_batch_sizes) if batching else [],
            max_queue_size=config.max_queue_size,
        )
        self.batcher = DynamicBatcher(
            f"{self.name}/{self.version}",
            runners,
            policy,
            observer=metrics,
            runner_factory=self.new_runner,
            hang_after_s=config.hang_after_s,
        ).start()
        self.state = ModelState.READY
        self.reason = ""
        if metrics is not None:
            metrics.ready.set(1)

    async def close(self) -> None:
        if self.batcher is not None:
            self.state = ModelState.UNLOADING
            await self.batcher.close()
            self.state = ModelState.UNAVAILABLE
            self.reason = "unloaded"

    # --- requests --------------------------------------------------------------------------------
    def check_inputs(self, inputs: dict[str, np.ndarray]) -> int:
        """Validates a request against the engine's inputs; returns its number of items (batch rows)."""
        assert self.manifest is not None
        specs = self.manifest.inputs
        names = {spec.name for spec in specs}
        if set(inputs) != names:
            missing = sorted(names - set(inputs))
            extra = sorted(set(inputs) - names)
            raise KilnError(
                f"model {self.name!r} takes inputs {sorted(names)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {extra}" if extra else "")
            )
        items: int | None = None
        for spec in specs:
            array = inputs[spec.name]
            want = self._dtypes[spec.name]
            if array.dtype != want:
                raise KilnError(
                    f"input {spec.name!r}: datatype {oip_datatype(array.dtype)} does not match the model's {oip_datatype(want)}"
                )
            if want.kind == "f" and not self.config.limits.allow_non_finite and not np.isfinite(array).all():
                raise KilnError(f"input {spec.name!r} contains NaN or infinite values",
                                hint="send finite numbers (or set limits.allow_non_finite in the model's config)")
            if array.ndim != len(spec.shape) or any(
                expected >= 0 and got != expected for got, expected in zip(array.shape[1:], spec.shape[1:], strict=False)
            ):
                raise KilnError(
                    f"input {spec.name!r}: shape {list(array.shape)} does not match the model's {self.public_shape(spec)} "
                    "(-1 is any size; the first dimension is the batch)"
                )
            if items is None:
                items = array.shape[0]
            elif array.shape[0] != items:
                raise KilnError(f"input {spec.name!r}: batch {array.shape[0]} differs from the other inputs' {items}")
        assert items is not None
        if items < 1:
            raise KilnError(f"model {self.name!r}: the batch dimension must be at least 1")
        if items > self.max_batch_size:
            raise KilnError(
                f"model {self.name!r}: batch {items} exceeds max_batch_size {self.max_batch_size}",
                hint="split the request into smaller batches",
            )
        return items

    def public_shape(self, spec: TensorSpec) -> list[int]:
        return [-1, *spec.shape[1:]]

    async def infer(self, inputs: dict[str, np.ndarray], *, priority: int = 0, timeout_s: float | None = None,
                    arrived: float | None = None) -> dict[str, np.ndarray]:
        """Checks and runs one request through the batcher; records its outcome in the metrics.

        The timeout counts from ``arrived`` (``time.monotonic()`` when the server got the request) when
        given, so time spent before the model (waiting for the CPU, reading the body) is part of it.
        """
        if not self.ready or self.batcher is None:
            raise UnavailableError(f"model {self.name!r} version {self.version} is not ready ({self.state.value}{': ' + self.reason if self.reason else ''})")
        try:
            items = self.check_inputs(inputs)
            inputs = {name: _as_text(name, array) if array.dtype == np.object_ else array for name, array in inputs.items()}
        except KilnError:
            if self.metrics is not None:
                self.metrics.failed("invalid_request")
            raise
        timeout = min(timeout_s, self.config.timeout_s) if timeout_s else self.config.timeout_s
        if arrived is not None:
            timeout -= time.monotonic() - arrived
        started = time.perf_counter()
        outputs = await self.batcher.submit(inputs, items, priority=priority, timeout_s=timeout)
        if self.metrics is not None:
            self.metrics.succeeded(time.perf_counter() - started)
        return outputs
