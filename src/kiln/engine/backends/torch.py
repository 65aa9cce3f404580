"""PyTorch backend: exported program + FP16/BF16, channels-last, torch.compile (max-autotune and
CUDA graphs on GPU) with the compiled kernels cached inside the artifact for warm starts.

Runs on CPU too (eager by default there, compile on request) so that CI exercises it.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kiln.engine.backends.base import Backend, BuildRequest, BuildResult, Runner, register_backend
from kiln.engine.backends.cuda_graphs import CudaGraphExecutor
from kiln.engine.export import dynamic_shapes, example_tensors
from kiln.engine.hardware import cpu_info, gpu_info, package_version
from kiln.engine.inputs import InputSpec, example_arrays, image_input
from kiln.engine.manifest import EngineManifest, TensorSpec
from kiln.engine.source import INPUT_NAME, LoadedSource
from kiln.engine.spec import Precision
from kiln.errors import KilnError
from kiln.progress import Reporter

log = logging.getLogger(__name__)

PROGRAM = "model.pt2"
COMPILE_CACHE = "compile_cache.bin"
_DTYPES = {Precision.FP32: "float32", Precision.FP16: "float16", Precision.BF16: "bfloat16"}
# torch.compile state is process-global; serialise compilation and cache loading.
_COMPILE_LOCK = threading.Lock()
_SHARED_MODULES: weakref.WeakValueDictionary[tuple[str, str, str, bool], Any] = weakref.WeakValueDictionary()


def _torch_dtype(precision: Precision) -> Any:
    import torch

    return getattr(torch, _DTYPES[precision])


def default_compile_mode(device: str) -> str:
    """On GPU: inductor kernels under kiln's own CUDA graphs ("reduce-overhead"); "max-autotune" is
    available but its kernel search took over 5 minutes for resnet50 on an H100 with no measured gain
    (docs/benchmarks/engine.md). On CPU: eager, where compiling costs minutes on small machines."""
    return "reduce-overhead" if device == "cuda" else "none"


def _examples(inputs: list[InputSpec], sizes: dict[str, int], batch: int, device: str, dtype: Any) -> dict[str, Any]:
    import torch

    arrays = example_arrays(inputs, sizes, batch)
    return {
        name: torch.from_numpy(a).to(device=device, dtype=dtype if a.dtype.kind == "f" else None)
        for name, a in arrays.items()
    }


def _conv_fused(module: Any) -> tuple[Any, Any]:
    """A copy of ``module`` with conv + batch norm (+ residual) + ReLU folded into fused convolutions
    (conv_fusion.py), and the fusion's report."""
    import copy

    from kiln.engine.conv_fusion import fuse_conv_epilogues

    fused = copy.deepcopy(module)
    return fused, fuse_conv_epilogues(fused)


def _prepare_module(program_path: Path, device: str, precision: Precision, channels_last: bool) -> Any:
    import torch

    from kiln.engine.conv_fusion import register_ops

    register_ops()  # programs built with fuse_conv call kiln's fused-convolution ops
    program = torch.export.load(str(program_path))
    module = program.module()
    module = module.to(device=device, dtype=_torch_dtype(precision))
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module


# With kiln's own CUDA graphs (cuda_graphs.py) the compiled code must not capture graphs itself.
_WITHOUT_CUDAGRAPHS = {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}


def _compile(
    module: Any, mode: str, freezing: bool = False, own_graphs: bool = False, inductor: dict[str, Any] | None = None
) -> Any:
    import torch

    if mode == "none":
        return module
    for key, value in (inductor or {}).items():
        # e.g. {"conv_1x1_as_mm": true}: recorded in the manifest, applied at build and load alike
        if not hasattr(torch._inductor.config, key):
            raise KilnError(f"unknown inductor setting {key!r} in the build option 'inductor'")
        setattr(torch._inductor.config, key, value)
    if own_graphs:
        mode = _WITHOUT_CUDAGRAPHS.get(mode, mode)
    torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
    # freezing folds weights in as constants (batch-norm folding, weight pre-packing) but inductor
    # then bypasses its graph cache, so the artifact cannot carry a warm-start cache: opt-in.
    torch._inductor.config.freezing = freezing
    return torch.compile(module, mode=mode, dynamic=False, fullgraph=False)


