"""ONNX Runtime backend: full graph optimisation, FP32, FP16 (GPU providers) and INT8 QDQ."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from kiln.engine.backends.base import Backend, BuildRequest, BuildResult, Runner, register_backend
from kiln.engine.calibrate import (
    ArrayCalibrationReader,
    ImageCalibrationReader,
    calibration_files,
    files_digest,
)
from kiln.engine.export import export_onnx
from kiln.engine.hardware import cpu_info, int8_reduce_range, package_version
from kiln.engine.inputs import InputSpec, is_image_model
from kiln.engine.manifest import CalibrationInfo, EngineManifest, TensorSpec
from kiln.engine.source import LoadedSource, external_data_files
from kiln.engine.spec import CalibrationMethod, Precision
from kiln.errors import KilnError
from kiln.progress import Reporter

log = logging.getLogger(__name__)

PORTABLE_FP32 = "model.onnx"  # exported graph, any runtime (also the FP32 reference)
PORTABLE_QDQ = "model.qdq.onnx"  # INT8 QDQ graph: what TensorRT's builder consumes
PORTABLE_FP16 = "model.fp16.onnx"
OPTIMIZED = "model.opt.onnx"  # optimised for this machine's provider and ISA: what the runner loads

_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
    "tensor(bfloat16)": "bfloat16",
    "tensor(string)": "object",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
}

_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    chosen = [p for p in _GPU_PROVIDERS if p in available]
    if not chosen:
        raise KilnError(
            "device cuda needs an onnxruntime build with the CUDA or TensorRT execution provider",
            hint="pip install onnxruntime-gpu (this onnxruntime has: " + ", ".join(available) + ")",
        )
    return [*chosen, "CPUExecutionProvider"]


def _tensor_specs(values: list[Any]) -> list[TensorSpec]:
    specs = []
    for value in values:
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (value.shape or [])]
        specs.append(TensorSpec(name=value.name, dtype=_ORT_TYPES.get(value.type, value.type), shape=shape))
    return specs


def session_options(threads: int | None, optimized_path: Path | None = None, level: str = "all", spin: bool = True) -> Any:
    """ONNX Runtime session options. ``spin=False`` lets the intra-op threads sleep between calls
    instead of spinning: less CPU taken from the rest of the process on small or shared machines."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    }[level]
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return options


def _quantize_int8(
    fp32_path: Path, out_path: Path, request: BuildRequest, source: LoadedSource, inputs: list[InputSpec], reporter: Reporter
) -> CalibrationInfo:
    from onnxruntime.quantization import CalibrationMethod as OrtCalibration
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = out_path.with_name("model.prep.onnx")
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    if request.calibration_method is CalibrationMethod.DYNAMIC:
        with reporter.task("quantise int8 (dynamic: weights now, activations at run time)", total=1) as task:
            try:
                quantize_dynamic(str(prepared), str(out_path), per_channel=True, weight_type=QuantType.QInt8)
            except Exception as exc:  # onnx shape inference and the quantiser raise many types
                raise KilnError(
                    f"dynamic int8 quantisation failed: {exc}",
                    hint="dynamic suits transformer/text models; for CNNs use --calib DIR with minmax, entropy or percentile",
                ) from exc
            task.advance()
        prepared.unlink(missing_ok=True)
        return CalibrationInfo(method=request.calibration_method, images=0, data_sha256="", per_channel=True, activation_type="dynamic")
    if request.calibration_dir is None:
        raise KilnError(
            "int8 needs calibration data",
            hint="pass --calib DIR (unlabelled images; .npz arrays for non-image models) or --calib-method dynamic",
        )
    image = is_image_model(inputs)
    files = calibration_files(request.calibration_dir, request.calibration_limit, images=image)
    method = {
        CalibrationMethod.MINMAX: OrtCalibration.MinMax,
        CalibrationMethod.ENTROPY: OrtCalibration.Entropy,
        CalibrationMethod.PERCENTILE: OrtCalibration.Percentile,
    }[request.calibration_method]
    reduce_range = int8_reduce_range(request.options.get("reduce_range", "auto"))
    extra: dict[str, Any] = {"ActivationSymmetric": False, "WeightSymmetric": True}
    if request.calibration_method is CalibrationMethod.PERCENTILE:
        extra["CalibPercentile"] = float(request.options.get("calib_percentile", 99.999))
    with reporter.task(f"calibrate int8 ({request.calibration_method.value}, {len(files)} files)", total=len(files)) as task:
        reader: ImageCalibrationReader | ArrayCalibrationReader
        if image:
            # Histogram calibrators stack the collected tensors, so every batch must have the same size.
            batch_size = 8 if request.calibration_method is CalibrationMethod.MINMAX else 1
            reader = ImageCalibrationReader(files, request.preprocessing, inputs[0].name, batch_size=batch_size, task=task)
        else:
            reader = ArrayCalibrationReader(files, [spec.name for spec in inputs], task=task)
        quantize_static(
            str(prepared),
            str(out_path),
            reader,
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=method,
            reduce_range=reduce_range,
            extra_options=extra,
        )
    prepared.unlink(missing_ok=True)
    return CalibrationInfo(
        method=request.calibration_method,
        images=len(files),
        data_sha256=files_digest(files),
        per_channel=True,
        activation_type="uint8",
        weight_type="int8",
        reduce_range=reduce_range,
    )



