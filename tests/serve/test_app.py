"""The ASGI app in-process: batching across concurrent requests, errors, metrics, plugins, shutdown."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import APIRouter, FastAPI
from pydantic import BaseModel

from kiln.engine.loader import load_engine
from kiln.errors import KilnError, UnavailableError
from kiln.serve.app import create_app, server_state
from kiln.serve.context import AppContext
from kiln.serve.state import ServerState

from .conftest import Engines


class Body(BaseModel):
    values: list[int]


class EchoPlugin:
    """A minimal app plugin: one route that uses the batching InferenceClient."""

    name = "echo"

    def __init__(self) -> None:
        self.started = False
        self.stopped = False

    def required_models(self) -> list[str]:
        return ["long"]

    def router(self, ctx: AppContext) -> APIRouter:
        router = APIRouter(prefix="/echo")

        @router.post("/triple")
        async def triple(body: Body) -> dict[str, Any]:
            x = np.asarray(body.values, dtype=np.int64).reshape(-1, 3)
            out = await ctx.inference.infer("long", {"x": x})
            return {"y": out["y"].ravel().tolist()}

        @router.get("/busy")
        async def busy() -> dict[str, Any]:
            raise UnavailableError("the echo app is busy", retry_after_s=7)

        return router

    async def startup(self, ctx: AppContext) -> None:
        self.started = True

    async def shutdown(self, ctx: AppContext) -> None:
        self.stopped = True


@pytest.fixture
async def served(repo: Path) -> AsyncIterator[tuple[httpx.AsyncClient, ServerState, FastAPI, EchoPlugin]]:
    plugin = EchoPlugin()
    state = server_state(repo, apps=[plugin])
    app = create_app(state, access_log=False)
    async with app.router.lifespan_context(app):
        await state.wait_ready()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://kiln") as client:
            yield client, state, app, plugin
    assert plugin.stopped


def _json_request(x: np.ndarray, name: str = "input", datatype: str = "FP32") -> dict[str, Any]:
    return {"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype, "data": x.ravel().tolist()}]}


def _metric(text: str, name: str, model: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} for {model} not in /metrics")


async def test_two_concurrent_requests_are_batched(served: Any, engines: Engines) -> None:
    client, *_ = served
    rng = np.random.default_rng(0)
    a = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    b = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    ra, rb = await asyncio.gather(
        client.post("/v2/models/image/infer", json=_json_request(a)),
        client.post("/v2/models/image/infer", json=_json_request(b)),
    )
    assert ra.status_code == 200 and rb.status_code == 200, (ra.text, rb.text)
    metrics = (await client.get("/metrics")).text
    assert _metric(metrics, "kiln_inference_count_total", "image") == 3
    assert _metric(metrics, "kiln_inference_exec_count_total", "image") == 1, "both requests ran in one engine call"
    with load_engine(engines.image) as runner:
        want_a = runner.infer({"input": a})["logits"]
        want_b = runner.infer({"input": b})["logits"]
    got_a = np.asarray(ra.json()["outputs"][0]["data"], dtype=np.float32).reshape(1, 3)
    got_b = np.asarray(rb.json()["outputs"][0]["data"], dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(got_a, want_a, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_b, want_b, rtol=1e-4, atol=1e-5)


async def test_health_index_and_failed_model_reported_by_name(served: Any) -> None:
    client, *_ = served
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).status_code == 200
    index = (await client.post("/v2/repository/index")).json()
    states = {row["name"]: row for row in index}
    assert {states[m]["state"] for m in ("image", "half", "long")} == {"READY"}
    assert (states["broken"]["state"] == "UNAVAILABLE" and "broken" in states["broken"]["reason"]) or states["broken"]["reason"]
    ready_only = (await client.post("/v2/repository/index", json={"ready": True})).json()
    assert "broken" not in {row["name"] for row in ready_only}
    response = await client.get("/v2/models/broken/ready")
    assert response.status_code == 503
    response = await client.post("/v2/models/broken/infer", json=_json_request(np.zeros((1, 3), np.int64), "x", "INT64"))
    assert response.status_code == 503 and "not ready" in response.json()["error"]
    assert response.headers["retry-after"]


@pytest.mark.parametrize(
    ("path", "body", "status", "needle"),
    [
        ("/v2/models/nope/infer", {"inputs": []}, 404, "unknown model 'nope'"),
        ("/v2/models/long/versions/7/infer", {"inputs": []}, 404, "no version '7'"),
        ("/v2/models/long/infer", {"inputs": []}, 400, "'inputs' must be a non-empty list"),
        ("/v2/models/long/infer", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}, 400, "datatype FP32 does not match the model's INT64"),
        ("/v2/models/long/infer", {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]}]}, 400, "shape [1, 4] does not match"),
        ("/v2/models/long/infer", {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3]}]}, 400, "3 values in data, but shape [2, 3] needs 6"),
        ("/v2/models/long/infer", {"inputs": [{"name": "z", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]}, 400, "missing ['x']"),
        ("/v2/models/long/infer", {"inputs": [{"name": "x", "shape": [9, 3], "datatype": "INT64", "data": list(range(27))}]}, 400, "batch 9 exceeds max_batch_size 8"),
        ("/v2/models/long/infer", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": ["a", "b", "c"]}]}, 400, "must be numbers"),
        ("/v2/models/half/infer", {"inputs": [{"name": "x", "shape": [200, 4], "datatype": "FP16", "data": [0] * 800}]}, 413, "over the limit"),
        ("/v2/models/long/infer", {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}], "outputs": [{"name": "nope"}]}, 400, "no output 'nope'"),
    ],
)
async def test_bad_requests_get_4xx_naming_the_problem(served: Any, path: str, body: Any, status: int, needle: str) -> None:
    client, *_ = served
    response = await client.post(path, json=body)
    assert response.status_code == status, response.text
    assert needle in response.json()["error"]


async def test_binary_extension_in_and_out(served: Any) -> None:
    client, *_ = served
    x = np.arange(12, dtype=np.int64).reshape(4, 3)
    header = json.dumps(
        {
            "inputs": [{"name": "x", "shape": [4, 3], "datatype": "INT64", "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = await client.post(
        "/v2/models/long/infer",
        content=header + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 200, response.text
    split = int(response.headers["inference-header-content-length"])
    meta = json.loads(response.content[:split])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == x.nbytes
    y = np.frombuffer(response.content[split:], dtype=np.int64).reshape(4, 3)
    np.testing.assert_array_equal(y, x * 3)

    short = await client.post(
        "/v2/models/long/infer",
        content=header + x.tobytes()[:-8],
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert short.status_code == 400 and "runs past the end" in short.json()["error"]
    extra = await client.post(
        "/v2/models/long/infer",
        content=header + x.tobytes() + b"\0" * 8,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert extra.status_code == 400 and "8 bytes of binary data" in extra.json()["error"]


async def test_body_over_limit_is_413_before_reading(served: Any) -> None:
    client, *_ = served
    response = await client.post("/v2/models/half/infer", content=b"{" + b" " * 5000 + b"}")
    assert response.status_code == 413 and "over the limit of 4096 bytes" in response.json()["error"]


async def test_request_id_is_echoed_or_made(served: Any) -> None:
    client, *_ = served
    given = await client.get("/v2/health/live", headers={"X-Request-ID": "abc-123"})
    assert given.headers["x-request-id"] == "abc-123"
    made = await client.get("/v2/health/live", headers={"X-Request-ID": "bad id with spaces"})
    assert made.headers["x-request-id"] != "bad id with spaces" and len(made.headers["x-request-id"]) == 32


async def test_plugin_routes_use_batching_inference_and_error_mapping(served: Any) -> None:
    client, _, _, plugin = served
    assert plugin.started
    response = await client.post("/echo/triple", json={"values": list(range(30))})
    assert response.status_code == 200
    assert response.json()["y"] == [3 * v for v in range(30)], "10 rows over max_batch_size 8 are split and rejoined"
    busy = await client.get("/echo/busy")
    assert busy.status_code == 503 and busy.json() == {"error": "the echo app is busy"}
    assert busy.headers["retry-after"] == "7"
    invalid = await client.post("/echo/triple", json={"values": "nope"})
    assert invalid.status_code == 422 and "values" in invalid.json()["error"]
    not_json = await client.post("/echo/triple", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "error" in not_json.json()
    missing = await client.get("/no/such/route")
    assert missing.status_code == 404 and missing.json() == {"error": "Not Found"}


async def test_metrics_count_failures_by_reason(served: Any) -> None:
    client, *_ = served
    await client.post("/v2/models/long/infer", json={"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2]}]})
    text = (await client.get("/metrics")).text
    assert 'kiln_inference_request_failure_total{model="long",reason="invalid_request",version="1"} 1.0' in text
    assert "kiln_inference_queue_duration_seconds_bucket" in text
    assert "kiln_inference_batch_size_bucket" in text


async def test_shutdown_refuses_new_work(served: Any) -> None:
    client, state, *_ = served
    state.shutting_down = True
    try:
        assert (await client.get("/v2/health/ready")).status_code == 503
        response = await client.post("/v2/models/long/infer", json=_json_request(np.zeros((1, 3), np.int64), "x", "INT64"))
        assert response.status_code == 503 and "shutting down" in response.json()["error"]
    finally:
        state.shutting_down = False


def test_missing_app_module_is_named(repo: Path) -> None:
    with pytest.raises(KilnError, match=r"module kiln\.apps\.nothing\.routes does not exist"):
        server_state(repo, apps=["kiln.apps.nothing.routes:plugin"])
    with pytest.raises(KilnError, match="neither a known app"):
        server_state(repo, apps=["whatever"])


async def test_timeout_counts_from_arrival_at_the_server(served: Any) -> None:
    """A request that waited past its timeout before the handler saw it gets 504 and is not computed."""
    _, _, app, _ = served

    async def arrived_long_ago(scope: Any, receive: Any, send: Any) -> None:
        scope.setdefault("state", {})["arrived"] = time.monotonic() - 30
        await app(scope, receive, send)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=arrived_long_ago), base_url="http://kiln") as late:
        x = np.zeros((1, 3, 32, 32), dtype=np.float32)
        response = await late.post("/v2/models/image/infer", json={**_json_request(x), "parameters": {"timeout": 2_000_000}})
    assert response.status_code == 504, response.text
    assert "before it reached the model" in response.json()["error"]
    metrics = (await late_metrics(app)).text
    assert "kiln_inference_exec_count_total" not in metrics or _metric(metrics, "kiln_inference_exec_count_total", "image") == 0


async def late_metrics(app: FastAPI) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kiln") as client:
        return await client.get("/metrics")
