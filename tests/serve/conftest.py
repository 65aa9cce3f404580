"""Tiny engines built with kiln's own toolkit, model repositories, and a live server for clients."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kiln.engine.artifact import EngineCache
from kiln.engine.build import BuildSettings, build_engine
from kiln.engine.spec import BatchProfile, ModelSource
from tests.live_server import wait_until_ready


def _onnx_graph(path: Path, op: str, dtype: int, width: int, constant: Any) -> Path:
    """y = x <op> constant over a [batch, width] tensor (dynamic batch)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    x = helper.make_tensor_value_info("x", dtype, ["batch", width])
    y = helper.make_tensor_value_info("y", dtype, ["batch", width])
    const = numpy_helper.from_array(np.asarray(constant), name="c")
    graph = helper.make_graph([helper.make_node(op, ["x", "c"], ["y"])], "g", [x], [y], initializer=[const])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _string_identity(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.STRING, ["batch", 2])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, ["batch", 2])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@dataclass
class Engines:
    image: Path  # timm test_resnet: input FP32 [-1,3,32,32] → logits FP32 [-1,3]
    half: Path  # FP16 [-1,4] → x + 1
    long: Path  # INT64 [-1,3] → x * 3
    text: Path  # BYTES (ONNX string) [-1,2] → identity


@pytest.fixture(scope="session")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Engines:
    import numpy as np
    from onnx import TensorProto

    root = tmp_path_factory.mktemp("serve-engines")
    cache = EngineCache(root / "cache")
    batch = BatchProfile(min=1, opt=4, max=8)

    def build(source: str, name: str, **extra: Any) -> Path:
        settings = BuildSettings(source=ModelSource.parse(source), batch=batch, name=name, **extra)
        return build_engine(settings, cache=cache, output=root / name).path

    half_onnx = _onnx_graph(root / "half.onnx", "Add", TensorProto.FLOAT16, 4, np.float16(1.0))
    long_onnx = _onnx_graph(root / "long.onnx", "Mul", TensorProto.INT64, 3, np.int64(3))
    text_onnx = _string_identity(root / "text.onnx")
    return Engines(
        image=build("timm:test_resnet?num_classes=3", "image", input_size=(32, 32)),
        half=build(str(half_onnx), "half"),
        long=build(str(long_onnx), "long"),
        text=build(str(text_onnx), "text"),
    )


def add_model(repo: Path, name: str, engine: Path, config: dict[str, Any] | None = None, version: int = 1) -> Path:
    target = repo / name / str(version)
    shutil.copytree(engine, target)
    if config is not None:
        (repo / name / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return target


@pytest.fixture
def repo(tmp_path: Path, engines: Engines) -> Path:
    """image (batches up to 8, waits up to 0.2 s for company), half, long, and a broken model."""
    root = tmp_path / "repo"
    add_model(root, "image", engines.image, {"max_batch_size": 8, "max_queue_delay_us": 200_000, "instances": 1})
    add_model(root, "half", engines.half, {"max_queue_delay_us": 0, "limits": {"max_request_bytes": 4096, "max_tensor_elements": 400}})
    add_model(root, "long", engines.long)
    add_model(root, "text", engines.text)
    broken = add_model(root, "broken", engines.long)
    (broken / "model.opt.onnx").write_bytes(b"not an onnx model")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    http_url: str
    grpc_url: str
    repo: Path


@pytest.fixture
def live_server(repo: Path) -> Iterator[LiveServer]:
    """``kiln serve`` (HTTP + gRPC) on free loopback ports, in a thread of this process."""
    from kiln.serve.process import ServeOptions, serve

    options = ServeOptions(repo=repo, http_port=free_port(), grpc_port=free_port(), access_log=False)
    holder: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(serve(options, on_started=lambda server: holder.setdefault("server", server)))
        except BaseException as exc:  # surfaced by the fixture below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    wait_until_ready(f"http://127.0.0.1:{options.http_port}", errors, seconds=60, request_timeout=1)
    try:
        yield LiveServer(f"127.0.0.1:{options.http_port}", f"127.0.0.1:{options.grpc_port}", repo)
    finally:
        holder["server"].should_exit = True
        thread.join(30)