MAX_INLINE_BYTES = 2_000_000_000  # protobuf's 2 GiB message limit, with room for the graph


def copy_self_contained(source: Path, target: Path) -> None:
    """Copies an ONNX model into the engine as one file; weights kept in external data files are
    pulled in, so the artifact does not depend on files beside the user's model."""

    extra = external_data_files(source)
    if not extra:
        shutil.copyfile(source, target)
        return
    size = sum(p.stat().st_size for p in extra) + source.stat().st_size
    if size > MAX_INLINE_BYTES:
        raise KilnError(f"{source}: {size / 1e9:.1f} GB of weights in external data; engines over 2 GB are not supported yet")
    import onnx

    onnx.save_model(onnx.load(str(source)), str(target), save_as_external_data=False)


@register_backend
class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def available(self) -> bool:
        return package_version("onnxruntime") is not None or package_version("onnxruntime-gpu") is not None

    def default_device(self) -> str:
        import onnxruntime as ort

        return "cuda" if any(p in ort.get_available_providers() for p in _GPU_PROVIDERS) else "cpu"

    def supported_precisions(self, device: str) -> list[Precision]:
        if device == "cpu":
            return [Precision.FP32, Precision.INT8]
        return [Precision.FP32, Precision.FP16, Precision.INT8]

    def compatibility(self, device: str) -> dict[str, Any]:
        facts: dict[str, Any] = {
            "backend": self.name,
            "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
            "device": device,
            "providers": providers_for(device),
        }
        if device == "cpu":
            facts["cpu_isa"] = cpu_info()["isa"]
        else:
            from kiln.engine.hardware import gpu_info

            gpus = gpu_info()
            facts["gpu"] = gpus[0]["name"] if gpus else None
        return facts

    def build(self, source: LoadedSource, request: BuildRequest, workdir: Path, reporter: Reporter) -> BuildResult:
        self.check_precision(request.precision, request.device)
        fp32_path = workdir / PORTABLE_FP32
        if source.onnx_path is not None:
            copy_self_contained(source.onnx_path, fp32_path)
            inputs = source.inputs(request.preprocessing)
        else:
            inputs = export_onnx(source, fp32_path, request.preprocessing, reporter)
        files = [PORTABLE_FP32]
        calibration = None
        runtime_model = fp32_path
        if request.precision is Precision.INT8:
            dynamic = request.calibration_method is CalibrationMethod.DYNAMIC
            runtime_model = workdir / ("model.int8.onnx" if dynamic else PORTABLE_QDQ)
            calibration = _quantize_int8(fp32_path, runtime_model, request, source, inputs, reporter)
            files.append(runtime_model.name)
        elif request.precision is Precision.FP16:
            import onnx
            from onnxruntime.transformers.float16 import convert_float_to_float16

            runtime_model = workdir / PORTABLE_FP16
            onnx.save(convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True), str(runtime_model))
            files.append(PORTABLE_FP16)

        import onnxruntime as ort

        threads = request.options.get("threads")
        with reporter.task("optimise graph for this machine", total=1) as task:
            session = ort.InferenceSession(
                str(runtime_model),
                sess_options=session_options(threads, workdir / OPTIMIZED),
                providers=providers_for(request.device),
            )
            task.advance()
        files.append(OPTIMIZED)
        return BuildResult(
            files=files,
            inputs=[spec.tensor_spec() for spec in inputs],
            outputs=_tensor_specs(session.get_outputs()),
            calibration=calibration,
            options={
                "runtime_model": OPTIMIZED,
                "portable_model": runtime_model.name,
                "input_dims": [spec.model_dump() for spec in inputs],
                "example_sizes": source.sizes(request.preprocessing),
            },
        )

    def create_runner(self, directory: Path, manifest: EngineManifest, **options: Any) -> Runner:
        return OnnxRuntimeRunner(directory, manifest, **options)

    def serving_options(self, device: str) -> dict[str, Any]:
        # A server's CPU engines share the cores with the event loop and each other: intra-op threads that
        # spin after every call burn CPU those need (docs/reliability.md: 3.2 vs 2.3 ms of server CPU per
        # request of the soak mix in closed loop). Spinning only pays on cores kept for one model;
        # ``"spin": true`` in a model's engine_options brings it back.
        return {"spin": False} if device == "cpu" else {}


class OnnxRuntimeRunner(Runner):
    def __init__(self, directory: Path, manifest: EngineManifest, threads: int | None = None, spin: bool = True, **_: Any) -> None:
        super().__init__(directory, manifest)
        self.threads = threads or int(os.environ.get("KILN_ORT_THREADS", "0")) or None
        self.spin = spin
        self._session: Any = None
        self._output_names: list[str] = []

    def activate_impl(self) -> None:
        import onnxruntime as ort

        path = self.directory / self.manifest.build_options.get("runtime_model", OPTIMIZED)
        try:
            self._session = ort.InferenceSession(
                str(path), sess_options=session_options(self.threads, level="all", spin=self.spin), providers=providers_for(self.manifest.device)
            )
        except Exception as exc:  # ORT raises its own exception types for a bad model file
            raise KilnError(f"onnxruntime could not load {path}: {exc}", hint="rebuild the engine") from exc
        self._output_names = [o.name for o in self._session.get_outputs()]

    def infer_impl(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self._session.run(self._output_names, inputs)
        return dict(zip(self._output_names, values, strict=True))

    def deactivate_impl(self) -> None:
        self._session = None