@register_backend
class TorchBackend(Backend):
    name = "torch"

    def available(self) -> bool:
        return package_version("torch") is not None

    def default_device(self) -> str:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def supported_precisions(self, device: str) -> list[Precision]:
        if device == "cuda":
            return [Precision.FP32, Precision.FP16, Precision.BF16]
        return [Precision.FP32, Precision.BF16, Precision.FP16]

    def compatibility(self, device: str) -> dict[str, Any]:
        import torch

        facts: dict[str, Any] = {"backend": self.name, "torch": torch.__version__, "device": device}
        if device == "cuda":
            if not torch.cuda.is_available():
                facts["gpu"] = None
                return facts
            gpu = gpu_info()[0]
            facts.update(gpu=gpu["name"], compute_capability=gpu["compute_capability"], cuda=torch.version.cuda)
        else:
            facts["cpu_isa"] = cpu_info()["isa"]
        return facts

    def build(self, source: LoadedSource, request: BuildRequest, workdir: Path, reporter: Reporter) -> BuildResult:
        import torch

        self.check_precision(request.precision, request.device)
        if source.module is None:
            raise KilnError("the torch backend builds from timm:/kiln: models", hint="use --backend onnxruntime for ONNX files")
        if request.device == "cuda" and not torch.cuda.is_available():
            raise KilnError("--device cuda was asked for but torch sees no CUDA GPU")
        _, height, width = request.preprocessing.input_size
        # image H/W are fixed here: each compiled batch size gets its own kernels and CUDA graph
        inputs = source.custom_inputs or [
            image_input(INPUT_NAME, height, width, dynamic_hw=False, input_format=request.preprocessing.input_format)
        ]
        sizes_by_dim = source.sizes(request.preprocessing)
        fuse_conv = bool(request.options.get("fuse_conv", False))
        module, fusion = _conv_fused(source.module) if fuse_conv else (source.module, None)
        with reporter.task("export torch program", total=1) as task:
            with torch.no_grad():
                program = torch.export.export(
                    module,
                    example_tensors(inputs, sizes_by_dim),
                    dynamic_shapes=dynamic_shapes(inputs, max_batch=max(request.batch.max, 2)),
                )
            torch.export.save(program, str(workdir / PROGRAM))
            task.advance()
        mode = str(request.options.get("compile") or default_compile_mode(request.device))
        channels_last = bool(request.options.get("channels_last", True))
        freezing = bool(request.options.get("freezing", False))
        files = [PROGRAM]
        sizes = request.batch.sizes()
        compile_started = time.perf_counter()
        with reporter.task(f"compile ({mode}) for batch sizes {sizes}", total=len(sizes)) as task:
            runner_outputs = _warm(
                workdir / PROGRAM, request.device, request.precision, channels_last, mode, inputs, sizes_by_dim, sizes,
                task, freezing, request.options.get("inductor"),
            )
            if mode != "none":
                artifacts = torch.compiler.save_cache_artifacts()
                if artifacts is not None:
                    (workdir / COMPILE_CACHE).write_bytes(artifacts[0])
                    files.append(COMPILE_CACHE)
        compile_seconds = time.perf_counter() - compile_started
        out_dtype = "float32"
        outputs = [
            TensorSpec(name=name, dtype=out_dtype, shape=[-1, *list(shape[1:])])
            for name, shape in zip(source.output_names, runner_outputs, strict=True)
        ]
        return BuildResult(
            files=files,
            inputs=[spec.tensor_spec() for spec in inputs],
            outputs=outputs,
            options={
                "compile": mode,
                "channels_last": channels_last,
                "freezing": freezing,
                "fuse_conv": fuse_conv,
                **({"conv_fusion": fusion.as_dict()} if fusion is not None else {}),
                "inductor": dict(request.options.get("inductor") or {}),
                **({"cudnn_benchmark_limit": int(request.options["cudnn_benchmark_limit"])}
                   if request.options.get("cudnn_benchmark_limit") is not None else {}),
                "compile_seconds": round(compile_seconds, 2),
                "compute_dtype": _DTYPES[request.precision],
                "input_dims": [spec.model_dump() for spec in inputs],
                "example_sizes": sizes_by_dim,
            },
        )

    def create_runner(self, directory: Path, manifest: EngineManifest, **options: Any) -> Runner:
        return TorchRunner(directory, manifest, **options)


