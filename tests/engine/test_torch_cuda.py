"""The torch backend on a GPU: kiln's own CUDA graphs per batch size, padding, streams, uint8 input.

CI has no GPU, so these are skipped there; they run on the GPU machine with the GPU benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from kiln.engine.artifact import EngineCache
from kiln.engine.build import BuildSettings, build_engine
from kiln.engine.loader import load_engine
from kiln.engine.reference import reference_for
from kiln.engine.spec import BatchProfile, ModelSource, Precision

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none)")


@pytest.mark.parametrize("input_format", ["float32", "uint8"])
def test_graphed_engine_matches_reference_at_every_batch(tmp_path: Path, input_format: str) -> None:
    out = tmp_path / "e"
    build_engine(
        BuildSettings(
            source=ModelSource.parse("timm:test_resnet?num_classes=5"),
            backend="torch",
            precision=Precision.FP16,
            batch=BatchProfile(min=1, opt=4, max=8, buckets=(1, 4, 8)),
            input_size=(64, 64),
            device="cuda",
            options={"compile": "reduce-overhead", "input_format": input_format},
        ),
        cache=EngineCache(tmp_path / "cache"),
        output=out,
    )
    runner = load_engine(out)
    assert runner._graphs is not None and runner._graphs.sizes == [1, 4, 8]  # type: ignore[attr-defined]
    reference = reference_for(out, runner.manifest, "cuda")
    rng = np.random.default_rng(0)
    for n in (1, 3, 4, 7, 8):
        if input_format == "uint8":
            x = rng.integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
        else:
            x = rng.standard_normal((n, 3, 64, 64)).astype(np.float32)
        got = runner.infer({"input": x})["logits"]
        want = reference({"input": x})["logits"]
        assert got.shape == (n, 5)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-2, f"batch {n}"
    # device tensors produced on another stream are waited for
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        x = torch.from_numpy(rng.standard_normal((2, 3, 64, 64)).astype(np.float32)).cuda()
        if input_format == "uint8":
            x = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8, device="cuda")
        out_tensors = runner.infer_tensors({"input": x})  # type: ignore[attr-defined]
    torch.cuda.current_stream().wait_stream(runner.stream)  # type: ignore[attr-defined]
    want = reference({"input": x.cpu().numpy()})["logits"]
    got = out_tensors["logits"].cpu().numpy()
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 2e-2
    runner.deactivate()


def test_cudnn_fused_convolutions_match_the_plain_ops() -> None:
    """kiln::conv_relu / conv_add_relu on CUDA (cuDNN's fused kernels) against the CPU composite, FP16 channels-last."""
    from kiln.engine.conv_fusion import register_ops

    ops = register_ops()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 32, 20, 20, generator=g)
    w = torch.randn(64, 32, 3, 3, generator=g) / 17
    b = torch.randn(64, generator=g) * 0.1
    z = torch.randn(4, 64, 10, 10, generator=g)
    args = ([2, 2], [1, 1], [1, 1], 1)
    cl = torch.channels_last
    for name, extra in (("conv_relu", ()), ("conv_add_relu", (z,))):
        want = ops[name](x, w, b, *extra, *args)
        cuda = [t.cuda().half().to(memory_format=cl) if t.dim() == 4 else t.cuda().half() for t in (x, w, b, *extra)]
        got = ops[name](*cuda, *args)
        assert got.is_contiguous(memory_format=cl)
        torch.testing.assert_close(got.float().cpu(), want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_cudnn_fused_ops_pass_opcheck(dtype: torch.dtype, layout: torch.memory_format) -> None:
    """The fake kernel's strides and dtype match cuDNN's output in every layout and dtype an engine uses."""
    from kiln.engine.conv_fusion import register_ops

    ops = register_ops()
    x = torch.randn(2, 16, 9, 9, device="cuda", dtype=dtype).to(memory_format=layout)
    w = torch.randn(32, 16, 3, 3, device="cuda", dtype=dtype).to(memory_format=layout)
    b = torch.randn(32, device="cuda", dtype=dtype)
    z = torch.randn(2, 32, 5, 5, device="cuda", dtype=dtype).to(memory_format=layout)
    torch.library.opcheck(ops["conv_relu"], (x, w, b, [2, 2], [1, 1], [1, 1], 1))
    torch.library.opcheck(ops["conv_add_relu"], (x, w, b, z, [2, 2], [1, 1], [1, 1], 1))
