from __future__ import annotations

from pathlib import Path

import pytest

from kiln.engine.spec import BatchProfile, ModelSource, Precision, parse_input_size
from kiln.errors import KilnError


def test_timm_source_with_query_options() -> None:
    source = ModelSource.parse("timm:resnet18?num_classes=2&drop_rate=0.1&pretrained=false")
    assert source.kind == "timm"
    assert source.name == "resnet18"
    assert source.options == {"num_classes": 2, "drop_rate": 0.1, "pretrained": False}
    assert source.describe() == "timm:resnet18?drop_rate=0.1&num_classes=2&pretrained=False"


def test_onnx_source_needs_existing_file(tmp_path: Path) -> None:
    with pytest.raises(KilnError, match="not found"):
        ModelSource.parse(str(tmp_path / "missing.onnx"))
    path = tmp_path / "m.onnx"
    path.write_bytes(b"x")
    assert ModelSource.parse(str(path)).kind == "onnx"


@pytest.mark.parametrize("text", ["resnet18", "timm:", "timm:bad name", "foo:bar"])
def test_bad_sources_say_what_to_do(text: str) -> None:
    with pytest.raises(KilnError) as info:
        ModelSource.parse(text)
    assert info.value.hint or "unknown" in info.value.message


def test_missing_checkpoint_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KilnError, match="checkpoint not found"):
        ModelSource.parse("timm:resnet18", tmp_path / "nope.pt")


def test_batch_profile_parse_and_sizes() -> None:
    profile = BatchProfile.parse("1:8:32")
    assert (profile.min, profile.opt, profile.max) == (1, 8, 32)
    assert profile.sizes() == [1, 2, 4, 8, 16, 32]
    assert BatchProfile.parse("4").sizes() == [1, 2, 4]
    for bad in ("8:1:32", "a:b:c", "1:2"):
        with pytest.raises(KilnError):
            BatchProfile.parse(bad)


def test_input_size() -> None:
    assert parse_input_size("224") == (224, 224)
    assert parse_input_size("256x192") == (256, 192)
    with pytest.raises(KilnError):
        parse_input_size("big")


def test_precision_fallback_order() -> None:
    assert Precision.INT8.safer is Precision.FP16
    assert Precision.FP16.safer is Precision.FP32
    assert Precision.BF16.safer is Precision.FP32
    assert Precision.FP32.safer is None
