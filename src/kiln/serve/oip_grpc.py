"""Open Inference Protocol v2 over gRPC: ``inference.GRPCInferenceService`` on grpc.aio.

Runs on the same event loop (and the same batchers) as the HTTP app. Tensors travel in
``raw_input_contents``/``raw_output_contents`` (what tritonclient sends) or in the typed
``contents`` fields. KilnError statuses map to gRPC codes (404 → NOT_FOUND, 503 → UNAVAILABLE,
504 → DEADLINE_EXCEEDED, 413 → RESOURCE_EXHAUSTED, other 4xx → INVALID_ARGUMENT).
A ModelInfer answer's ``server-timing`` trailing metadata gives its stages in milliseconds, in
``Server-Timing``'s format: parse, check, queue, infer, resume, respond, and server (the handler's
whole time); ``kiln bench serve`` reports their percentiles beside the latency it measured.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import numpy as np

from kiln.errors import KilnError
from kiln.serve import oip
from kiln.serve.oip_wire import InferRequest, parse_infer_request
from kiln.serve.protos import grpc_service_pb2 as pb
from kiln.serve.protos import model_config_pb2 as mc
from kiln.serve.state import ServerState
from kiln.serve.tensors import check_shape, from_raw, numpy_dtype, oip_datatype, to_raw
from kiln.serve.timing import SERVER_TIMING, start_timings

log = logging.getLogger(__name__)

SERVICE = "inference.GRPCInferenceService"

_STATUS_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    409: grpc.StatusCode.FAILED_PRECONDITION,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# Which InferTensorContents field carries each datatype (FP16/BF16 have none: raw only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

_CONFIG_TYPES = {name: value for name, value in mc.DataType.items()}


MAX_MESSAGE_CHARS = 2000  # gRPC clients refuse trailers over 8 KiB; error messages may quote client input


def brief_message(message: str) -> str:
    """An error message cut to a size every client accepts (it may quote a client's long string)."""
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def status_code(exc: KilnError) -> grpc.StatusCode:
    return _STATUS_CODES.get(exc.status, grpc.StatusCode.INVALID_ARGUMENT if exc.status < 500 else grpc.StatusCode.INTERNAL)


def _param_value(param: Any) -> Any:
    kind = param.WhichOneof("parameter_choice")
    return getattr(param, kind) if kind else None


def parse_inputs(request: Any, max_elements: int, raw: Any = None) -> dict[str, np.ndarray]:
    """The request's input tensors; ``raw`` (views from :mod:`kiln.serve.oip_wire`) stands in for
    ``request.raw_input_contents``."""
    raw = request.raw_input_contents if raw is None else raw
    if raw and len(raw) != len(request.inputs):
        raise KilnError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; they must match")
    if not request.inputs:
        raise KilnError("the request has no inputs")
    inputs: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        name = tensor.name
        if not name:
            raise KilnError(f"inputs[{index}] has no name")
        if name in inputs:
            raise KilnError(f"input {name!r} is given twice")
        shape = check_shape(list(tensor.shape), name, max_elements)
        datatype = tensor.datatype
        dtype = numpy_dtype(datatype, name)
        if raw:
            inputs[name] = from_raw(raw[index], datatype, shape, name)
            continue
        field = _CONTENTS_FIELD.get(datatype)
        if field is None:
            raise KilnError(f"input {name!r}: {datatype} tensors must be sent in raw_input_contents")
        values = getattr(tensor.contents, field)
        count = int(np.prod(shape, dtype=np.int64))
        if len(values) != count:
            raise KilnError(f"input {name!r}: {len(values)} values in contents.{field}, but shape {list(shape)} needs {count}")
        if datatype == "BYTES":
            array = np.empty(count, dtype=np.object_)
            array[:] = list(values)
        else:
            array = np.asarray(values, dtype=dtype)
        inputs[name] = array.reshape(shape)
    return inputs


def _handler(method: Callable[[Any, Any], Awaitable[Any]], request_type: Any, response_type: Any,
             deserializer: Callable[[bytes], Any] | None = None) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        method, request_deserializer=deserializer or request_type.FromString,
        response_serializer=response_type.SerializeToString,
    )


