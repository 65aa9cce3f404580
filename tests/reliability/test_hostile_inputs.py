"""Every hostile input of the corpus gets a 4xx JSON error naming the problem; the server keeps serving."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest

from .conftest import Server
from .corpus import BadInput, corpus, photo

CORPUS = corpus()


def _good_infer(client: Any) -> None:
    response = client.post("/v2/models/long/infer", json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]})
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [3, 6, 9]


@pytest.mark.parametrize("bad", CORPUS, ids=[b.id for b in CORPUS])
def test_bad_input_gets_a_4xx_json_error(server: Server, bad: BadInput) -> None:
    with server.client() as client:
        response = client.request(bad.method, bad.path, **bad.make())
        assert 400 <= response.status_code < 500, f"{bad.id}: {response.status_code} {response.text[:300]}"
        if bad.statuses:
            assert response.status_code in bad.statuses, f"{bad.id}: {response.status_code} {response.text[:300]}"
        assert response.headers["content-type"].startswith("application/json"), response.headers
        message = response.json()["error"]
        assert isinstance(message, str) and message and len(message) <= 2000, response.text[:300]
        assert "Traceback" not in message and "internal server error" not in message
        assert client.get("/v2/health/live").status_code == 200


def test_corpus_covers_every_category_and_entry_point() -> None:
    categories = {b.category for b in CORPUS}
    for needed in ("truncated/corrupted images", "decompression bombs", "polyglots", "wrong content types", "huge JSON",
                   "NaN/Inf tensors", "wrong binary lengths", "invalid UTF-8", "deeply nested JSON", "too many files",
                   "long strings", "bad query/path"):
        assert needed in categories, needed
    paths = {b.path.split("?")[0] for b in CORPUS}
    for entry in ("/v2/models/long/infer", "/v1/authenticate", "/v1/references", "/v1/packaging/recommend",
                  "/v1/packaging/images", "/v1/cases"):
        assert entry in paths, entry


def test_server_still_serves_after_the_corpus(server: Server) -> None:
    with server.client() as client:
        for bad in CORPUS[::7]:  # a second pass over part of the corpus, interleaved with good requests
            client.request(bad.method, bad.path, **bad.make())
            _good_infer(client)
        files = [("images", ("logo.jpg", photo(96), "image/jpeg"))]
        response = client.post("/v1/authenticate", files=files, data={"views": "logo", "brand": "Acme", "model": "Tote"})
        assert response.status_code == 200, response.text
        assert response.json()["case_id"]
        assert client.get("/v2/health/ready").status_code == 200
        index = {row["name"]: row["state"] for row in client.post("/v2/repository/index").json()}
        assert index["long"] == index["image"] == index["authenticity"] == "READY"


# --- gRPC ----------------------------------------------------------------------------------------
def _grpc_cases() -> list[tuple[str, Any, grpc.StatusCode]]:
    from kiln.serve.protos import grpc_service_pb2 as pb

    def request(model: str = "long", datatype: str = "INT64", shape: tuple[int, ...] = (1, 3), raw: bytes | None = None,
                **extra: Any) -> Any:
        message = pb.ModelInferRequest(model_name=model, **extra)
        tensor = message.inputs.add(name="x", datatype=datatype, shape=list(shape))
        if raw is not None:
            message.raw_input_contents.append(raw)
        else:
            tensor.contents.int64_contents.extend([1, 2, 3])
        return message

    raw3 = np.arange(3, dtype=np.int64).tobytes()
    nan = np.zeros((1, 3, 32, 32), np.float32)
    nan[0, 0, 0, 0] = np.nan
    image = pb.ModelInferRequest(model_name="image")
    image.inputs.add(name="input", datatype="FP32", shape=[1, 3, 32, 32])
    image.raw_input_contents.append(nan.tobytes())
    twice = request()
    twice.inputs.add(name="x", datatype="INT64", shape=[1, 3]).contents.int64_contents.extend([1, 2, 3])
    no_inputs = pb.ModelInferRequest(model_name="long")
    return [
        ("unknown-model", request(model="nope"), grpc.StatusCode.NOT_FOUND),
        ("long-model-name", request(model="m" * 10_000), grpc.StatusCode.NOT_FOUND),
        ("bad-version", request(model_version="abc"), grpc.StatusCode.NOT_FOUND),
        ("broken-model", request(model="broken"), grpc.StatusCode.UNAVAILABLE),
        ("no-inputs", no_inputs, grpc.StatusCode.INVALID_ARGUMENT),
        ("duplicate-input", twice, grpc.StatusCode.INVALID_ARGUMENT),
        ("raw-too-short", request(raw=raw3[:20]), grpc.StatusCode.INVALID_ARGUMENT),
        ("raw-too-long", request(raw=raw3 + b"\0" * 8), grpc.StatusCode.INVALID_ARGUMENT),
        ("contents-count", request(shape=(2, 3)), grpc.StatusCode.INVALID_ARGUMENT),
        ("unknown-datatype", request(datatype="INT128"), grpc.StatusCode.INVALID_ARGUMENT),
        ("wrong-datatype", request(datatype="FP32", raw=np.zeros(3, np.float32).tobytes()), grpc.StatusCode.INVALID_ARGUMENT),
        ("negative-shape", request(shape=(-1, 3)), grpc.StatusCode.INVALID_ARGUMENT),
        ("huge-shape", request(shape=(2**40, 2**20)), grpc.StatusCode.RESOURCE_EXHAUSTED),
        ("nan-tensor", image, grpc.StatusCode.INVALID_ARGUMENT),
    ]


GRPC_CASES = _grpc_cases()


@pytest.mark.parametrize(("name", "message", "code"), GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_bad_grpc_request_gets_a_client_error_status(server: Server, name: str, message: Any, code: grpc.StatusCode) -> None:
    from kiln.serve.protos import grpc_service_pb2 as pb

    with grpc.insecure_channel(server.grpc, options=[("grpc.max_send_message_length", 256 << 20)]) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        with pytest.raises(grpc.RpcError) as info:
            infer(message, timeout=30)
        assert info.value.code() == code, (name, info.value.code(), info.value.details())
        assert info.value.details() and len(info.value.details()) <= 2000, name
        live = channel.unary_unary("/inference.GRPCInferenceService/ServerLive", request_serializer=pb.ServerLiveRequest.SerializeToString,
                                   response_deserializer=pb.ServerLiveResponse.FromString)
        assert live(pb.ServerLiveRequest(), timeout=10).live


def test_grpc_message_over_the_limit_is_refused(server: Server) -> None:
    from kiln.serve.protos import grpc_service_pb2 as pb

    message = pb.ModelInferRequest(model_name="long")
    message.inputs.add(name="x", datatype="INT64", shape=[1, 3])
    message.raw_input_contents.append(b"\0" * (70 << 20))
    with grpc.insecure_channel(server.grpc, options=[("grpc.max_send_message_length", 256 << 20)]) as channel:
        infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=pb.ModelInferRequest.SerializeToString,
                                    response_deserializer=pb.ModelInferResponse.FromString)
        with pytest.raises(grpc.RpcError) as info:
            infer(message, timeout=30)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


DECLARED_HUGE = [("/v2/models/long/infer", "application/json"), ("/v1/authenticate", "multipart/form-data; boundary=b"),
                 ("/v1/packaging/recommend", "application/json"), ("/v1/packaging/images", "multipart/form-data; boundary=b")]


@pytest.mark.parametrize(("path", "content_type"), DECLARED_HUGE, ids=[p for p, _ in DECLARED_HUGE])
def test_declared_huge_body_is_refused_before_it_is_sent(server: Server, path: str, content_type: str) -> None:
    """A client that announces a terabyte gets 413 at once, without sending (or the server reading) it."""
    import json
    import socket

    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {10**12}\r\n\r\n".encode()
                     + b"x" * 1000)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < 10:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert "over" in json.loads(body[: body.rfind(b"}") + 1])["error"]
    with server.client() as client:
        _good_infer(client)
