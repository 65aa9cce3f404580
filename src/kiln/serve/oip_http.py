"""Open Inference Protocol v2 over HTTP/REST, with Triton's binary tensor data extension.

A request body is either JSON, or (binary extension) a JSON header of
``Inference-Header-Content-Length`` bytes followed by the raw tensors of the inputs whose
``parameters.binary_data_size`` is set, in input order. Outputs come back as JSON ``data``, or
as raw bytes after the JSON header when the request asks for ``binary_data`` on an output or
``binary_data_output`` for all.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from fastapi import APIRouter, Request, Response
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from kiln.errors import KilnError, PayloadTooLargeError
from kiln.serve import oip
from kiln.serve.model import ServedModel
from kiln.serve.tensors import check_shape, from_json, from_raw, oip_datatype, to_json, to_raw

if TYPE_CHECKING:
    from kiln.serve.state import ServerState

try:  # orjson is several times faster on tensor-sized JSON; the standard library is the fallback
    import orjson

    def _dumps(value: Any) -> bytes:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)

    _loads = orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError,)
except ImportError:  # pragma: no cover - orjson is a dependency; kept for minimal installs
    def _dumps(value: Any) -> bytes:
        return json.dumps(value, default=lambda v: v.tolist()).encode()

    _loads = json.loads  # type: ignore[assignment]
    _JSON_ERRORS = (json.JSONDecodeError, UnicodeDecodeError)

HEADER_LENGTH = "inference-header-content-length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


def json_response(value: Any, status: int = 200) -> Response:
    return Response(_dumps(value), status_code=status, media_type=JSON_TYPE)


def check_declared_body(declared: str | None, encoding: str | None, limit: int) -> None:
    """Refuses a body whose declared length is over ``limit`` (413) or that is compressed (415)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(f"request body of {declared} bytes is over the limit of {limit} bytes")
    encoding = (encoding or "identity").lower()
    if encoding not in ("identity", ""):
        raise KilnError(f"Content-Encoding {encoding!r} is not supported", hint="send the body uncompressed", status=415)


