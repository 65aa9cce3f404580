"""The space-to-depth stem rewrite: exact on the models it applies to, refused with a reason elsewhere."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.engine.artifact import EngineCache
from kiln.engine.build import BuildSettings, build_engine
from kiln.engine.loader import load_engine
from kiln.engine.reference import reference_for
from kiln.engine.rewrites import space_to_depth_stem
from kiln.engine.spec import BatchProfile, ModelSource, Precision
from kiln.errors import KilnError


class _Stem(torch.nn.Module):
    def __init__(self, kernel: int, padding: int, channels: int = 3, bias: bool = True) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, 5, kernel, stride=2, padding=padding, bias=bias)
        self.head = torch.nn.Conv2d(5, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)))


@pytest.mark.parametrize(("kernel", "padding", "size"), [(7, 3, (32, 32)), (7, 3, (31, 40)), (3, 1, (17, 16)), (4, 0, (20, 21))])
@pytest.mark.parametrize("multiple", [1, 8])
def test_rewritten_stem_gives_the_same_outputs(kernel: int, padding: int, size: tuple[int, int], multiple: int) -> None:
    torch.manual_seed(kernel + size[0])
    model = _Stem(kernel, padding).eval()
    rewritten = copy.deepcopy(model)
    assert space_to_depth_stem(rewritten, multiple) == "conv"
    inner = rewritten.conv.inner  # type: ignore[union-attr]
    assert inner.stride == (1, 1) and inner.kernel_size == ((kernel + 1) // 2,) * 2
    assert inner.in_channels % multiple == 0 and inner.in_channels >= 12
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        want, got = model(x), rewritten(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_stem_rewrite_refuses_what_it_cannot_rewrite_and_says_why() -> None:
    with pytest.raises(KilnError, match="stride"):
        space_to_depth_stem(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=1)))
    with pytest.raises(KilnError, match="16 input channels"):
        space_to_depth_stem(torch.nn.Sequential(torch.nn.Conv2d(16, 4, 3, stride=2, padding=1)))
    with pytest.raises(KilnError, match="padding"):
        space_to_depth_stem(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=2, padding=1, padding_mode="reflect")))
    with pytest.raises(KilnError, match="has none"):
        space_to_depth_stem(torch.nn.Sequential(torch.nn.Linear(3, 4)))


def test_torch_engine_with_a_space_to_depth_stem_matches_the_reference(tmp_path: Path) -> None:
    settings = BuildSettings(
        source=ModelSource.parse("timm:resnet18?num_classes=3"),
        backend="torch",
        precision=Precision.FP32,
        batch=BatchProfile(min=1, opt=2, max=2),
        input_size=(64, 64),
        device="cpu",
        options={"compile": "none", "stem": "space-to-depth", "input_format": "uint8"},
    )
    outcome = build_engine(settings, cache=EngineCache(tmp_path / "cache"), output=tmp_path / "e")
    assert outcome.manifest.build_options["stem"] == "space-to-depth"
    x = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    with load_engine(tmp_path / "e") as runner:
        got = runner.infer({"input": x})["logits"]
    want = reference_for(tmp_path / "e", outcome.manifest)({"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    settings.options = {**settings.options, "stem": "sideways"}
    with pytest.raises(KilnError, match="unknown stem 'sideways'"):
        build_engine(settings, cache=EngineCache(tmp_path / "cache"), output=tmp_path / "f")
