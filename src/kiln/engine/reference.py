"""The FP32 reference a built engine is measured against: the source model, unoptimised."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from kiln.engine.manifest import EngineManifest
from kiln.engine.source import LoadedSource, load_source
from kiln.errors import KilnError

ReferenceFn = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def torch_reference(source: LoadedSource, device: str = "cpu") -> ReferenceFn:
    """PyTorch eager FP32 on ``device``."""
    import torch

    assert source.module is not None
    module = source.module.to(device).eval()

    names = [spec.name for spec in source.inputs(source.preprocessing)]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            result = module(*(torch.from_numpy(inputs[name]).to(device) for name in names))
        values = result if isinstance(result, (tuple, list)) else (result,)
        return {name: v.float().cpu().numpy() for name, v in zip(source.output_names, values, strict=True)}

    return run


def onnx_reference(path: Path, threads: int | None = None) -> ReferenceFn:
    """ONNX Runtime FP32 with graph optimisations off: the plain graph as exported."""
    import onnxruntime as ort

    from kiln.engine.backends.onnxruntime import session_options

    session = ort.InferenceSession(str(path), sess_options=session_options(threads, level="none"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, inputs), strict=True))

    return run


def _from_pixels(reference: ReferenceFn, manifest: EngineManifest) -> ReferenceFn:
    """Feed a float reference the uint8 NHWC pixels a fused-normalisation engine takes."""
    pre = manifest.preprocessing
    name = manifest.inputs[0].name
    scale = (1.0 / (255.0 * np.asarray(pre.std, dtype=np.float32))).reshape(1, 1, 1, -1)
    shift = (-np.asarray(pre.mean, dtype=np.float32) / np.asarray(pre.std, dtype=np.float32)).reshape(1, 1, 1, -1)

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        pixels = inputs[name].astype(np.float32)
        return reference({name: np.ascontiguousarray((pixels * scale + shift).transpose(0, 3, 1, 2))})

    return run


def reference_for(directory: Path, manifest: EngineManifest, device: str = "cpu", *, native_inputs: bool = False) -> ReferenceFn:
    """The source model in FP32: torch eager for timm/kiln models, the ONNX file for ONNX sources.

    It takes the engine's inputs (uint8 pixels for fused-normalisation engines) unless
    ``native_inputs``, where it takes the source model's own float inputs (for baselines)."""
    reference = _reference(directory, manifest, device)
    if manifest.preprocessing.input_format == "uint8" and not native_inputs:
        return _from_pixels(reference, manifest)
    return reference


def _reference(directory: Path, manifest: EngineManifest, device: str) -> ReferenceFn:
    if manifest.source.kind == "onnx":
        portable = Path(directory) / "model.onnx"
        if portable.is_file():
            return onnx_reference(portable)
        source_path = Path(manifest.source.name)
        if not source_path.is_file():
            raise KilnError(f"the engine's source ONNX {source_path} is gone and the engine holds no model.onnx")
        return onnx_reference(source_path)
    if manifest.source.checkpoint and not Path(manifest.source.checkpoint).is_file():
        raise KilnError(
            f"the checkpoint the engine was built from is gone: {manifest.source.checkpoint}",
            hint="restore it to compare the engine against its FP32 source",
        )
    loaded = load_source(manifest.source)
    if loaded.sha256 != manifest.source_sha256:
        raise KilnError(
            f"the source model changed since the engine was built (sha256 {loaded.sha256[:12]}… vs {manifest.source_sha256[:12]}…)",
            hint="rebuild the engine from the current source",
        )
    return torch_reference(loaded, device)
