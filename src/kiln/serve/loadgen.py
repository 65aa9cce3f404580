"""Load generator for Open Inference Protocol servers (kiln, Triton, KServe), HTTP or gRPC.

- closed loop: ``concurrency`` clients each send the next request when the previous answers;
- open loop: requests start at a fixed rate whatever the server does; latency is measured from
  the scheduled start, so a slow server cannot hide its queueing (no coordinated omission).

Payloads are built once (random tensors of the model's input shapes, binary encoding) and
re-sent, so the client spends its CPU on sending rather than on encoding. Runs are bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import time
from array import array as float_array
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kiln.errors import KilnError
from kiln.serve.tensors import DATATYPES, to_raw
from kiln.serve.timing import SERVER_TIMING, parse_server_timing
from kiln.serve.workers import WORKER_HEADER


@dataclass
class Progress:
    elapsed_s: float
    duration_s: float
    requests: int
    errors: int


@dataclass
class LoadResult:
    mode: str  # "closed" | "open"
    protocol: str
    concurrency: int | None
    rate: float | None
    duration_s: float
    requests: int
    errors: dict[str, int]
    batch: int
    latencies_ms: list[float] = field(default_factory=list, repr=False)
    # measured requests per server worker that answered them (``kiln serve --workers N`` names its
    # worker in each answer); empty when the server does not say
    workers: dict[str, int] = field(default_factory=dict)
    # per server stage (gRPC answers' ``server-timing``), milliseconds of each measured request; with
    # "outside": the latency measured here less the server's own time (network, gRPC, this client)
    stages_ms: dict[str, float_array[float]] = field(default_factory=dict, repr=False)  # 8 bytes a value

    @property
    def throughput(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else math.nan

    def summary(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "protocol": self.protocol,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "errors": sum(self.errors.values()),
            "errors_by_reason": dict(self.errors),
            "throughput_rps": round(self.throughput, 2),
            "items_per_s": round(self.throughput * self.batch, 2),
            "latency_ms": {
                "p50": round(self.percentile(50), 3),
                "p95": round(self.percentile(95), 3),
                "p99": round(self.percentile(99), 3),
                "mean": round(float(np.mean(self.latencies_ms)), 3) if self.latencies_ms else None,
                "max": round(max(self.latencies_ms), 3) if self.latencies_ms else None,
            },
            **({"requests_per_worker": dict(sorted(self.workers.items()))} if self.workers else {}),
            **({"server_stages_ms": self.stage_percentiles()} if self.stages_ms else {}),
        }

    def stage_percentiles(self) -> dict[str, dict[str, float]]:
        return {stage: {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 95, 99)}
                for stage, values in self.stages_ms.items() if values}


@dataclass(frozen=True)
class Reply:
    """What an answer said about the server: the worker that answered (``x-kiln-worker``) and the
    stages of its time in milliseconds (``server-timing``), when the server names them."""

    worker: str | None = None
    stages: dict[str, float] | None = None


class Target(Protocol):
    async def send(self) -> Reply:
        """One inference; raises ``RequestFailed`` on any error answer."""

    async def close(self) -> None: ...


class RequestFailed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def make_inputs(metadata: dict[str, Any], batch: int, shapes: dict[str, list[int]] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors for every model input; ``-1`` dimensions other than the batch need ``shapes``."""
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for spec in metadata["inputs"]:
        name, datatype = spec["name"], spec["datatype"]
        shape = list((shapes or {}).get(name) or [batch, *spec["shape"][1:]])
        if any(d < 0 for d in shape):
            raise KilnError(
                f"input {name!r} has dynamic dimensions {spec['shape']}",
                hint=f"give its shape with --shape {name}=" + "x".join(str(d if d > 0 else 224) for d in shape),
            )
        if datatype == "BYTES":
            inputs[name] = np.array([b"kiln"] * math.prod(shape), dtype=np.object_).reshape(shape)
        elif datatype not in DATATYPES:
            raise KilnError(f"input {name!r}: datatype {datatype} is not supported by the load generator")
        elif datatype == "BOOL":
            inputs[name] = rng.random(shape) > 0.5
        elif DATATYPES[datatype].kind in "iu":
            inputs[name] = rng.integers(0, 100, size=shape).astype(DATATYPES[datatype])
        else:
            inputs[name] = rng.standard_normal(shape).astype(DATATYPES[datatype])
    return inputs


