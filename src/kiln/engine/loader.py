"""Open an engine directory as a runner: integrity, hardware binding, optional rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kiln.engine.artifact import (
    EngineCache,
    check_compatible,
    compatibility_problems,
    copy_engine,
    verify_files,
)
from kiln.engine.backends.base import Runner, get_backend
from kiln.engine.manifest import EngineManifest
from kiln.engine.spec import CalibrationMethod
from kiln.errors import KilnError

# the build options a rebuild on other hardware keeps (the rest of build_options are the build's results)
REBUILD_OPTIONS = frozenset({"compile", "channels_last", "threads", "input_format", "freezing", "inductor", "fuse_conv",
                             "cudnn_benchmark_limit"})


def settings_from_manifest(manifest: EngineManifest) -> Any:
    from kiln.engine.build import BuildSettings

    calib_dir = manifest.build_options.get("calibration_dir")
    return BuildSettings(
        source=manifest.source,
        backend=manifest.backend,
        precision=manifest.precision,
        batch=manifest.batch,
        input_size=manifest.preprocessing.input_size[1:],
        device=manifest.device,
        calibration_dir=Path(calib_dir) if calib_dir else None,
        calibration_method=manifest.calibration.method if manifest.calibration else CalibrationMethod.MINMAX,
        calibration_limit=int(manifest.build_options.get("calibration_limit", 256)),
        options={
            k: v for k, v in manifest.build_options.items() if k in REBUILD_OPTIONS
        },
        name=manifest.name,
    )


def load_engine(directory: Path, *, rebuild: bool = False, cache: EngineCache | None = None, **options: Any) -> Runner:
    """Returns an activated runner; refuses corrupted files and engines bound to other hardware."""
    directory = Path(directory)
    manifest = EngineManifest.read(directory)
    backend = get_backend(manifest.backend)
    verify_files(directory, manifest)
    current = backend.compatibility(manifest.device)
    if compatibility_problems(manifest.compatibility, current):
        if not rebuild:
            check_compatible(directory, manifest, current)
        from kiln.config import get_settings
        from kiln.engine.build import build_engine

        outcome = build_engine(settings_from_manifest(manifest), cache=cache or EngineCache(get_settings().engine_cache_dir))
        copy_engine(outcome.path, directory)
        manifest = EngineManifest.read(directory)
    runner = backend.create_runner(directory, manifest, **options)
    try:
        runner.activate()
    except KilnError:
        raise
    except Exception as exc:  # a runtime failing on a damaged model is a user-facing problem
        raise KilnError(f"engine {directory} failed to load: {exc}", hint="rebuild the engine") from exc
    return runner