class InferenceService:
    """The RPC handlers; every KilnError becomes the matching gRPC status with its message."""

    def __init__(self, state: ServerState, worker_pid: int | None = None) -> None:
        self.state = state
        self.repo = state.repository
        self.worker_metadata = (("x-kiln-worker", str(worker_pid)),) if worker_pid is not None else None

    def handler(self) -> grpc.GenericRpcHandler:
        wrap = self._guard
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {
                "ServerLive": _handler(wrap(self.server_live), pb.ServerLiveRequest, pb.ServerLiveResponse),
                "ServerReady": _handler(wrap(self.server_ready), pb.ServerReadyRequest, pb.ServerReadyResponse),
                "ModelReady": _handler(wrap(self.model_ready), pb.ModelReadyRequest, pb.ModelReadyResponse),
                "ServerMetadata": _handler(wrap(self.server_metadata), pb.ServerMetadataRequest, pb.ServerMetadataResponse),
                "ModelMetadata": _handler(wrap(self.model_metadata), pb.ModelMetadataRequest, pb.ModelMetadataResponse),
                "ModelInfer": _handler(wrap(self.model_infer), pb.ModelInferRequest, pb.ModelInferResponse,
                                       deserializer=parse_infer_request),
                "ModelConfig": _handler(wrap(self.model_config), pb.ModelConfigRequest, pb.ModelConfigResponse),
                "RepositoryIndex": _handler(wrap(self.repository_index), pb.RepositoryIndexRequest, pb.RepositoryIndexResponse),
            },
        )

    def _guard(self, method: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
        worker = self.worker_metadata

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if worker is not None:
                context.set_trailing_metadata(worker)
            try:
                return await method(request, context)
            except KilnError as exc:
                if exc.status >= 500 and exc.status not in (503, 504):
                    log.error("gRPC %s failed: %s", method.__name__, exc)
                await context.abort(status_code(exc), brief_message(str(exc)))

        call.__name__ = method.__name__
        return call

    async def server_live(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=True)

    async def server_ready(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.state.ready)

    async def model_ready(self, request: Any, context: Any) -> Any:
        model = self.repo.get(request.name, request.version or None)
        return pb.ModelReadyResponse(ready=model.ready and not self.state.shutting_down)

    async def server_metadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(**oip.server_metadata())

    async def model_metadata(self, request: Any, context: Any) -> Any:
        model = self.repo.get(request.name, request.version or None)
        meta = oip.model_metadata(model, sorted(self.repo.versions(request.name), key=int))
        return pb.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["inputs"]],
            outputs=[pb.ModelMetadataResponse.TensorMetadata(**t) for t in meta["outputs"]],
        )

    async def model_config(self, request: Any, context: Any) -> Any:
        model = self.repo.get(request.name, request.version or None)
        cfg = oip.model_config(model)
        message = mc.ModelConfig(
            name=cfg["name"], platform=cfg["platform"], backend=cfg["backend"], max_batch_size=cfg["max_batch_size"]
        )
        for entry in cfg["input"]:
            message.input.add(name=entry["name"], data_type=_CONFIG_TYPES[entry["data_type"]], dims=entry["dims"])
        for entry in cfg["output"]:
            message.output.add(name=entry["name"], data_type=_CONFIG_TYPES[entry["data_type"]], dims=entry["dims"])
        for group in cfg["instance_group"]:
            message.instance_group.add(name=group["name"], count=group["count"], kind=mc.ModelInstanceGroup.Kind.Value(group["kind"]))
        policy = cfg["version_policy"]
        if "all" in policy:
            message.version_policy.all.SetInParent()
        elif "specific" in policy:
            message.version_policy.specific.versions.extend(policy["specific"]["versions"])
        else:
            message.version_policy.latest.num_versions = policy["latest"]["num_versions"]
        batching = cfg.get("dynamic_batching")
        if batching is not None:
            message.dynamic_batching.preferred_batch_size.extend(batching["preferred_batch_size"])
            message.dynamic_batching.max_queue_delay_microseconds = batching["max_queue_delay_microseconds"]
            message.dynamic_batching.priority_levels = batching["priority_levels"]
            message.dynamic_batching.default_priority_level = batching["default_priority_level"]
            queue = batching["default_queue_policy"]
            message.dynamic_batching.default_queue_policy.default_timeout_microseconds = queue["default_timeout_microseconds"]
            message.dynamic_batching.default_queue_policy.allow_timeout_override = queue["allow_timeout_override"]
            message.dynamic_batching.default_queue_policy.max_queue_size = queue["max_queue_size"]
        return pb.ModelConfigResponse(config=message)

    async def repository_index(self, request: Any, context: Any) -> Any:
        rows = self.repo.index(ready_only=request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

    async def model_infer(self, wire: InferRequest, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        timings = start_timings()
        timings.add("parse", wire.parse_s)
        self.state.check_accepting()
        request = wire.message
        model = self.repo.ready_model(request.model_name, request.model_version or None)
        try:
            with timings.measure("check"):
                inputs = parse_inputs(request, model.config.limits.max_tensor_elements, wire.raw_input_contents)
                options = oip.request_options({key: _param_value(value) for key, value in request.parameters.items()})
                requested = [o.name for o in request.outputs]
        except KilnError:
            if model.metrics is not None:
                model.metrics.failed("invalid_request")
            raise
        timeout = options.timeout_s
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, remaining) if timeout else remaining
        outputs = await model.infer(inputs, priority=int(options.priority), timeout_s=timeout)
        unknown = [name for name in requested if name not in outputs]
        if unknown:
            raise KilnError(f"model {model.name!r} has no outputs {unknown}", hint="outputs: " + ", ".join(outputs))
        with timings.measure("respond"):
            response = pb.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
            for name in requested or list(outputs):
                array = outputs[name]
                response.outputs.add(name=name, datatype=oip_datatype(array.dtype), shape=array.shape)
                response.raw_output_contents.append(bytes(to_raw(array)))
        # the stages, and "server": from this handler's start to its answer (parsing before it not included)
        timings.add("server", time.perf_counter() - started)
        context.set_trailing_metadata((*(self.worker_metadata or ()), (SERVER_TIMING, timings.header())))
        return response


def create_grpc_server(state: ServerState, address: str, *, max_message_bytes: int | None = None,
                       interceptors: tuple[Any, ...] = (), worker_pid: int | None = None,
                       share_port: bool = False, port_option: str = "--grpc-port") -> grpc.aio.Server:
    """A grpc.aio server bound to ``address`` (host:port) serving the inference service.

    ``worker_pid`` (``kiln serve --workers N``): every answer names this process in its ``x-kiln-worker``
    trailing metadata. ``share_port``: the port is shared with the other workers (SO_REUSEPORT); a worker's own
    port (``--grpc-worker-ports``) is not, so a second server on it fails to bind instead of joining it.
    ``port_option`` is the flag a bind failure's hint names.
    """
    limit = max_message_bytes or 64 << 20
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 256 << 20)),
            ("grpc.so_reuseport", 1 if share_port else 0),
        ]
    )
    server.add_generic_rpc_handlers((InferenceService(state, worker_pid=worker_pid).handler(),))
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises where older versions returned 0
        bound = 0
    if bound == 0:
        raise KilnError(f"cannot bind gRPC to {address}", hint=f"choose another {port_option}")
    return server