async def receive_body(receive: Receive, declared: str | None, encoding: str | None, limit: int) -> bytes:
    """The request body from ASGI messages, refused with 413 once it is known to exceed ``limit``."""
    check_declared_body(declared, encoding, limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.request":
            chunk = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLargeError(f"request body is over the limit of {limit} bytes")
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        elif kind == "http.disconnect":
            raise ClientDisconnect()
    if len(chunks) == 1:
        return chunks[0]
    return b"".join(chunks)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    return await receive_body(request.receive, request.headers.get("content-length"),
                              request.headers.get("content-encoding"), limit)


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise KilnError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def parse_request(body: bytes, header_length: str | None, model: ServedModel) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON header and the input tensors of an infer request (JSON or binary extension)."""
    limits = model.config.limits
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise KilnError(
                f"Inference-Header-Content-Length {header_length!r} is not a byte count within the {len(body)}-byte body"
            )
        split = int(header_length)
        header_bytes, binary = body[:split], memoryview(body)[split:]
    else:
        header_bytes, binary = body, memoryview(b"")
    try:
        header = _loads(header_bytes)
    except _JSON_ERRORS as exc:
        raise KilnError(f"request body is not valid JSON: {exc}") from None
    header = _object(header, "the request")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise KilnError("request field 'inputs' must be a non-empty list of tensors")
    inputs: dict[str, np.ndarray] = {}
    offset = 0
    for index, item in enumerate(raw_inputs):
        item = _object(item, f"inputs[{index}]")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise KilnError(f"inputs[{index}].name must be a non-empty string")
        if name in inputs:
            raise KilnError(f"input {name!r} is given twice")
        datatype = item.get("datatype")
        if not isinstance(datatype, str):
            raise KilnError(f"input {name!r}: 'datatype' must be a string such as \"FP32\"")
        shape = check_shape(item.get("shape"), name, limits.max_tensor_elements)
        parameters = _object(item.get("parameters"), f"input {name!r} parameters")
        size = parameters.get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise KilnError(f"input {name!r}: binary_data_size must be a non-negative integer")
            if "data" in item:
                raise KilnError(f"input {name!r} has both 'data' and binary_data_size")
            if offset + size > len(binary):
                raise KilnError(
                    f"input {name!r}: binary_data_size {size} runs past the end of the binary data "
                    f"({len(binary) - offset} bytes left)"
                )
            inputs[name] = from_raw(binary[offset : offset + size], datatype, shape, name)
            offset += size
        else:
            if "data" not in item:
                raise KilnError(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
            inputs[name] = from_json(item["data"], datatype, shape, name)
    if offset != len(binary):
        raise KilnError(f"{len(binary) - offset} bytes of binary data after the last binary input are unaccounted for")
    return header, inputs


def build_response(
    header: dict[str, Any], model: ServedModel, outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """Response body and, for binary outputs, the JSON header length."""
    parameters = _object(header.get("parameters"), "request parameters")
    binary_default = parameters.get("binary_data_output") is True
    requested = header.get("outputs")
    if requested is None:
        wanted = [(name, binary_default) for name in outputs]
    else:
        if not isinstance(requested, list):
            raise KilnError("request field 'outputs' must be a list")
        wanted = []
        for index, item in enumerate(requested):
            item = _object(item, f"outputs[{index}]")
            name = item.get("name")
            if name not in outputs:
                raise KilnError(f"model {model.name!r} has no output {name!r}", hint="outputs: " + ", ".join(outputs))
            flag = _object(item.get("parameters"), f"output {name!r} parameters").get("binary_data", binary_default)
            wanted.append((name, flag is True))
    tensors: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    for name, binary in wanted:
        array = outputs[name]
        entry: dict[str, Any] = {"name": name, "datatype": oip_datatype(array.dtype), "shape": list(array.shape)}
        if binary:
            raw = to_raw(array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif array.dtype == np.object_:
            entry["data"] = to_json(array)
        else:
            entry["data"] = np.ascontiguousarray(array).reshape(-1)
        tensors.append(entry)
    response: dict[str, Any] = {"model_name": model.name, "model_version": model.version, "outputs": tensors}
    request_id = header.get("id")
    if isinstance(request_id, str) and request_id:
        response["id"] = request_id
    body = _dumps(response)
    if not chunks:
        return body, None
    return b"".join([body, *chunks]), len(body)


async def infer_response(
    state: ServerState,
    name: str,
    version: str | None,
    read: Callable[[int], Awaitable[bytes]],
    header_length: str | None,
    *,
    arrived: float | None = None,
) -> Response:
    """One infer request, from the body (``read(limit)``) to the response: shared by the FastAPI
    route and the plain ASGI endpoint (``oip_http_infer``) so both answer alike. ``arrived``
    (``time.monotonic()``, set by the admission gate) is when the request's timeout starts."""
    state.check_accepting()
    model = state.repository.ready_model(name, version)
    body = await read(model.config.limits.max_request_bytes)
    try:
        header, inputs = parse_request(body, header_length, model)
        options = oip.request_options(_object(header.get("parameters"), "request parameters"))
    except KilnError:
        if model.metrics is not None:
            model.metrics.failed("invalid_request")
        raise
    outputs = await model.infer(inputs, priority=int(options.priority), timeout_s=options.timeout_s, arrived=arrived)
    content, length = build_response(header, model, outputs)
    if length is None:
        return Response(content, media_type=JSON_TYPE)
    return Response(content, media_type=BINARY_TYPE, headers={"Inference-Header-Content-Length": str(length)})


def oip_router(state: ServerState) -> APIRouter:
    """The ``/v2`` routes, bound to one server's repository."""
    router = APIRouter(prefix="/v2", tags=["inference (Open Inference Protocol v2)"])
    repo = state.repository

    @router.get("", summary="Server metadata")
    async def metadata() -> Response:
        return json_response(oip.server_metadata())

    @router.get("/health/live", summary="Liveness")
    async def live() -> Response:
        return json_response({"live": True})

    @router.get("/health/ready", summary="Readiness: every model loaded and warm")
    async def ready() -> Response:
        is_ready = state.ready
        return json_response({"ready": is_ready}, status=200 if is_ready else 503)

    @router.get("/models/{model_name}", summary="Model metadata")
    async def model_metadata(model_name: str) -> Response:
        return _metadata(model_name, None)

    @router.get("/models/{model_name}/versions/{version}", summary="Model version metadata")
    async def model_version_metadata(model_name: str, version: str) -> Response:
        return _metadata(model_name, version)

    def _metadata(name: str, version: str | None) -> Response:
        model = repo.get(name, version)
        versions = sorted(repo.versions(name), key=int)
        return json_response(oip.model_metadata(model, versions))

    @router.get("/models/{model_name}/ready", summary="Model readiness")
    async def model_ready(model_name: str) -> Response:
        return _ready(model_name, None)

    @router.get("/models/{model_name}/versions/{version}/ready", summary="Model version readiness")
    async def model_version_ready(model_name: str, version: str) -> Response:
        return _ready(model_name, version)

    def _ready(name: str, version: str | None) -> Response:
        is_ready = repo.get(name, version).ready and not state.shutting_down
        return json_response({"name": name, "ready": is_ready}, status=200 if is_ready else 503)

    @router.get("/models/{model_name}/config", summary="Model configuration (Triton extension)")
    async def config(model_name: str) -> Response:
        return json_response(oip.model_config(repo.get(model_name)))

    @router.get("/models/{model_name}/versions/{version}/config", summary="Model version configuration")
    async def version_config(model_name: str, version: str) -> Response:
        return json_response(oip.model_config(repo.get(model_name, version)))

    @router.post("/repository/index", summary="Models, versions and their states (Triton extension)")
    async def repository_index(request: Request) -> Response:
        body = await read_body(request, 1 << 16)
        ready_only = False
        if body.strip():
            try:
                options = _loads(body)
            except _JSON_ERRORS as exc:
                raise KilnError(f"request body is not valid JSON: {exc}") from None
            ready_only = _object(options, "the request").get("ready") is True
        return json_response(repo.index(ready_only=ready_only))

    infer_doc: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {
                JSON_TYPE: {"schema": INFER_REQUEST_SCHEMA},
                BINARY_TYPE: {"schema": {"type": "string", "format": "binary"}},
            },
        }
    }

    @router.post("/models/{model_name}/infer", summary="Inference", openapi_extra=infer_doc)
    async def infer(model_name: str, request: Request) -> Response:
        return await _infer(model_name, None, request)

    @router.post("/models/{model_name}/versions/{version}/infer", summary="Inference on a version", openapi_extra=infer_doc)
    async def infer_version(model_name: str, version: str, request: Request) -> Response:
        return await _infer(model_name, version, request)

    async def _infer(name: str, version: str | None, request: Request) -> Response:
        return await infer_response(
            state, name, version, lambda limit: read_body(request, limit), request.headers.get(HEADER_LENGTH),
            arrived=getattr(request.state, "arrived", None),
        )

    return router


_TENSOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string"},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "datatype": {"type": "string", "enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BYTES"]},
        "parameters": {"type": "object"},
        "data": {"type": "array"},
    },
}
INFER_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "items": _TENSOR_SCHEMA},
        "outputs": {
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}}},
        },
    },
}