def http_payload(inputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """An infer body with the binary tensor extension (inputs and outputs binary)."""
    from kiln.serve.tensors import oip_datatype

    raws = [bytes(to_raw(array)) for array in inputs.values()]
    header = json.dumps(
        {
            "inputs": [
                {"name": name, "shape": list(array.shape), "datatype": oip_datatype(array.dtype), "parameters": {"binary_data_size": len(raw)}}
                for (name, array), raw in zip(inputs.items(), raws, strict=True)
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"}
    return header + b"".join(raws), headers


def grpc_payload(model: str, inputs: dict[str, np.ndarray]) -> bytes:
    from kiln.serve.protos import grpc_service_pb2 as pb
    from kiln.serve.tensors import oip_datatype

    request = pb.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        request.inputs.add(name=name, datatype=oip_datatype(array.dtype), shape=array.shape)
        request.raw_input_contents.append(bytes(to_raw(array)))
    return request.SerializeToString()  # type: ignore[no-any-return]


class HttpTarget:
    def __init__(self, url: str, model: str, body: bytes, headers: dict[str, str], connections: int) -> None:
        import aiohttp

        self._url = f"{url.rstrip('/')}/v2/models/{model}/infer"
        self._body = body
        self._headers = headers
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections, force_close=False),
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async def send(self) -> Reply:
        import aiohttp

        try:
            async with self._session.post(self._url, data=self._body, headers=self._headers) as response:
                await response.read()
                if response.status != 200:
                    raise RequestFailed(f"http_{response.status}")
                return Reply(response.headers.get(WORKER_HEADER))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RequestFailed(type(exc).__name__) from exc

    async def close(self) -> None:
        await self._session.close()


GRPC_SCHEMES = ("ipv4:", "ipv6:", "dns:", "unix:")  # gRPC target names (ipv4/ipv6 may list several servers)


def grpc_target(url: str) -> tuple[str, list[tuple[str, Any]]]:
    """The gRPC target of ``url`` (``grpc://`` dropped) and the channel options it needs: a target
    that names several servers (``ipv4:HOST:P0,HOST:P1``; a bare ``HOST:P0,HOST:P1`` list gets the
    ``ipv4:`` or ``ipv6:`` scheme that gRPC needs for it) or a ``dns:`` name gets the ``round_robin``
    policy, which deals calls to them in turn (gRPC's default, ``pick_first``, sends every call to one)."""
    target = url if url.startswith(GRPC_SCHEMES) else url.split("://", 1)[-1]
    if "," in target and not target.startswith(GRPC_SCHEMES):
        target = ("ipv6:" if target.startswith("[") else "ipv4:") + target
    if "," in target or target.startswith(("ipv4:", "ipv6:", "dns:")):
        return target, [("grpc.lb_policy_name", "round_robin")]
    return target, []


class GrpcTarget:
    """``connections`` channels, each its own HTTP/2 connection (a channel-local subchannel pool:
    gRPC would otherwise share one connection between channels to the same address), used in turn.
    A server whose workers share the port (``kiln serve --workers N``: SO_REUSEPORT) spreads
    connections, not calls, over its workers: with one connection a client reaches one worker.
    A target that lists every worker's own port (``--grpc-worker-ports``) balances calls instead:
    each channel then connects to every worker and deals its calls to them in turn (round_robin)."""

    def __init__(self, url: str, body: bytes, connections: int = 1) -> None:
        import grpc

        target, balancing = grpc_target(url)
        self.options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", 256 << 20), ("grpc.max_send_message_length", 256 << 20),
            ("grpc.use_local_subchannel_pool", 1), *balancing,
        ]
        self._channels = [grpc.aio.insecure_channel(target, options=self.options) for _ in range(max(1, connections))]
        self._calls = itertools.cycle([channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                                                           request_serializer=lambda b: b, response_deserializer=lambda b: b)
                                       for channel in self._channels])
        self._body = body

    async def send(self) -> Reply:
        import grpc

        try:
            call = next(self._calls)(self._body, timeout=60)
            await call
            trailing = await call.trailing_metadata()
        except grpc.aio.AioRpcError as exc:
            raise RequestFailed(f"grpc_{exc.code().name}") from exc
        worker = timing = None
        for key, value in trailing or ():
            if key == WORKER_HEADER:
                worker = str(value)
            elif key == SERVER_TIMING:
                timing = parse_server_timing(str(value))
        return Reply(worker, timing)

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


async def fetch_metadata(url: str, model: str, protocol: str) -> dict[str, Any]:
    """Model metadata over the chosen protocol (also proves the server is up)."""
    if protocol == "http":
        import httpx

        async with httpx.AsyncClient(timeout=10) as client:
            try:
                response = await client.get(f"{url.rstrip('/')}/v2/models/{model}")
            except httpx.HTTPError as exc:
                raise KilnError(f"cannot reach {url}: {exc}", hint="is the server running? check --url") from exc
        if response.status_code != 200:
            raise KilnError(f"{url} answered {response.status_code} for model {model!r}: {response.text[:200]}")
        return response.json()  # type: ignore[no-any-return]
    import grpc

    from kiln.serve.protos import grpc_service_pb2 as pb

    target, balancing = grpc_target(url)
    async with grpc.aio.insecure_channel(target, options=balancing) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        try:
            meta = await call(pb.ModelMetadataRequest(name=model), timeout=10)
        except grpc.aio.AioRpcError as exc:
            raise KilnError(f"{url}: ModelMetadata for {model!r} failed: {exc.code().name} {exc.details()}") from exc
    return {"inputs": [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in meta.inputs]}


def make_target(url: str, model: str, protocol: str, inputs: dict[str, np.ndarray], connections: int) -> Target:
    """``connections``: HTTP keep-alive connections at most, or gRPC channels (one connection each)."""
    if protocol == "http":
        body, headers = http_payload(inputs)
        return HttpTarget(url if "://" in url else f"http://{url}", model, body, headers, connections)
    if protocol == "grpc":
        return GrpcTarget(url, grpc_payload(model, inputs), connections)
    raise KilnError(f"protocol {protocol!r} is not http or grpc")


class _Recorder:
    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.workers: Counter[str] = Counter()
        self.stages: defaultdict[str, float_array[float]] = defaultdict(lambda: float_array("d"))

    async def one(self, target: Target, started: float) -> None:
        try:
            reply = await target.send()
        except RequestFailed as exc:
            self.errors[exc.reason] += 1
            return
        latency = (time.perf_counter() - started) * 1e3
        self.latencies.append(latency)
        if reply.worker is not None:
            self.workers[reply.worker] += 1
        if reply.stages:
            for stage, ms in reply.stages.items():
                self.stages[stage].append(ms)
            if "server" in reply.stages:
                self.stages["outside"].append(latency - reply.stages["server"] - reply.stages.get("parse", 0.0))


async def _report(recorder: _Recorder, start: float, duration: float, on_progress: Callable[[Progress], None] | None) -> None:
    while on_progress is not None:
        on_progress(Progress(time.perf_counter() - start, duration, len(recorder.latencies), sum(recorder.errors.values())))
        await asyncio.sleep(0.25)


async def closed_loop(
    target: Target, concurrency: int, duration_s: float, *, batch: int = 1, protocol: str = "", warmup_s: float = 1.0,
    on_progress: Callable[[Progress], None] | None = None,
) -> LoadResult:
    """``concurrency`` clients back to back for ``duration_s`` (after ``warmup_s`` not counted)."""
    recorder = _Recorder()
    warm_end = time.perf_counter() + warmup_s
    end = warm_end + duration_s

    async def client() -> None:
        while (now := time.perf_counter()) < end:
            if now < warm_end:
                with contextlib.suppress(RequestFailed):  # warm-up answers are not measured
                    await target.send()
                continue
            await recorder.one(target, now)

    reporter = asyncio.create_task(_report(recorder, warm_end, duration_s, on_progress))
    try:
        await asyncio.gather(*(client() for _ in range(concurrency)))
    finally:
        reporter.cancel()
    elapsed = time.perf_counter() - warm_end
    return LoadResult("closed", protocol, concurrency, None, elapsed, len(recorder.latencies), dict(recorder.errors), batch,
                      recorder.latencies, dict(recorder.workers), dict(recorder.stages))


async def open_loop(
    target: Target, rate: float, duration_s: float, *, batch: int = 1, protocol: str = "", max_in_flight: int = 1024,
    on_progress: Callable[[Progress], None] | None = None,
) -> LoadResult:
    """Requests started at ``rate`` per second for ``duration_s``; over ``max_in_flight`` counts as dropped."""
    recorder = _Recorder()
    start = time.perf_counter()
    in_flight: set[asyncio.Task[None]] = set()
    reporter = asyncio.create_task(_report(recorder, start, duration_s, on_progress))
    count = int(rate * duration_s)
    try:
        for i in range(count):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(in_flight) >= max_in_flight:
                recorder.errors["client_overloaded"] += 1
                continue
            task = asyncio.create_task(recorder.one(target, scheduled))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.gather(*in_flight)
    finally:
        reporter.cancel()
    elapsed = max(duration_s, time.perf_counter() - start)
    return LoadResult("open", protocol, None, rate, elapsed, len(recorder.latencies), dict(recorder.errors), batch,
                      recorder.latencies, dict(recorder.workers), dict(recorder.stages))