@contextlib.contextmanager
def _cudnn_benchmark_limit(limit: int | None) -> Iterator[None]:
    """cuDNN plans timed per convolution shape while an engine warms up (0: all; None: torch's default, 10).
    The setting is process-wide, so it is set for this engine's warm-up only (under the compile lock) and put
    back after; cuDNN keeps the plan it chose per shape for the process, whichever engine timed it first."""
    import torch

    previous = torch.backends.cudnn.benchmark_limit
    torch.backends.cudnn.benchmark_limit = 10 if limit is None else int(limit)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark_limit = previous


def _warm(
    program: Path,
    device: str,
    precision: Precision,
    channels_last: bool,
    mode: str,
    inputs: list[InputSpec],
    dims: dict[str, int],
    sizes: list[int],
    task: Any,
    freezing: bool,
    inductor: dict[str, Any] | None = None,
) -> list[tuple[int, ...]]:
    import torch

    # compile exactly as the runner will (same mode, with or without kiln's own CUDA graphs), so the
    # compile cache saved in the artifact is what a later load looks up
    own_graphs = device == "cuda" and all(all(isinstance(d, int) for d in spec.dims[1:]) for spec in inputs)
    with _COMPILE_LOCK:
        module = _compile(_prepare_module(program, device, precision, channels_last), mode, freezing, own_graphs, inductor)
        shapes: list[tuple[int, ...]] = []
        with torch.inference_mode():
            for size in sizes:
                result = module(*_examples(inputs, dims, size, device, _torch_dtype(precision)).values())
                values = result if isinstance(result, (tuple, list)) else (result,)
                shapes = [tuple(v.shape) for v in values]
                task.advance()
    return shapes


