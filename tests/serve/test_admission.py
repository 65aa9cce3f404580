"""The admission gate on its own (pure ASGI): refusals before any work, loop lateness, arrival time."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from starlette.types import Message, Receive, Scope, Send

from kiln.serve.admission import AdmissionMiddleware, LoopLag


class HeldApp:
    """Reads the body and answers 200, or waits on ``release`` first when asked to."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.hold = False
        self.scopes: list[Scope] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        await receive()
        if self.hold:
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _call(gate: AdmissionMiddleware, path: str = "/v2/models/m/infer") -> tuple[list[Message], int]:
    """One request through the gate: the messages sent back and how often the body was read."""
    reads = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 1000, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    await gate(scope, receive, send)
    return sent, reads


def _headers(start: Message) -> dict[bytes, bytes]:
    return dict(start["headers"])


async def test_saturated_gate_answers_503_with_retry_after_without_reading_the_body() -> None:
    inner = HeldApp()
    inner.hold = True
    gate = AdmissionMiddleware(inner, max_inflight=1, max_lag_s=None)
    held = asyncio.create_task(_call(gate))
    await asyncio.sleep(0.01)
    assert gate.inflight == 1
    sent, reads = await _call(gate)
    start, body = sent
    assert start["status"] == 503 and reads == 0 and len(inner.scopes) == 1
    headers = _headers(start)
    assert int(headers[b"retry-after"]) >= 1 and headers[b"content-type"] == b"application/json"
    assert headers[b"x-content-type-options"] == b"nosniff" and b"content-security-policy" in headers
    assert "retry" in json.loads(body["body"])["error"]
    inner.hold = False  # the first request still waits; the probe does not
    sent, _ = await _call(gate, "/v2/health/ready")  # probes always pass
    assert sent[0]["status"] == 200
    inner.release.set()
    (start, _), reads = await held
    assert start["status"] == 200 and reads == 1 and gate.inflight == 0
    assert gate.rejected["inflight"] == 1


async def _busy_loop(seconds: float, block_s: float = 0.04) -> None:
    """Keeps the event loop late the whole time, as a saturated CPU does: every iteration blocks."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(block_s)
        await asyncio.sleep(0)


async def test_persistently_late_event_loop_refuses_new_requests_and_recovers() -> None:
    inner = HeldApp()
    gate = AdmissionMiddleware(inner, max_inflight=100, max_lag_s=0.02, min_inflight=0)
    sent, _ = await _call(gate)  # starts the lateness probe
    assert sent[0]["status"] == 200
    await _busy_loop(0.7)  # every tick of the window is late by about 40 ms: twice max_lag_s
    sent, reads = await _call(gate)
    assert sent[0]["status"] == 503 and reads == 0 and gate.rejected["loop_lag"] == 1
    assert int(_headers(sent[0])[b"retry-after"]) >= 1
    await asyncio.sleep(0.1)  # one tick on time: the least lateness of the window drops
    sent, _ = await _call(gate)
    assert sent[0]["status"] == 200


async def test_one_stall_refuses_nobody() -> None:
    """A single long pause (a gc, a checkpoint) is not overload: the ticks after it are on time."""
    gate = AdmissionMiddleware(HeldApp(), max_inflight=100, max_lag_s=0.02, min_inflight=0)
    await _call(gate)
    await asyncio.sleep(0.1)
    time.sleep(0.3)
    await asyncio.sleep(0.03)
    sent, _ = await _call(gate)
    assert sent[0]["status"] == 200 and gate.rejected["loop_lag"] == 0


async def test_a_few_requests_are_always_let_in() -> None:
    gate = AdmissionMiddleware(HeldApp(), max_inflight=100, max_lag_s=0.02, min_inflight=4)
    await _call(gate)
    await _busy_loop(0.7)
    sent, _ = await _call(gate)  # late loop, but nothing else in progress
    assert sent[0]["status"] == 200


async def test_accepted_request_carries_its_arrival_time() -> None:
    inner = HeldApp()
    gate = AdmissionMiddleware(inner, max_inflight=10, max_lag_s=None)
    before = time.monotonic()
    await _call(gate)
    arrived: Any = inner.scopes[0]["state"]["arrived"]
    assert before <= arrived <= time.monotonic()


async def test_loop_lag_is_the_least_lateness_of_its_window() -> None:
    lag = LoopLag(asyncio.get_running_loop(), interval_s=0.01, window_s=0.2)
    try:
        await asyncio.sleep(0.05)
        assert lag.current() < 0.01
        time.sleep(0.1)  # one late tick
        await asyncio.sleep(0.05)
        assert lag.current() < 0.01
        await _busy_loop(0.4, block_s=0.03)
        assert lag.current() >= 0.02
        await asyncio.sleep(0.3)
        assert lag.current() < 0.01
    finally:
        lag.stop()


async def test_refusals_and_loop_lag_are_exported_as_metrics() -> None:
    from prometheus_client import generate_latest

    from kiln.serve.metrics import ServerMetrics

    metrics = ServerMetrics(gpu=False)
    inner = HeldApp()
    inner.hold = True
    gate = AdmissionMiddleware(inner, max_inflight=1, max_lag_s=None, metrics=metrics)
    held = asyncio.create_task(_call(gate))
    await asyncio.sleep(0.01)
    for _ in range(3):
        sent, _ = await _call(gate)
        assert sent[0]["status"] == 503
    inner.release.set()
    await held
    text = generate_latest(metrics.registry).decode()
    assert 'kiln_admission_refused_total{reason="inflight"} 3.0' in text
    assert 'kiln_admission_refused_total{reason="loop_lag"} 0.0' in text
    assert "kiln_event_loop_lag_seconds 0.0" in text
