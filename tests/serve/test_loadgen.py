"""``kiln bench serve``'s targets: gRPC channels are separate connections, and answers name their worker.

A server whose workers share the port spreads connections over them, not calls: one gRPC channel
reaches one worker; several channels reach several.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from kiln.serve.loadgen import GrpcTarget, closed_loop, grpc_payload, grpc_target, make_target
from tests.live_server import wait_until_ready

from .conftest import free_port
from .test_workers import _children, _kill, _serve, small_repo  # noqa: F401  (small_repo is a fixture)


@pytest.fixture
def workers(small_repo: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:  # noqa: F811
    http_port, grpc_port = free_port(), free_port()
    server = _serve(small_repo, http_port, grpc_port, 2, tmp_path / "home")
    try:
        wait_until_ready(f"http://127.0.0.1:{http_port}", [], seconds=120, request_timeout=1)
        yield server, http_port, grpc_port
    finally:
        _kill(server)


def _load(make: Callable[[], object], seconds: float = 1.5) -> dict[str, int]:
    async def run() -> dict[str, int]:
        target = make()  # gRPC aio channels belong to the loop they are made on
        try:
            result = await closed_loop(target, 8, seconds, batch=1, protocol="grpc", warmup_s=0.3)  # type: ignore[arg-type]
        finally:
            await target.close()  # type: ignore[attr-defined]
        assert result.requests > 0 and not result.errors, result.errors
        return result.workers

    return asyncio.run(run())


def _until_served(make: Callable[[], object]) -> dict[str, int]:
    """A worker still loading its model answers UNAVAILABLE: load again until none does (60 s at most)."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return _load(make)
        except AssertionError:
            assert time.monotonic() < deadline, "the workers never answered without errors"
            time.sleep(0.5)


def test_one_grpc_channel_reaches_one_worker_several_reach_them_all(workers: tuple[subprocess.Popen[bytes], int, int]) -> None:
    server, http_port, grpc_port = workers
    pids = {str(pid) for pid in _children(server.pid)}
    assert len(pids) == 2
    body = grpc_payload("long", {"x": np.array([[1, 2, 3]], dtype=np.int64)})
    single = _until_served(lambda: GrpcTarget(f"127.0.0.1:{grpc_port}", body, connections=1))
    assert len(single) == 1 and set(single) <= pids, "one connection: every call to the same worker"
    spread = _until_served(lambda: GrpcTarget(f"127.0.0.1:{grpc_port}", body, connections=16))
    assert set(spread) == pids, f"16 connections must reach both workers: {spread}"
    http = _load(lambda: make_target(f"127.0.0.1:{http_port}", "long", "http", {"x": np.array([[1, 2, 3]], dtype=np.int64)}, 16))
    assert http and set(http) <= pids, "HTTP answers name their worker too"


def test_the_command_refuses_a_connection_count_out_of_range() -> None:
    out = subprocess.run([sys.executable, "-m", "kiln", "bench", "serve", "--url", "127.0.0.1:1", "--model", "m",
                          "--connections", "0"], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "--connections 0" in out.stdout + out.stderr and "Traceback" not in out.stderr


def test_the_command_refuses_a_grpc_target_over_http() -> None:
    out = subprocess.run([sys.executable, "-m", "kiln", "bench", "serve", "--url", "ipv4:127.0.0.1:1,127.0.0.1:2",
                          "--model", "m"], capture_output=True, text=True, timeout=60)
    text = " ".join((out.stdout + out.stderr).split())
    assert out.returncode != 0 and "is a gRPC target" in text and "--protocol grpc" in text and "Traceback" not in text


@pytest.mark.parametrize(("url", "target", "balanced"), [
    ("127.0.0.1:8001", "127.0.0.1:8001", False),
    ("grpc://127.0.0.1:8001", "127.0.0.1:8001", False),
    ("127.0.0.1:9000,127.0.0.1:9001", "ipv4:127.0.0.1:9000,127.0.0.1:9001", True),
    ("[::1]:9000,[::1]:9001", "ipv6:[::1]:9000,[::1]:9001", True),
    ("unix:///tmp/kiln.sock", "unix:///tmp/kiln.sock", False),
    ("ipv4:127.0.0.1:9000,127.0.0.1:9001", "ipv4:127.0.0.1:9000,127.0.0.1:9001", True),
    ("grpc://ipv4:127.0.0.1:9000", "ipv4:127.0.0.1:9000", True),
    ("ipv6:[::1]:9000,[::1]:9001", "ipv6:[::1]:9000,[::1]:9001", True),
    ("dns:///localhost:9000", "dns:///localhost:9000", True),
])
def test_a_target_of_several_servers_gets_the_round_robin_policy(url: str, target: str, balanced: bool) -> None:
    async def options() -> list[tuple[str, object]]:
        made = GrpcTarget(url, b"", connections=1)
        await made.close()
        return made.options

    assert grpc_target(url) == (target, [("grpc.lb_policy_name", "round_robin")] if balanced else [])
    assert (("grpc.lb_policy_name", "round_robin") in asyncio.run(options())) == balanced


def test_grpc_answers_carry_their_server_stages(workers: tuple[subprocess.Popen[bytes], int, int]) -> None:
    """Each ModelInfer answer's ``server-timing`` trailer gives its stages; the load generator reports their
    percentiles and what lies outside the server (latency less the server's time)."""
    _, _, grpc_port = workers
    body = grpc_payload("long", {"x": np.array([[1, 2, 3]], dtype=np.int64)})
    _until_served(lambda: GrpcTarget(f"127.0.0.1:{grpc_port}", body, connections=2))

    async def run() -> dict[str, object]:
        target = GrpcTarget(f"127.0.0.1:{grpc_port}", body, connections=2)
        try:
            one = await target.send()
            result = await closed_loop(target, 4, 1.0, batch=1, protocol="grpc", warmup_s=0.2)
        finally:
            await target.close()
        assert one.worker is not None and one.stages is not None
        assert set(one.stages) == {"parse", "check", "queue", "infer", "resume", "respond", "server"}
        assert one.stages["server"] >= one.stages["queue"] + one.stages["infer"]
        stages = result.stages_ms
        assert len(stages["server"]) == len(stages["outside"]) == result.requests > 0
        assert np.median(stages["outside"]) > 0  # the network and the client take some time
        return result.summary()

    summary = asyncio.run(run())
    table = summary["server_stages_ms"]
    assert isinstance(table, dict) and set(table) == {"parse", "check", "queue", "infer", "resume", "respond", "server", "outside"}
    assert all(q["p50"] <= q["p95"] <= q["p99"] for q in table.values())