class TorchRunner(Runner):
    """One engine instance. On GPU it runs on its own CUDA stream; inputs are padded up to the next
    batch size that was compiled (each has its own CUDA graph), so no request triggers a recompile."""

    def __init__(
        self, directory: Path, manifest: EngineManifest, compile: str | None = None, use_compile_cache: bool = True, **_: Any
    ) -> None:
        super().__init__(directory, manifest)
        self.use_compile_cache = use_compile_cache
        self.mode = compile or str(manifest.build_options.get("compile", "none"))
        self.sizes = manifest.batch.sizes()
        self.load_seconds = 0.0
        self.warmup_seconds = 0.0
        self._module: Any = None
        self._graphs: CudaGraphExecutor | None = None
        self._stream: Any = None
        self._staging: dict[tuple[str, tuple[int, ...], str], Any] = {}
        self._dtype: Any = None
        self._inputs = [InputSpec.model_validate(d) for d in manifest.build_options.get("input_dims", [])]
        self._example_sizes = dict(manifest.build_options.get("example_sizes", {}))
        self._input_names = [spec.name for spec in manifest.inputs]
        self._output_names = [o.name for o in manifest.outputs]

    @property
    def device(self) -> str:
        return self.manifest.device

    def activate_impl(self) -> None:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise KilnError("this engine needs a CUDA GPU and torch sees none")
        start = time.perf_counter()
        cache = self.directory / COMPILE_CACHE
        self._dtype = _torch_dtype(self.manifest.precision)
        use_graphs = self._graphs_possible()
        with _COMPILE_LOCK:
            # instances of one engine in one process share weights and compiled code; each keeps
            # its own stream and CUDA graphs
            key = (str(self.directory.resolve()), self.manifest.cache_key, self.mode, use_graphs)
            shared = _SHARED_MODULES.get(key)
            if shared is None:
                if self.mode != "none" and cache.is_file() and self.use_compile_cache:
                    torch.compiler.load_cache_artifacts(cache.read_bytes())
                module = _prepare_module(
                    self.directory / PROGRAM, self.device, self.manifest.precision,
                    bool(self.manifest.build_options.get("channels_last", True)),
                )
                shared = _compile(
                    module, self.mode, bool(self.manifest.build_options.get("freezing", False)), own_graphs=use_graphs,
                    inductor=self.manifest.build_options.get("inductor"),
                )
                _SHARED_MODULES[key] = shared
            self._module = shared
        self.load_seconds = time.perf_counter() - start
        if self.device == "cuda":
            # shapes are fixed per bucket: let cuDNN time its algorithms once and keep the fastest
            torch.backends.cudnn.benchmark = True
            self._stream = torch.cuda.Stream()
        start = time.perf_counter()
        limit = self.manifest.build_options.get("cudnn_benchmark_limit")
        planning = _cudnn_benchmark_limit(limit) if self.device == "cuda" else contextlib.nullcontext()
        with _COMPILE_LOCK, torch.inference_mode(), planning:
            examples = {
                size: _examples(self._inputs, self._example_sizes, size, self.device, self._dtype) for size in self.sizes
            }
            if use_graphs:
                self._graphs = CudaGraphExecutor(self._forward, self._stream)
                self._graphs.capture(examples, self._input_names)
            else:
                for example in examples.values():
                    self._run(example)
        if self.device == "cuda":
            torch.cuda.synchronize()
        self.warmup_seconds = time.perf_counter() - start

    def _graphs_possible(self) -> bool:
        """Own CUDA graphs: on GPU, compiled, with every input dimension but the batch fixed."""
        if self.device != "cuda" or self.mode == "none" or not self.manifest.build_options.get("cuda_graphs", True):
            return False
        return all(all(isinstance(d, int) for d in spec.dims[1:]) for spec in self._inputs)

    def _forward(self, *args: Any) -> Any:
        import torch

        if bool(self.manifest.build_options.get("channels_last", True)):
            args = tuple(a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 and a.is_floating_point() else a for a in args)
        return self._module(*args)

    def _run(self, inputs: dict[str, Any]) -> list[Any]:
        import torch

        args = [inputs[name] for name in self._input_names]
        if self.device == "cuda" and bool(self.manifest.build_options.get("channels_last", True)):
            args = [a.contiguous(memory_format=torch.channels_last) if a.dim() == 4 and a.is_floating_point() else a for a in args]
        result = self._module(*args)
        values = result if isinstance(result, (tuple, list)) else (result,)
        return list(values)

    def _on_stream(self) -> Any:
        """Run on this instance's CUDA stream, after whatever the caller's stream queued before."""
        import contextlib

        import torch

        if self._stream is None:
            return contextlib.nullcontext()
        self._stream.wait_stream(torch.cuda.current_stream())
        return torch.cuda.stream(self._stream)

    def padded_size(self, n: int) -> int:
        index = bisect.bisect_left(self.sizes, n)
        return self.sizes[index] if index < len(self.sizes) else n

    def _infer_on_stream(self, inputs: dict[str, Any]) -> dict[str, Any]:
        import torch

        n = next(iter(inputs.values())).shape[0]
        if self._graphs is not None and self._graphs.size_for(n) is not None:
            with torch.inference_mode():
                values = self._graphs.run(inputs, n)
                # copies: the graph's output buffers are overwritten by its next replay
                return {
                    name: v.float() if v.dtype != torch.float32 else v.clone()
                    for name, v in zip(self._output_names, values, strict=True)
                }
        size = self.padded_size(n)
        prepared = {}
        for name, tensor in inputs.items():
            dtype = self._dtype if tensor.is_floating_point() else None
            tensor = tensor.to(device=self.device, dtype=dtype, non_blocking=True)
            if size != n:
                pad = torch.zeros((size - n, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
                tensor = torch.cat([tensor, pad])
            prepared[name] = tensor
        with torch.inference_mode():
            values = self._run(prepared)
            # clone: a CUDA graph's outputs are overwritten by its next replay
            return {
                name: v[:n].float() if v.dtype != torch.float32 else v[:n].clone()
                for name, v in zip(self._output_names, values, strict=True)
            }

    def infer_tensors(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Tensors in (any device), float32 device tensors out, for GPU-resident pipelines.

        The work is queued on this instance's stream after the caller's stream; before using the
        outputs on another stream, wait for ``runner.stream`` (``torch.cuda.current_stream().wait_stream``).
        """
        with self._on_stream():
            return self._infer_on_stream(inputs)

    @property
    def stream(self) -> Any:
        return self._stream

    @property
    def stages_inputs(self) -> bool:
        """Inputs go through reused page-locked buffers (on a GPU: the copy to the device is then
        asynchronous and fast)."""
        return self.device == "cuda"

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        tensors = {name: torch.from_numpy(array) for name, array in inputs.items()}
        if self.stages_inputs:
            tensors = {name: self._staged(name, t) for name, t in tensors.items()}
        with self._on_stream():
            outputs = self._infer_on_stream(tensors)
            # .cpu() on this stream waits for this stream's work only
            return {name: v.cpu().numpy() for name, v in outputs.items()}

    def gather_impl(self, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Writes the parts straight into the staging buffers, which ``infer_impl`` then reads in
        place: one host copy per batch instead of two (join, then stage)."""
        if not self.stages_inputs:
            return super().gather_impl(parts)
        import torch

        gathered = {}
        for name in parts[0]:
            first = parts[0][name]
            rows = sum(part[name].shape[0] for part in parts)
            target = self._staging_buffer(name, tuple(first.shape[1:]), torch.from_numpy(first[:0]).dtype, rows)[:rows]
            offset = 0
            for part in parts:
                array = part[name]
                if any(stride < 0 for stride in array.strides):  # torch takes no negative strides (np.flip)
                    array = np.ascontiguousarray(array)
                target[offset:offset + array.shape[0]].copy_(torch.from_numpy(array))
                offset += array.shape[0]
            gathered[name] = target.numpy()
        return gathered

    def _staging_buffer(self, name: str, row_shape: tuple[int, ...], dtype: Any, rows: int) -> Any:
        """A reused page-locked buffer per input and row shape, as many rows as the largest batch:
        batches of any size reuse it (allocating page-locked memory costs milliseconds, too much per
        batch). ``infer_impl`` ends with a synchronous copy out, so the last copy from it is done."""
        import torch

        key = (name, row_shape, str(dtype))
        buffer = self._staging.get(key)
        if buffer is None or buffer.shape[0] < rows:
            if len(self._staging) > 32:
                self._staging.clear()
            capacity = max(rows, self.sizes[-1] if self.sizes else rows)
            buffer = self._staging[key] = torch.empty((capacity, *row_shape), dtype=dtype, pin_memory=self.device == "cuda")
        return buffer

    def _staged(self, name: str, tensor: Any) -> Any:
        """``tensor`` in its staging buffer: copied there, or as it is when ``gather_impl`` put it there."""
        rows = tensor.shape[0] if tensor.dim() else 0
        buffer = self._staging_buffer(name, tuple(tensor.shape[1:]), tensor.dtype, rows)
        target = buffer[:rows]
        if tensor.data_ptr() != buffer.data_ptr():
            target.copy_(tensor)
        return target

    def deactivate_impl(self) -> None:
        self._module = None
        self._graphs = None
        self._stream = None
        self._staging.clear()


def compile_cache_env(root: Path) -> None:
    """Point inductor's on-disk caches at kiln's cache folder (set before the first compile)."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(root / "inductor"))
