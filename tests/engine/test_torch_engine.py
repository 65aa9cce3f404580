"""The torch backend on CPU (CI has no GPU): export, precisions, padding to compiled sizes, compile cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kiln.engine.artifact import EngineCache
from kiln.engine.build import BuildSettings, build_engine
from kiln.engine.loader import load_engine
from kiln.engine.reference import reference_for
from kiln.engine.spec import BatchProfile, ModelSource, Precision
from kiln.errors import KilnError


def _settings(precision: Precision, compile_mode: str = "none", batch: BatchProfile | None = None) -> BuildSettings:
    return BuildSettings(
        source=ModelSource.parse("timm:test_resnet?num_classes=3"),
        backend="torch",
        precision=precision,
        batch=batch or BatchProfile(min=1, opt=2, max=4),
        input_size=(64, 64),
        device="cpu",
        options={"compile": compile_mode},
    )


@pytest.mark.parametrize(("precision", "tol"), [(Precision.FP32, 1e-4), (Precision.BF16, 0.1)])
def test_torch_engine_matches_reference(tmp_path: Path, precision: Precision, tol: float) -> None:
    outcome = build_engine(_settings(precision), cache=EngineCache(tmp_path / "cache"), output=tmp_path / "e")
    manifest = outcome.manifest
    assert manifest.backend == "torch" and manifest.device == "cpu"
    assert manifest.build_options["compute_dtype"] == {"fp32": "float32", "bf16": "bfloat16"}[precision.value]
    x = np.random.default_rng(0).standard_normal((3, 3, 64, 64)).astype(np.float32)
    with load_engine(tmp_path / "e") as runner:
        assert runner.padded_size(3) == 4  # type: ignore[attr-defined]
        got = runner.infer({"input": x})["logits"]
    want = reference_for(tmp_path / "e", manifest)({"input": x})["logits"]
    assert got.shape == (3, 3) and got.dtype == np.float32
    rel = np.linalg.norm(got - want) / np.linalg.norm(want)
    assert rel < tol


def test_torch_backend_refuses_int8_and_onnx(tmp_path: Path) -> None:
    with pytest.raises(KilnError, match="does not support int8"):
        build_engine(_settings(Precision.INT8), cache=EngineCache(tmp_path))


def test_compiled_engine_carries_its_compile_cache(tmp_path: Path) -> None:
    outcome = build_engine(
        _settings(Precision.FP32, compile_mode="default", batch=BatchProfile(min=1, opt=1, max=1)),
        cache=EngineCache(tmp_path / "cache"), output=tmp_path / "c",
    )
    assert "compile_cache.bin" in outcome.manifest.files
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    with load_engine(tmp_path / "c") as runner:
        got = runner.infer({"input": x})["logits"]
    want = reference_for(tmp_path / "c", outcome.manifest)({"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_profile_trace_is_a_chrome_trace(tmp_path: Path, backend: str) -> None:
    import json

    from kiln.engine.trace import write_trace

    settings = _settings(Precision.FP32)
    settings.backend = backend
    build_engine(settings, cache=EngineCache(tmp_path / "cache"), output=tmp_path / "e")
    with load_engine(tmp_path / "e") as runner:
        path = write_trace(runner, tmp_path / "trace.json", batch=2)
    data = json.loads(path.read_text())
    events = data["traceEvents"] if isinstance(data, dict) else data
    assert len(events) > 5 and any("dur" in e for e in events)


def test_instances_of_one_engine_share_weights(tmp_path: Path) -> None:
    build_engine(_settings(Precision.FP32), cache=EngineCache(tmp_path / "cache"), output=tmp_path / "e")
    first, second = load_engine(tmp_path / "e"), load_engine(tmp_path / "e")
    assert first._module is second._module  # type: ignore[attr-defined]
    x = np.random.default_rng(5).standard_normal((2, 3, 64, 64)).astype(np.float32)
    np.testing.assert_array_equal(first.infer({"input": x})["logits"], second.infer({"input": x})["logits"])


def test_the_cudnn_plan_search_width_travels_with_the_engine(tmp_path: Path) -> None:
    """``cudnn_benchmark_limit`` (cuDNN plans timed per convolution shape when a GPU engine loads) is kept in the
    manifest for the runner and is part of the cache key; without it the manifest says nothing (torch's default)."""
    cache = EngineCache(tmp_path / "cache")
    plain = build_engine(_settings(Precision.FP32), cache=cache, output=tmp_path / "plain")
    wide_settings = _settings(Precision.FP32)
    wide_settings.options["cudnn_benchmark_limit"] = 0
    wide = build_engine(wide_settings, cache=cache, output=tmp_path / "wide")
    assert "cudnn_benchmark_limit" not in plain.manifest.build_options
    assert wide.manifest.build_options["cudnn_benchmark_limit"] == 0
    assert not wide.cached  # a cache key without the option would have handed back the plain engine
    from kiln.engine.loader import settings_from_manifest

    assert settings_from_manifest(wide.manifest).options["cudnn_benchmark_limit"] == 0  # a rebuild keeps it
    same = _settings(Precision.FP32)
    same.options["cudnn_benchmark_limit"] = "0"  # one value, one key
    assert build_engine(same, cache=cache, output=tmp_path / "same").cached
    for bad in (-1, "many", 2.5):
        wrong = _settings(Precision.FP32)
        wrong.options["cudnn_benchmark_limit"] = bad
        with pytest.raises(KilnError, match="cudnn_benchmark_limit"):
            build_engine(wrong, cache=cache)


def test_a_batch_of_parts_is_gathered_into_the_staging_buffer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU the runner stages inputs in page-locked buffers; ``infer_parts`` writes a batch's parts
    straight into them and ``infer_impl`` reads them in place. Staging forced on here (unpinned on CPU)."""
    from kiln.engine.backends.torch import TorchRunner

    build_engine(_settings(Precision.FP32), cache=EngineCache(tmp_path / "cache"), output=tmp_path / "e")
    rng = np.random.default_rng(7)
    parts = [{"input": rng.standard_normal((rows, 3, 64, 64)).astype(np.float32)} for rows in (1, 2)]
    parts.append({"input": np.flip(rng.standard_normal((1, 3, 64, 64)).astype(np.float32), axis=3)})  # negative strides
    joined = {"input": np.concatenate([p["input"] for p in parts])}
    with load_engine(tmp_path / "e") as plain:
        want = plain.infer(joined)["logits"]
    monkeypatch.setattr(TorchRunner, "stages_inputs", property(lambda self: True))
    with load_engine(tmp_path / "e") as runner:
        gathered = runner.gather_impl(parts)
        (buffer,) = runner._staging.values()  # type: ignore[attr-defined]
        assert np.shares_memory(gathered["input"], buffer.numpy())  # in the buffer, not a joined copy
        np.testing.assert_array_equal(gathered["input"], joined["input"])
        got = runner.infer_parts(parts)["logits"]
        assert runner.last_gather_s > 0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        # a plain call after it is copied into the same buffer (it held the parts until then)
        other = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
        with load_engine(tmp_path / "e") as fresh:
            expected_other = fresh.infer({"input": other})["logits"]
        np.testing.assert_allclose(runner.infer({"input": other})["logits"], expected_other, rtol=1e-5, atol=1e-5)
        assert len(runner._staging) == 1  # type: ignore[attr-defined]
