"""Conv epilogue fusion (conv_fusion.py): exact on the ResNet blocks it rewrites, refused with a reason
elsewhere, and carried through a torch engine (on CPU the fused ops run as plain ops; the cuDNN kernels
are checked in test_torch_cuda.py on a GPU)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from kiln.engine.artifact import EngineCache
from kiln.engine.build import BuildSettings, build_engine
from kiln.engine.conv_fusion import REWRITE_VERSION, fuse_conv_epilogues
from kiln.engine.loader import load_engine
from kiln.engine.reference import reference_for
from kiln.engine.spec import BatchProfile, ModelSource, Precision
from kiln.errors import KilnError


def _with_batch_norm_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial running statistics, so that a wrong fold shows (fresh ones are mean 0, variance 1)."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
            module.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(n, generator=generator) * 0.4 - 0.2)
    return model.eval()


@pytest.mark.parametrize(("name", "convs"), [("resnet18", 20), ("resnet26", 29), ("resnet10t", 14), ("resnet26d", 31)])
def test_fused_model_gives_the_same_outputs(name: str, convs: int) -> None:
    torch.manual_seed(0)
    model = _with_batch_norm_statistics(timm.create_model(name, num_classes=7))
    fused = copy.deepcopy(model)
    assert fuse_conv_epilogues(fused).folded == convs
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        want, got = model(x), fused(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    program = torch.export.export(fused, (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"kiln.conv_relu.default", "kiln.conv_add_relu.default"} <= targets
    # shortcut convolutions run without a bias (it moved into the fused convolution that adds the shortcut)
    shortcuts = [n for n in program.graph.nodes if n.target is torch.ops.aten.conv2d.default]
    assert len(shortcuts) == sum(1 for m in model.modules() if getattr(m, "downsample", None) is not None) > 0
    assert all(len(n.args) < 3 or n.args[2] is None for n in shortcuts)


def test_blocks_it_cannot_rewrite_exactly_are_left_alone_and_named() -> None:
    model = timm.create_model("seresnet18", num_classes=3).eval()
    report = fuse_conv_epilogues(model)
    assert report.folded == 1 and report.skipped == {"BasicBlock has squeeze-excitation": 8}  # only the stem
    assert sum(type(m).__name__ == "BasicBlock" for m in model.modules()) == 8
    with pytest.raises(KilnError, match="squeeze-excitation"):
        fuse_conv_epilogues(timm.create_model("seresnet18", num_classes=3).eval().layer1)
    with pytest.raises(KilnError, match="no ResNet block"):
        fuse_conv_epilogues(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)))
    with pytest.raises(KilnError, match="training mode"):
        fuse_conv_epilogues(timm.create_model("resnet18").train().layer1)


@pytest.mark.parametrize("compile_mode", ["none", "default"])
def test_torch_engine_with_fused_convolutions_matches_the_reference(tmp_path: Path, compile_mode: str) -> None:
    settings = BuildSettings(
        source=ModelSource.parse("timm:resnet18?num_classes=3"),
        backend="torch",
        precision=Precision.FP32,
        batch=BatchProfile(min=1, opt=2, max=2),
        input_size=(64, 64),
        device="cpu",
        options={"compile": compile_mode, "fuse_conv": True, "input_format": "uint8"},
    )
    outcome = build_engine(settings, cache=EngineCache(tmp_path / "cache"), output=tmp_path / "e")
    assert outcome.manifest.build_options["fuse_conv"] is True
    x = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    with load_engine(tmp_path / "e") as runner:
        got = runner.infer({"input": x})["logits"]
    want = reference_for(tmp_path / "e", outcome.manifest)({"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_fuse_conv_is_refused_for_models_without_resnet_blocks(tmp_path: Path) -> None:
    settings = BuildSettings(
        source=ModelSource.parse("timm:vit_tiny_patch16_224?num_classes=3"),
        backend="torch", precision=Precision.FP32, batch=BatchProfile(min=1, opt=1, max=1),
        input_size=(32, 32), device="cpu", options={"fuse_conv": True},
    )
    with pytest.raises(KilnError, match="conv fusion found no ResNet block"):
        build_engine(settings, cache=EngineCache(tmp_path / "cache"), output=tmp_path / "e")


def test_batch_norm_without_affine_parameters_folds_too() -> None:
    model = timm.create_model("resnet18", num_classes=3).eval()
    plain = torch.nn.BatchNorm2d(64, affine=False).eval()
    plain.running_mean.uniform_(-0.3, 0.3)
    plain.running_var.uniform_(0.5, 2.0)
    model.layer1[0].bn1 = plain
    fused = copy.deepcopy(model)
    fuse_conv_epilogues(fused)
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-5)


def test_subclasses_that_change_forward_are_not_folded() -> None:
    from timm.layers import BatchNormAct2d

    model = timm.create_model("resnet18", num_classes=3, norm_layer=BatchNormAct2d).eval()
    with pytest.raises(KilnError, match="cannot be folded"):
        fuse_conv_epilogues(model)


def test_drop_path_and_drop_block_are_identities_in_eval_mode() -> None:
    model = _with_batch_norm_statistics(timm.create_model("resnet18", num_classes=3, drop_path_rate=0.2, drop_block_rate=0.1))
    fused = copy.deepcopy(model)
    assert fuse_conv_epilogues(fused).folded == 20
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fused_ops_pass_torch_opcheck(layout: torch.memory_format) -> None:
    """Schema, fake (meta) kernel and real kernel agree (strides and dtype included), as inductor needs."""
    from kiln.engine.conv_fusion import register_ops

    ops = register_ops()
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 8, 9, 9, generator=g).to(memory_format=layout)
    w = torch.randn(16, 8, 3, 3, generator=g).to(memory_format=layout)
    b = torch.randn(16, generator=g)
    z = torch.randn(2, 16, 5, 5, generator=g).to(memory_format=layout)
    torch.library.opcheck(ops["conv_relu"], (x, w, b, [2, 2], [1, 1], [1, 1], 1))
    torch.library.opcheck(ops["conv_add_relu"], (x, w, b, z, [2, 2], [1, 1], [1, 1], 1))


def test_a_fused_engine_loads_in_a_fresh_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    settings = BuildSettings(
        source=ModelSource.parse("timm:resnet18?num_classes=3"), backend="torch", precision=Precision.FP32,
        batch=BatchProfile(min=1, opt=1, max=1), input_size=(48, 48), device="cpu",
        options={"compile": "none", "fuse_conv": True},
    )
    outcome = build_engine(settings, cache=EngineCache(tmp_path / "cache"), output=tmp_path / "e")
    assert outcome.manifest.build_options["conv_fusion"] == {"folded": 20, "skipped": {}, "version": REWRITE_VERSION}
    script = (
        "import sys, numpy as np\n"
        "from kiln.engine.loader import load_engine\n"
        "with load_engine(sys.argv[1]) as r:\n"
        "    print(r.infer({'input': np.zeros((1, 3, 48, 48), np.float32)})['logits'].shape)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "e")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("(1, 3)")


def test_a_new_rewrite_version_does_not_reuse_cached_fused_engines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kiln.engine.conv_fusion as conv_fusion

    def build(fuse: bool) -> bool:
        settings = BuildSettings(
            source=ModelSource.parse("timm:resnet18?num_classes=3"), backend="torch", precision=Precision.FP32,
            batch=BatchProfile(min=1, opt=1, max=1), input_size=(32, 32), device="cpu",
            options={"compile": "none", "fuse_conv": fuse},
        )
        return build_engine(settings, cache=EngineCache(tmp_path / "cache"), output=tmp_path / f"e{fuse}").cached

    assert not build(True) and not build(False)
    assert build(True) and build(False)  # same inputs, same rewrite: reused
    monkeypatch.setattr(conv_fusion, "REWRITE_VERSION", REWRITE_VERSION + 1)
    assert not build(True)  # the rewrite changed: rebuilt
    assert build(False)  # unfused engines keep their keys
