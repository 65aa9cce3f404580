"""Open Inference Protocol conformance with the official clients: tritonclient.http and tritonclient.grpc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.engine.loader import load_engine

from .conftest import Engines, LiveServer, free_port

http = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402


def _client(protocol: str, server: LiveServer) -> Any:
    if protocol == "http":
        return http.InferenceServerClient(server.http_url)
    return grpcclient.InferenceServerClient(server.grpc_url)


def _module(protocol: str) -> Any:
    return http if protocol == "http" else grpcclient


def _infer(protocol: str, client: Any, model: str, x: np.ndarray, datatype: str, name: str = "x", binary: bool = True, out: str = "y") -> np.ndarray:
    mod = _module(protocol)
    tensor = mod.InferInput(name, list(x.shape), datatype)
    if protocol == "http":
        tensor.set_data_from_numpy(x, binary_data=binary)
        outputs = [mod.InferRequestedOutput(out, binary_data=binary)]
    else:
        tensor.set_data_from_numpy(x)
        outputs = [mod.InferRequestedOutput(out)]
    return client.infer(model, [tensor], outputs=outputs).as_numpy(out)  # type: ignore[no-any-return]


PROTOCOLS = ["http", "grpc"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_health_and_metadata(live_server: LiveServer, protocol: str) -> None:
    client = _client(protocol, live_server)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("image") and client.is_model_ready("image", "1")
    assert not client.is_model_ready("broken")
    meta = client.get_server_metadata()
    meta = meta if isinstance(meta, dict) else {"name": meta.name, "extensions": list(meta.extensions)}
    assert meta["name"] == "kiln" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("image")
    if protocol == "grpc":
        inputs = [(t.name, t.datatype, list(t.shape)) for t in model.inputs]
        outputs = [(t.name, t.datatype, list(t.shape)) for t in model.outputs]
    else:
        inputs = [(t["name"], t["datatype"], t["shape"]) for t in model["inputs"]]
        outputs = [(t["name"], t["datatype"], t["shape"]) for t in model["outputs"]]
    assert inputs == [("input", "FP32", [-1, 3, -1, -1])]
    assert outputs == [("logits", "FP32", [-1, 3])]
    config = client.get_model_config("image")
    max_batch = config.config.max_batch_size if protocol == "grpc" else config["max_batch_size"]
    assert max_batch == 8
    index = client.get_model_repository_index()
    rows = {m.name: m.state for m in index.models} if protocol == "grpc" else {m["name"]: m["state"] for m in index}
    assert rows["image"] == "READY" and rows["broken"] == "UNAVAILABLE"


# tritonclient.grpc always sends raw tensors, so JSON tensors exist over HTTP only
WIRE_FORMATS = [("http", True), ("http", False), ("grpc", True)]


@pytest.mark.parametrize(("protocol", "binary"), WIRE_FORMATS)
def test_fp32_outputs_equal_the_engine(live_server: LiveServer, engines: Engines, protocol: str, binary: bool) -> None:
    client = _client(protocol, live_server)
    x = np.random.default_rng(3).standard_normal((3, 3, 32, 32)).astype(np.float32)
    got = _infer(protocol, client, "image", x, "FP32", name="input", binary=binary, out="logits")
    with load_engine(engines.image) as runner:
        want = runner.infer({"input": x})["logits"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_fp16_and_int64_tensors(live_server: LiveServer, protocol: str) -> None:
    client = _client(protocol, live_server)
    half = np.linspace(-2, 2, 8, dtype=np.float16).reshape(2, 4)
    got = _infer(protocol, client, "half", half, "FP16")
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, half + np.float16(1))
    long = np.arange(-6, 6, dtype=np.int64).reshape(4, 3) * (1 << 40)
    got = _infer(protocol, client, "long", long, "INT64")
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, long * 3)
    if protocol == "http":
        got = _infer(protocol, client, "long", long, "INT64", binary=False)
        np.testing.assert_array_equal(got, long * 3)


@pytest.mark.parametrize(("protocol", "binary"), WIRE_FORMATS)
def test_bytes_tensors(live_server: LiveServer, protocol: str, binary: bool) -> None:
    client = _client(protocol, live_server)
    words = np.array([["kiln", "fire"], ["", "ünïcode"]], dtype=np.object_)
    got = _infer(protocol, client, "text", words, "BYTES", binary=binary)
    assert [w.decode() if isinstance(w, bytes) else w for w in got.ravel()] == list(words.ravel())


def _status(exc: InferenceServerException) -> str:
    return str(exc.status())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_requests_get_client_errors(live_server: LiveServer, protocol: str) -> None:
    client = _client(protocol, live_server)
    x = np.zeros((1, 3), dtype=np.int64)
    expectations = [
        (lambda: _infer(protocol, client, "nope", x, "INT64"), "404", "StatusCode.NOT_FOUND", "unknown model"),
        (lambda: client.infer("long", [], model_version="9"), "404", "StatusCode.NOT_FOUND", "no version"),
        (lambda: _infer(protocol, client, "long", np.zeros((1, 3), np.int32), "INT32"), "400", "StatusCode.INVALID_ARGUMENT", "does not match"),
        (lambda: _infer(protocol, client, "long", np.zeros((1, 5), np.int64), "INT64"), "400", "StatusCode.INVALID_ARGUMENT", "shape [1, 5]"),
        (lambda: _infer(protocol, client, "long", np.zeros((9, 3), np.int64), "INT64"), "400", "StatusCode.INVALID_ARGUMENT", "exceeds max_batch_size"),
        (lambda: _infer(protocol, client, "half", np.zeros((300, 4), np.float16), "FP16"), "413", "StatusCode.RESOURCE_EXHAUSTED", "over the limit"),
    ]
    for call, http_status, grpc_status, needle in expectations:
        with pytest.raises(InferenceServerException) as info:
            call()
        assert needle in info.value.message(), info.value.message()
        if protocol == "grpc":
            assert _status(info.value) == grpc_status
        elif info.value.status() is not None:
            assert _status(info.value) == http_status


def test_grpc_byte_count_mismatch_is_invalid_argument(live_server: LiveServer) -> None:
    client = grpcclient.InferenceServerClient(live_server.grpc_url)
    tensor = grpcclient.InferInput("x", [2, 3], "INT64")
    tensor.set_data_from_numpy(np.zeros((2, 3), np.int64))
    tensor._raw_content = tensor._raw_content[:-8]  # what a buggy client would send
    with pytest.raises(InferenceServerException) as info:
        client.infer("long", [tensor])
    assert _status(info.value) == "StatusCode.INVALID_ARGUMENT"
    assert "40 bytes of binary data" in info.value.message()


def test_http_binary_byte_count_mismatch_is_400(live_server: LiveServer) -> None:
    import httpx

    header = b'{"inputs":[{"name":"x","shape":[2,3],"datatype":"INT64","parameters":{"binary_data_size":40}}]}'
    response = httpx.post(
        f"http://{live_server.http_url}/v2/models/long/infer",
        content=header + b"\0" * 40,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 400
    assert "40 bytes of binary data, but INT64[2, 3] needs 48" in response.json()["error"]


@pytest.mark.slow
def test_kiln_serve_end_to_end_subprocess(repo: Path) -> None:
    """The real command: starts, becomes ready, answers tritonclient, stops gracefully on SIGTERM."""
    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    process = subprocess.Popen(
        [sys.executable, "-m", "kiln", "serve", "--repo", str(repo), "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        client = http.InferenceServerClient(f"127.0.0.1:{http_port}")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if client.is_server_ready():
                    break
            except Exception:  # connection refused while the server starts
                pass
            assert process.poll() is None, "kiln serve exited early"
            time.sleep(0.2)
        else:
            pytest.fail("kiln serve did not become ready")
        x = np.arange(6, dtype=np.int64).reshape(2, 3)
        np.testing.assert_array_equal(_infer("http", client, "long", x, "INT64"), x * 3)
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        np.testing.assert_array_equal(_infer("grpc", g, "long", x, "INT64"), x * 3)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            output = process.communicate(timeout=30)[0].decode()
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    # uvicorn re-raises the signal once shutdown is complete, so the exit status is "killed by SIGTERM".
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output, "graceful shutdown: queues drained, apps stopped"
    assert '"path": "/v2/models/long/infer", "status": 200' in output, "access log line with the request"
