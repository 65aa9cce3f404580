"""Runner options a served model loads with: the backend's serving defaults under the model's own engine_options."""

from __future__ import annotations

from pathlib import Path

from kiln.engine.manifest import EngineManifest
from kiln.serve.model import ServedModel
from kiln.serve.model_config import ModelConfig

from .conftest import Engines, add_model


def _served(repo: Path, engines: Engines, config: dict[str, object]) -> ServedModel:
    version = add_model(repo, "image", engines.image, config)
    return ServedModel("image", "1", version, ModelConfig.read(version.parent))


def test_cpu_onnxruntime_engines_are_served_without_spinning_threads(tmp_path: Path, engines: Engines) -> None:
    model = _served(tmp_path, engines, {})
    manifest = EngineManifest.read(model.directory)
    assert manifest.backend == "onnxruntime" and manifest.device == "cpu"
    assert model.engine_options(manifest) == {"spin": False}
    runners = model.load()
    assert [r.spin for r in runners] == [False]  # type: ignore[attr-defined]


def test_a_models_engine_options_override_the_serving_defaults(tmp_path: Path, engines: Engines) -> None:
    model = _served(tmp_path, engines, {"engine_options": {"spin": True, "threads": 1}})
    assert model.engine_options(EngineManifest.read(model.directory)) == {"spin": True, "threads": 1}
