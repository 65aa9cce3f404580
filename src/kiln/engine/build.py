"""``kiln build``: model source → engine artifact, cached by content, behind the accuracy gate."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kiln.engine.artifact import EngineCache, copy_engine, hash_files, sha256_json
from kiln.engine.backends.base import Backend, BuildRequest, get_backend
from kiln.engine.calibrate import calibration_digest
from kiln.engine.fused import fuse_normalisation
from kiln.engine.hardware import fingerprint, int8_reduce_range
from kiln.engine.manifest import FORMAT_VERSION, EngineManifest, ValidationReport
from kiln.engine.source import LoadedSource, load_source, source_sha256
from kiln.engine.spec import BatchProfile, CalibrationMethod, ModelSource, Precision, Preprocessing
from kiln.errors import KilnError
from kiln.progress import NullReporter, Reporter

log = logging.getLogger(__name__)


@dataclass
class BuildSettings:
    """Everything that determines an engine (and so its cache key)."""

    source: ModelSource
    backend: str = "onnxruntime"
    precision: Precision = Precision.FP32
    batch: BatchProfile = field(default_factory=BatchProfile)
    input_size: tuple[int, int] | None = None
    device: str | None = None
    calibration_dir: Path | None = None
    calibration_method: CalibrationMethod = CalibrationMethod.MINMAX
    calibration_limit: int = 256
    options: dict[str, Any] = field(default_factory=dict)
    name: str | None = None


@dataclass
class BuildOutcome:
    path: Path
    manifest: EngineManifest
    cached: bool
    notes: list[str] = field(default_factory=list)


def _cache_key(settings: BuildSettings, source_sha: str, request: BuildRequest, compat: dict[str, Any]) -> str:
    calib: dict[str, Any] | None = None
    if request.precision is Precision.INT8:
        calib = {"method": request.calibration_method.value, "percentile": request.options.get("calib_percentile"),
                 "reduce_range": int8_reduce_range(request.options.get("reduce_range", "auto"))}
        if request.calibration_dir is not None and request.calibration_method is not CalibrationMethod.DYNAMIC:
            calib["data"] = calibration_digest(request.calibration_dir)
            calib["limit"] = request.calibration_limit
    key: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "source": source_sha,
        "input_size": settings.input_size,
        "backend": settings.backend,
        "precision": request.precision.value,
        "batch": request.batch.model_dump(),
        "device": request.device,
        "calibration": calib,
        "options": {k: v for k, v in sorted(request.options.items()) if k != "threads"},
        "compatibility": compat,
    }
    if request.options.get("fuse_conv"):
        from kiln.engine.conv_fusion import REWRITE_VERSION

        # only fused engines carry the rewrite's version, so that other cached engines keep their keys
        key["conv_fusion"] = REWRITE_VERSION
    return sha256_json(key)


class _LazySource:
    """Loads the model only on a cache miss (creating a model costs seconds)."""

    def __init__(self, settings: BuildSettings) -> None:
        self.settings = settings
        self.sha256 = source_sha256(settings.source)
        self._loaded: LoadedSource | None = None

    def get(self) -> LoadedSource:
        if self._loaded is None:
            loaded = load_source(self.settings.source)
            if self.input_format == "uint8":
                if loaded.module is None or not loaded.is_image:
                    raise KilnError("--input-format uint8 fuses image normalisation into timm/kiln image models only")
                loaded.module = fuse_normalisation(loaded.module, self._resolve(loaded))
            self._loaded = loaded
        return self._loaded

    @property
    def input_format(self) -> str:
        return str(self.settings.options.get("input_format", "float32"))

    def _resolve(self, loaded: LoadedSource) -> Preprocessing:
        pre = loaded.preprocessing
        if self.settings.input_size is not None:
            pre = pre.with_size(*self.settings.input_size)
        return pre.model_copy(update={"input_format": self.input_format})

    def preprocessing(self) -> Preprocessing:
        return self._resolve(self.get())


def _build_one(
    backend: Backend,
    settings: BuildSettings,
    lazy: _LazySource,
    request: BuildRequest,
    cache: EngineCache,
    reporter: Reporter,
    force: bool,
) -> tuple[Path, EngineManifest, bool]:
    compat = backend.compatibility(request.device)
    key = _cache_key(settings, lazy.sha256, request, compat)
    if not force and (hit := cache.lookup(key)) is not None:
        return hit, EngineManifest.read(hit), True
    loaded = lazy.get()
    request.preprocessing = lazy.preprocessing()
    workdir = cache.staging_dir()
    started = time.perf_counter()
    try:
        result = backend.build(loaded, request, workdir, reporter)
        hw = fingerprint()
        manifest = EngineManifest(
            name=settings.name or loaded.source.name.rsplit("/", 1)[-1].removesuffix(".onnx"),
            backend=backend.name,
            precision=request.precision,
            device=request.device,
            source=loaded.source,
            source_sha256=loaded.sha256,
            inputs=result.inputs,
            outputs=result.outputs,
            batch=request.batch,
            preprocessing=request.preprocessing,
            files=hash_files(workdir, result.files),
            compatibility=compat,
            hardware={"cpu": hw["cpu"], "gpus": hw["gpus"], "os": hw["os"]},
            runtime=hw["runtime"],
            calibration=result.calibration,
            build_options={
                **result.options,
                **request.options,
                "calibration_dir": str(request.calibration_dir) if request.calibration_dir else None,
                "calibration_limit": request.calibration_limit,
            },
            extra=loaded.extra,
            cache_key=key,
            build_seconds=round(time.perf_counter() - started, 2),
        )
        for stray in set(p.name for p in workdir.iterdir()) - set(result.files):
            target = workdir / stray
            shutil.rmtree(target) if target.is_dir() else target.unlink()
        manifest.write(workdir)
        return cache.store(key, workdir), manifest, False
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise


def _gate(path: Path, manifest: EngineManifest, data_dir: Path, max_drop: float, reporter: Reporter) -> ValidationReport:
    from kiln.engine.loader import load_engine
    from kiln.engine.reference import reference_for
    from kiln.engine.validate import validate

    with load_engine(path) as runner:
        report = validate(runner, reference_for(path, manifest), data_dir, max_drop=max_drop, reporter=reporter)
    manifest.validation = report
    manifest.write(path)
    return report


def _checked_options(options: dict[str, Any]) -> dict[str, Any]:
    """The backend options with the values that have one spelling normalised (they are part of the cache key)."""
    checked = dict(options)
    limit = checked.get("cudnn_benchmark_limit")
    if limit is not None:
        try:
            value = int(limit)
            whole = value >= 0 and value == float(limit)
        except (TypeError, ValueError):
            whole = False
        if not whole:
            raise KilnError(f"cudnn_benchmark_limit {limit!r} is not a whole number of 0 or more",
                            hint="0 (time every plan) or more")
        checked["cudnn_benchmark_limit"] = value
    return checked


def build_engine(
    settings: BuildSettings,
    *,
    cache: EngineCache,
    output: Path | None = None,
    validate_dir: Path | None = None,
    max_drop: float = 1.0,
    force: bool = False,
    reporter: Reporter | None = None,
) -> BuildOutcome:
    """Build (or reuse from the cache) an engine; with ``validate_dir``, fall back to safer precisions
    until the accuracy gate passes. Raises if no precision passes: a failing engine is never written."""
    report_to: Reporter = reporter or NullReporter()
    backend = get_backend(settings.backend)
    device = settings.device or backend.default_device()
    backend.check_precision(settings.precision, device)
    lazy = _LazySource(settings)
    notes: list[str] = []
    precision: Precision | None = settings.precision
    while precision is not None:
        if precision not in backend.supported_precisions(device):
            precision = precision.safer
            continue
        request = BuildRequest(
            precision=precision,
            batch=settings.batch,
            preprocessing=Preprocessing(),  # resolved from the model on a cache miss
            device=device,
            calibration_dir=settings.calibration_dir,
            calibration_method=settings.calibration_method,
            calibration_limit=settings.calibration_limit,
            options=_checked_options(settings.options),
        )
        path, manifest, cached = _build_one(backend, settings, lazy, request, cache, report_to, force)
        if validate_dir is not None:
            report = manifest.validation
            if report is None or report.dataset != str(Path(validate_dir).resolve()) or report.max_drop != max_drop:
                report = _gate(path, manifest, validate_dir, max_drop, report_to)
            if not report.passed:
                safer = precision.safer
                while safer is not None and safer not in backend.supported_precisions(device):
                    safer = safer.safer
                column = report.max_column_drop_points
                why = (f"drop {report.drop_points:.2f} points > {max_drop} "
                       f"(engine {report.engine_top1:.2f}%, reference {report.reference_top1:.2f}%)"
                       if report.drop_points > max_drop else
                       f"one of the output's classifier columns dropped {column:.2f} points > {max_drop}")
                notes.append(f"{precision.value} failed the accuracy gate: {why}"
                             + (f"; falling back to {safer.value}" if safer else ""))
                shutil.rmtree(path, ignore_errors=True)
                precision = safer
                continue
        if output is not None:
            path = copy_engine(path, output)
        return BuildOutcome(path=path, manifest=manifest, cached=cached, notes=notes)
    raise KilnError(
        "no precision passed the accuracy gate: " + " | ".join(notes),
        hint="check the validation data and the model; raise --max-drop only if the loss is acceptable",
    )
