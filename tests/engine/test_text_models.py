"""Non-image models: token-id inputs, symbolic sequence length, dynamic and static int8."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.engine.artifact import EngineCache
from kiln.engine.build import BuildSettings, build_engine
from kiln.engine.inputs import InputSpec
from kiln.engine.loader import load_engine
from kiln.engine.models import register_model
from kiln.engine.profile import profile_engine
from kiln.engine.reference import reference_for
from kiln.engine.spec import BatchProfile, CalibrationMethod, ModelSource, Precision
from kiln.engine.validate import cosine_rows
from kiln.errors import KilnError


class TinyEncoder(torch.nn.Module):
    """Embedding + one transformer layer + masked mean pooling: the shape of a sentence encoder."""

    def __init__(self, vocab: int = 50, dim: int = 32) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, dim)
        self.layer = torch.nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=64, batch_first=True, dropout=0.0)
        self.proj = torch.nn.Linear(dim, dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.layer(self.embed(input_ids))
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(self.proj(pooled), dim=-1)


register_model(
    "test_tiny_encoder",
    output_names=("embedding",),
    inputs=(
        InputSpec(name="input_ids", dtype="int64", dims=["batch", "sequence"], low=1, high=50),
        InputSpec(name="attention_mask", dtype="int64", dims=["batch", "sequence"], low=1, high=2),
    ),
    example_sizes={"sequence": 12},
)(TinyEncoder)


def _tokens(batch: int, length: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, 50, size=(batch, length)).astype(np.int64)
    mask = np.ones((batch, length), dtype=np.int64)
    mask[0, length // 2 :] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _build(tmp_path: Path, precision: Precision, method: CalibrationMethod, calib: Path | None = None) -> Path:
    out = tmp_path / f"{precision.value}-{method.value}"
    build_engine(
        BuildSettings(
            source=ModelSource.parse("kiln:test_tiny_encoder"),
            precision=precision,
            calibration_method=method,
            calibration_dir=calib,
            batch=BatchProfile(min=1, opt=4, max=8),
        ),
        cache=EngineCache(tmp_path / "cache"),
        output=out,
    )
    return out


@pytest.mark.parametrize("length", [5, 19])
def test_text_engine_has_dynamic_sequence_and_matches_torch(tmp_path: Path, length: int) -> None:
    out = _build(tmp_path, Precision.FP32, CalibrationMethod.MINMAX)
    with load_engine(out) as runner:
        assert [spec.shape for spec in runner.inputs] == [[-1, -1], [-1, -1]]
        inputs = _tokens(3, length, seed=length)
        got = runner.infer(inputs)["embedding"]
        want = reference_for(out, runner.manifest)(inputs)["embedding"]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_dynamic_int8_needs_no_calibration_data(tmp_path: Path) -> None:
    out = _build(tmp_path, Precision.INT8, CalibrationMethod.DYNAMIC)
    with load_engine(out) as runner:
        assert runner.manifest.calibration is not None and runner.manifest.calibration.method is CalibrationMethod.DYNAMIC
        inputs = _tokens(4, 10, seed=1)
        got = runner.infer(inputs)["embedding"]
        want = reference_for(out, runner.manifest)(inputs)["embedding"]
        assert cosine_rows(got, want).min() > 0.95
        report = profile_engine(runner, [1, 4], iterations=3, warmup=1)
    assert [r.batch for r in report.results] == [1, 4]


def test_static_int8_calibrates_on_npz_arrays(tmp_path: Path) -> None:
    calib = tmp_path / "calib"
    calib.mkdir()
    for i in range(4):
        np.savez(calib / f"{i}.npz", **_tokens(2, 10, seed=i))
    out = _build(tmp_path, Precision.INT8, CalibrationMethod.MINMAX, calib)
    with load_engine(out) as runner:
        assert runner.manifest.calibration is not None and runner.manifest.calibration.images == 4
        inputs = _tokens(2, 10, seed=9)
        assert cosine_rows(runner.infer(inputs)["embedding"], reference_for(out, runner.manifest)(inputs)["embedding"]).min() > 0.9


def test_static_int8_without_npz_calibration_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "a.jpg").write_bytes(b"not used")
    with pytest.raises(KilnError, match=r"\.npz"):
        _build(tmp_path, Precision.INT8, CalibrationMethod.MINMAX, empty)


def test_text_engine_on_torch_backend(tmp_path: Path) -> None:
    out = tmp_path / "torch"
    build_engine(
        BuildSettings(source=ModelSource.parse("kiln:test_tiny_encoder"), backend="torch", device="cpu",
                      batch=BatchProfile(min=1, opt=2, max=4)),
        cache=EngineCache(tmp_path / "cache"), output=out,
    )
    with load_engine(out) as runner:
        inputs = _tokens(3, 12, seed=4)
        got = runner.infer(inputs)["embedding"]
        want = reference_for(out, runner.manifest)(inputs)["embedding"]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
