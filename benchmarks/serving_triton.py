"""The Triton side of benchmarks/serving.py: the same ONNX Runtime engine behind NVIDIA Triton (PyTriton).

Runs in its own interpreter (PyTriton needs numpy<2, kiln's environment has numpy 2):
    VENV/bin/python benchmarks/serving_triton.py --onnx ENGINE/model.opt.onnx --http-port P --grpc-port Q
Binds 127.0.0.1 only. The model is served as "batched" with Triton's dynamic batcher.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--delay-us", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--no-spin", action="store_true", help="ORT intra-op threads sleep between calls (as kiln's spin: false)")
    parser.add_argument("--input-name", default="input")
    parser.add_argument("--output-name", default="logits")
    parser.add_argument("--input-shape", required=True, help="without the batch dimension, e.g. 3x32x32")
    parser.add_argument("--output-shape", required=True, help="without the batch dimension, e.g. 10")
    args = parser.parse_args()

    import numpy as np
    import onnxruntime as ort
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    if args.threads:
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
    if args.no_spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(args.onnx, sess_options=options, providers=["CPUExecutionProvider"])

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        x = inputs[args.input_name]
        (y,) = session.run([args.output_name], {args.input_name: x})
        return {args.output_name: y}

    in_shape = tuple(int(d) for d in args.input_shape.split("x"))
    out_shape = tuple(int(d) for d in args.output_shape.split("x"))
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_address="127.0.0.1",
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
    )
    logging.basicConfig(level=logging.WARNING)
    with Triton(config=config) as triton:
        triton.bind(
            model_name="batched",
            infer_func=infer,
            inputs=[Tensor(name=args.input_name, dtype=np.float32, shape=in_shape)],
            outputs=[Tensor(name=args.output_name, dtype=np.float32, shape=out_shape)],
            config=ModelConfig(max_batch_size=args.max_batch, batcher=DynamicBatcher(max_queue_delay_microseconds=args.delay_us)),
        )
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        triton.serve()


if __name__ == "__main__":
    # PyTriton's bundled Triton needs the interpreter's libpython on the library path
    # (otherwise it fails with a "_recursion_count" error): re-exec once with it set.
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    if libdir and libdir not in os.environ.get("LD_LIBRARY_PATH", "").split(":"):
        os.environ["LD_LIBRARY_PATH"] = ":".join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)
        os.execv(sys.executable, [sys.executable, *sys.argv])
    main()
