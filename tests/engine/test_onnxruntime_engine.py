"""End to end on the onnxruntime backend: tiny timm model → int8 engine → validate → profile → cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kiln.engine.artifact import EngineCache
from kiln.engine.build import BuildSettings, build_engine
from kiln.engine.loader import load_engine
from kiln.engine.manifest import EngineManifest
from kiln.engine.profile import profile_engine
from kiln.engine.reference import reference_for
from kiln.engine.spec import BatchProfile, CalibrationMethod, ModelSource, Precision
from kiln.engine.validate import validate
from kiln.errors import EngineMismatchError, KilnError

MODEL = "timm:test_resnet?num_classes=2"


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> EngineCache:
    return EngineCache(tmp_path_factory.mktemp("engines"))


def _settings(precision: Precision, calib: Path | None = None, method: CalibrationMethod = CalibrationMethod.MINMAX) -> BuildSettings:
    return BuildSettings(
        source=ModelSource.parse(MODEL),
        backend="onnxruntime",
        precision=precision,
        batch=BatchProfile(min=1, opt=4, max=8),
        input_size=(64, 64),
        calibration_dir=calib,
        calibration_method=method,
    )


def test_fp32_engine_matches_torch_reference(cache: EngineCache, tmp_path: Path) -> None:
    outcome = build_engine(_settings(Precision.FP32), cache=cache, output=tmp_path / "fp32")
    manifest = EngineManifest.read(tmp_path / "fp32")
    assert manifest.backend == "onnxruntime" and manifest.precision is Precision.FP32
    assert manifest.preprocessing.input_size == (3, 64, 64)
    assert manifest.inputs[0].shape[0] == -1, "batch must be dynamic"
    assert {"model.onnx", "model.opt.onnx"} <= set(manifest.files)
    assert manifest.compatibility["cpu_isa"] == outcome.manifest.compatibility["cpu_isa"]
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    with load_engine(tmp_path / "fp32") as runner:
        got = runner.infer({"input": x})["logits"]
    want = reference_for(tmp_path / "fp32", manifest)({"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", [CalibrationMethod.MINMAX, CalibrationMethod.ENTROPY, CalibrationMethod.PERCENTILE])
def test_int8_qdq_engine_validate_profile_and_cache(
    cache: EngineCache, image_folder: Path, tmp_path: Path, method: CalibrationMethod
) -> None:
    out = tmp_path / "int8"
    first = build_engine(_settings(Precision.INT8, image_folder, method), cache=cache, output=out)
    assert not first.cached
    manifest = first.manifest
    assert manifest.calibration is not None and manifest.calibration.method is method
    assert manifest.calibration.images == 12
    assert "model.qdq.onnx" in manifest.files
    import onnx

    qdq = onnx.load(str(out / "model.qdq.onnx"))
    ops = {node.op_type for node in qdq.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, "int8 engines are QDQ graphs (what TensorRT consumes)"

    runner = load_engine(out)
    report = validate(runner, reference_for(out, manifest), image_folder, max_drop=100.0)
    assert report.samples == 12
    assert 0.0 <= report.engine_top1 <= 100.0
    assert report.cosine_similarity > 0.9, "int8 outputs should stay close to fp32"

    profile = profile_engine(runner, [1, 4, 16], iterations=3, warmup=1, baseline=reference_for(out, manifest))
    assert [r.batch for r in profile.results] == [1, 4], "batch sizes over the engine's max are skipped"
    assert set(profile.speedup) == {"1", "4"}
    data = json.loads(profile.model_dump_json())
    assert {"results", "baseline", "speedup"} <= set(data)
    assert {"batch", "p50_ms", "p95_ms", "p99_ms", "throughput"} <= set(data["results"][0])
    runner.deactivate()

    again = build_engine(_settings(Precision.INT8, image_folder, method), cache=cache, output=tmp_path / "again")
    assert again.cached and again.manifest.cache_key == manifest.cache_key


def test_other_hardware_is_refused_with_the_mismatch_named(cache: EngineCache, tmp_path: Path) -> None:
    out = tmp_path / "fp32"
    build_engine(_settings(Precision.FP32), cache=cache, output=out)
    manifest = EngineManifest.read(out)
    manifest.compatibility["cpu_isa"] = ["sse4_2", "amx_int8"]
    manifest.compatibility["onnxruntime"] = "0.0.1"
    manifest.write(out)
    with pytest.raises(EngineMismatchError) as info:
        load_engine(out)
    assert "cpu_isa" in info.value.message and "onnxruntime" in info.value.message
    assert "0.0.1" in info.value.message
    runner = load_engine(out, rebuild=True, cache=cache)
    assert runner.infer({"input": np.zeros((1, 3, 64, 64), np.float32)})["logits"].shape == (1, 2)


def test_corrupted_engine_file_is_refused(cache: EngineCache, tmp_path: Path) -> None:
    out = tmp_path / "fp32"
    build_engine(_settings(Precision.FP32), cache=cache, output=out)
    with open(out / "model.opt.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"garbage!")
    with pytest.raises(KilnError, match="corrupted"):
        load_engine(out)


def test_runner_rejects_bad_inputs(cache: EngineCache, tmp_path: Path) -> None:
    out = tmp_path / "fp32"
    build_engine(_settings(Precision.FP32), cache=cache, output=out)
    with load_engine(out) as runner:
        with pytest.raises(KilnError, match="dtype: float64"):
            runner.infer({"input": np.zeros((1, 3, 64, 64))})
        with pytest.raises(KilnError, match="shape"):
            runner.infer({"input": np.zeros((1, 4, 64, 64), np.float32)})
        with pytest.raises(KilnError, match="max batch 8"):
            runner.infer({"input": np.zeros((9, 3, 64, 64), np.float32)})
        with pytest.raises(KilnError, match="missing"):
            runner.infer({"x": np.zeros((1, 3, 64, 64), np.float32)})


def test_onnx_file_source(cache: EngineCache, tmp_path: Path) -> None:
    build_engine(_settings(Precision.FP32), cache=cache, output=tmp_path / "a")
    onnx_path = tmp_path / "exported.onnx"
    shutil.copy(tmp_path / "a" / "model.onnx", onnx_path)
    outcome = build_engine(
        BuildSettings(source=ModelSource.parse(str(onnx_path)), batch=BatchProfile(min=1, opt=2, max=4)),
        cache=cache, output=tmp_path / "b",
    )
    assert outcome.manifest.source.kind == "onnx"
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with load_engine(tmp_path / "b") as runner:
        got = runner.infer({"input": x})["logits"]
    np.testing.assert_allclose(got, reference_for(tmp_path / "b", outcome.manifest)({"input": x})["logits"], rtol=1e-3, atol=1e-4)


def test_onnx_file_with_external_data(cache: EngineCache, tmp_path: Path) -> None:
    """Weights kept beside the graph (``.onnx`` + ``.data``): built into a self-contained engine,
    the weights count in the cache key, and a missing weight file is a clear error."""
    import onnx

    build_engine(_settings(Precision.FP32), cache=cache, output=tmp_path / "a")
    user = tmp_path / "user"
    user.mkdir()
    model = onnx.load(str(tmp_path / "a" / "model.onnx"))
    onnx.save_model(model, str(user / "net.onnx"), save_as_external_data=True, location="net.weights", size_threshold=0)
    settings = BuildSettings(source=ModelSource.parse(str(user / "net.onnx")), batch=BatchProfile(min=1, opt=2, max=4))
    first = build_engine(settings, cache=cache, output=tmp_path / "b")
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with load_engine(tmp_path / "b") as runner:
        want = runner.infer({"input": x})["logits"]

    (user / "net.weights").rename(user / "moved")
    with load_engine(tmp_path / "b") as runner:  # the engine does not need the user's files any more
        np.testing.assert_allclose(runner.infer({"input": x})["logits"], want)
    with pytest.raises(KilnError, match=r"external data file.*net\.weights"):
        build_engine(settings, cache=cache, output=tmp_path / "c")

    from onnx import numpy_helper

    model = onnx.load(str(tmp_path / "a" / "model.onnx"))
    float_weight = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT)
    float_weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(float_weight) + 1, float_weight.name))
    onnx.save_model(model, str(user / "net.onnx"), save_as_external_data=True, location="net.weights", size_threshold=0)
    second = build_engine(settings, cache=cache, output=tmp_path / "d")
    assert second.manifest.source_sha256 != first.manifest.source_sha256, "other weights, other engine"


def test_failed_gate_falls_back_to_safer_precision(
    cache: EngineCache, image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import kiln.engine.validate as validate_module

    real_validate = validate_module.validate

    def int8_loses_accuracy(runner, reference, data_dir, **kwargs):  # type: ignore[no-untyped-def]
        report = real_validate(runner, reference, data_dir, **kwargs)
        if runner.manifest.precision is Precision.INT8:
            report = report.model_copy(update={"engine_top1": report.reference_top1 - 5, "drop_points": 5.0, "passed": False})
        return report

    monkeypatch.setattr(validate_module, "validate", int8_loses_accuracy)
    outcome = build_engine(
        _settings(Precision.INT8, image_folder), cache=cache, output=tmp_path / "gated", validate_dir=image_folder, max_drop=1.0
    )
    assert outcome.manifest.precision is Precision.FP32, "onnxruntime on CPU has no fp16: int8 falls back to fp32"
    assert outcome.notes and "int8 failed the accuracy gate" in outcome.notes[0] and "falling back to fp32" in outcome.notes[0]
    written = EngineManifest.read(tmp_path / "gated")
    assert written.precision is Precision.FP32 and written.validation is not None and written.validation.passed


def test_no_precision_passing_the_gate_writes_nothing(cache: EngineCache, image_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(KilnError, match="no precision passed the accuracy gate"):
        build_engine(
            _settings(Precision.INT8, image_folder), cache=cache, output=tmp_path / "never",
            validate_dir=image_folder, max_drop=-1.0,
        )
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_uint8_input_fuses_normalisation(tmp_path: Path, image_folder: Path, backend: str) -> None:
    """A uint8 NHWC engine gives what the float engine gives on the same pictures."""
    from kiln.engine.images import iter_image_files, load_image, preprocess

    cache = EngineCache(tmp_path / "cache")
    common = {"source": ModelSource.parse(MODEL), "backend": backend, "input_size": (64, 64), "device": "cpu",
              "batch": BatchProfile(min=1, opt=2, max=4)}
    floats = build_engine(BuildSettings(**common), cache=cache, output=tmp_path / "f")  # type: ignore[arg-type]
    pixels = build_engine(BuildSettings(**common, options={"input_format": "uint8"}), cache=cache, output=tmp_path / "u")  # type: ignore[arg-type]
    assert pixels.manifest.preprocessing.input_format == "uint8"
    assert pixels.manifest.inputs[0].dtype == "uint8" and pixels.manifest.inputs[0].shape[-1] == 3
    images = [load_image(p) for p in list(iter_image_files(image_folder))[:3]]
    x_float = np.stack([preprocess(im, floats.manifest.preprocessing) for im in images])
    x_uint8 = np.stack([preprocess(im, pixels.manifest.preprocessing) for im in images])
    assert x_uint8.dtype == np.uint8 and x_uint8.shape == (3, 64, 64, 3)
    with load_engine(tmp_path / "f") as a, load_engine(tmp_path / "u") as b:
        np.testing.assert_allclose(b.infer({"input": x_uint8})["logits"], a.infer({"input": x_float})["logits"], rtol=1e-3, atol=1e-3)
        report = validate(b, reference_for(tmp_path / "u", pixels.manifest), image_folder)
    assert report.top1_agreement == 100.0 and report.cosine_similarity > 0.999


def test_session_options_spin_off_lets_threads_sleep() -> None:
    from kiln.engine.backends.onnxruntime import session_options

    assert session_options(2, spin=False).get_session_config_entry("session.intra_op.allow_spinning") == "0"
    with pytest.raises(RuntimeError):  # no entry: ORT's default (spinning) stays
        session_options(2).get_session_config_entry("session.intra_op.allow_spinning")
