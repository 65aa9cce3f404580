"""``kiln serve --workers 2``: two server processes share the HTTP and gRPC ports, and stop together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from kiln.serve.workers import WORKER_HEADER
from tests.live_server import wait_until_ready

from .conftest import Engines, add_model, free_port


def _children(pid: int) -> list[int]:
    """The worker processes of a supervisor (not multiprocessing's resource tracker)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.extend(int(c) for c in (task / "children").read_text().split())
    return [c for c in found if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]


def _serve(repo: Path, http_port: int, grpc_port: int, workers: int, home: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KILN_HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "kiln", "serve", "--repo", str(repo), "--http-port", str(http_port),
               "--grpc-port", str(grpc_port), "--workers", str(workers), "--no-pages", "--no-access-log",
               "--log-level", "info", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill(server: subprocess.Popen[bytes]) -> None:
    """Fixture teardown: a server a test left running goes, its workers first."""
    if server.poll() is None:
        for child in _children(server.pid):
            os.kill(child, signal.SIGKILL)
        server.kill()
        server.wait(10)


@pytest.fixture
def small_repo(tmp_path: Path, engines: Engines) -> Path:
    root = tmp_path / "repo"
    add_model(root, "long", engines.long, {"max_batch_size": 8, "max_queue_delay_us": 0})
    return root


@pytest.fixture
def two_workers(small_repo: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int, int]]:
    http_port, grpc_port = free_port(), free_port()
    server = _serve(small_repo, http_port, grpc_port, 2, tmp_path / "home")
    try:
        yield server, http_port, grpc_port
    finally:
        _kill(server)


def test_two_workers_share_the_ports_and_drain_on_sigterm(two_workers: tuple[subprocess.Popen[bytes], int, int]) -> None:
    import grpc
    import httpx
    import tritonclient.grpc as grpcclient
    from tritonclient.grpc import service_pb2 as pb

    server, http_port, grpc_port = two_workers
    url = f"http://127.0.0.1:{http_port}"
    wait_until_ready(url, [], seconds=120, request_timeout=1)
    workers = _children(server.pid)
    assert len(workers) == 2

    # every request on a new connection: the kernel spreads them over both workers
    http_pids: set[int] = set()
    grpc_pids: set[int] = set()
    body = {"inputs": [{"name": "x", "shape": [1, 3], "datatype": "INT64", "data": [1, 2, 3]}]}
    deadline = time.monotonic() + 60
    for _ in range(40):
        with httpx.Client(timeout=10) as client:
            ready = client.get(url + "/v2/health/ready")
            if ready.status_code != 200:  # the other worker may still be loading
                assert time.monotonic() < deadline, "a worker never became ready"
                time.sleep(0.2)
                continue
            answer = client.post(url + "/v2/models/long/infer", json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3, 6, 9]
        http_pids.add(int(answer.headers[WORKER_HEADER]))

        client = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        tensor = grpcclient.InferInput("x", [1, 3], "INT64")
        tensor.set_data_from_numpy(np.array([[1, 2, 3]], dtype=np.int64))
        try:
            result = client.infer("long", [tensor])
        except Exception as exc:  # a worker still loading its model answers UNAVAILABLE
            assert time.monotonic() < deadline, f"gRPC infer kept failing: {exc}"
            client.close()
            continue
        assert result.as_numpy("y").tolist() == [[3, 6, 9]]
        client.close()
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        call = channel.unary_unary("/inference.GRPCInferenceService/ServerLive",
                                   request_serializer=pb.ServerLiveRequest.SerializeToString,
                                   response_deserializer=pb.ServerLiveResponse.FromString)
        _, outcome = call.with_call(pb.ServerLiveRequest(), timeout=10)
        grpc_pids.update(int(value) for key, value in outcome.trailing_metadata() if key == WORKER_HEADER)
        channel.close()
    assert http_pids == set(workers), "HTTP answers come from both workers"
    assert grpc_pids == set(workers), "gRPC answers come from both workers"

    server.send_signal(signal.SIGTERM)
    assert server.wait(20) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    stderr = server.stderr.read().decode() if server.stderr else ""
    assert "stopping 2 workers" in stderr


def test_a_worker_that_dies_stops_the_server_with_a_failure(two_workers: tuple[subprocess.Popen[bytes], int, int]) -> None:
    server, http_port, _ = two_workers
    wait_until_ready(f"http://127.0.0.1:{http_port}", [], seconds=120, request_timeout=1)
    first, second = _children(server.pid)
    os.kill(first, signal.SIGKILL)
    assert server.wait(20) == 1
    stderr = server.stderr.read().decode() if server.stderr else ""
    assert f"(pid {first}) exited with status -9" in stderr
    assert not Path(f"/proc/{second}").exists() or "zombie" in Path(f"/proc/{second}/status").read_text()


def test_workers_that_cannot_start_fail_the_command(tmp_path: Path) -> None:
    server = _serve(tmp_path / "missing", free_port(), free_port(), 2, tmp_path / "home")  # every worker fails
    assert server.wait(120) == 1
    stderr = server.stderr.read().decode() if server.stderr else ""
    assert "failed at start-up" in stderr and "is not a directory" in stderr


def test_port_zero_with_workers_is_refused(small_repo: Path, tmp_path: Path) -> None:
    server = _serve(small_repo, 0, free_port(), 2, tmp_path / "home")
    assert server.wait(60) == 2
    stderr = server.stderr.read().decode() if server.stderr else ""
    assert "--workers 2 needs a fixed --http-port" in stderr



@pytest.fixture
def shared_engines(small_repo: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    http_port = free_port()
    server = _serve(small_repo, http_port, free_port(), 2, tmp_path / "home", "--shared-engines")
    try:
        yield server, http_port
    finally:
        _kill(server)


def _started(pid: int) -> int:
    """Start time of a process in clock ticks (/proc/PID/stat field 22)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])


def test_shared_engines_load_each_model_once_and_serve_both_workers(shared_engines: tuple[subprocess.Popen[bytes], int]) -> None:
    import httpx

    server, http_port = shared_engines
    url = f"http://127.0.0.1:{http_port}"
    wait_until_ready(url, [], seconds=120, request_timeout=1)
    children = _children(server.pid)
    assert len(children) == 3, "two workers and the engine host"
    pids: set[int] = set()
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT64", "data": [1, 2, 3, 4, 5, 6]}]}
    deadline = time.monotonic() + 60
    while len(pids) < 2:
        assert time.monotonic() < deadline, f"answers came only from {pids}"
        with httpx.Client(timeout=10) as client:
            answer = client.post(url + "/v2/models/long/infer", json=body)
        if answer.status_code == 503:  # the other worker may still be attaching
            time.sleep(0.2)
            continue
        assert answer.status_code == 200, answer.text
        assert answer.json()["outputs"][0]["data"] == [3, 6, 9, 12, 15, 18]
        pids.add(int(answer.headers[WORKER_HEADER]))
    server.send_signal(signal.SIGTERM)
    assert server.wait(30) == 0
    stderr = server.stderr.read().decode() if server.stderr else ""
    assert stderr.count("engine host: model long version 1 ready") == 1, stderr[-3000:]
    assert "kiln engine host started" in stderr
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_an_engine_host_that_dies_stops_the_server_with_a_failure(shared_engines: tuple[subprocess.Popen[bytes], int]) -> None:
    server, http_port = shared_engines
    wait_until_ready(f"http://127.0.0.1:{http_port}", [], seconds=120, request_timeout=1)
    children = _children(server.pid)
    assert len(children) == 3
    host = min(children, key=_started)  # started, and listening, before the workers
    os.kill(host, signal.SIGKILL)
    assert server.wait(30) == 1
    stderr = server.stderr.read().decode() if server.stderr else ""
    assert f"engine host (pid {host}) exited with status -9" in stderr
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def _consecutive_free_ports(count: int, avoid: tuple[int, ...]) -> int:
    """The first of ``count`` consecutive free loopback ports, none of them in ``avoid``."""
    import contextlib
    import socket

    for _ in range(100):
        first = free_port()
        if first + count > 65536 or any(first <= port < first + count for port in avoid):
            continue
        with contextlib.ExitStack() as stack:
            try:
                for port in range(first, first + count):
                    stack.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return first
    raise AssertionError(f"no {count} consecutive free ports")


def test_own_grpc_ports_let_one_round_robin_channel_reach_every_worker(small_repo: Path, tmp_path: Path) -> None:
    import grpc

    from kiln.serve.loadgen import grpc_payload, grpc_target
    from kiln.serve.protos import grpc_service_pb2 as pb

    http_port, grpc_port = free_port(), free_port()
    first = _consecutive_free_ports(2, (http_port, grpc_port))
    server = _serve(small_repo, http_port, grpc_port, 2, tmp_path / "home", "--grpc-worker-ports", str(first))
    body = grpc_payload("long", {"x": np.array([[1, 2, 3]], dtype=np.int64)})

    def infer(channel: grpc.Channel) -> str:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=lambda b: b,
                                   response_deserializer=pb.ModelInferResponse.FromString)
        answer, outcome = call.with_call(body, timeout=10)
        assert np.frombuffer(answer.raw_output_contents[0], dtype=np.int64).tolist() == [3, 6, 9]
        return next(str(value) for key, value in outcome.trailing_metadata() if key == WORKER_HEADER)

    try:
        wait_until_ready(f"http://127.0.0.1:{http_port}", [], seconds=120, request_timeout=1)
        workers = {str(pid) for pid in _children(server.pid)}
        assert len(workers) == 2
        own = set()
        for port in (first, first + 1):  # each own port is one worker, serving once its model is loaded
            deadline = time.monotonic() + 60
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                while True:
                    try:
                        own.add(infer(channel))
                        break
                    except grpc.RpcError:
                        assert time.monotonic() < deadline, f"the worker on port {port} never answered"
                        time.sleep(0.2)
        assert own == workers, "each own port belongs to another worker"

        target, options = grpc_target(f"ipv4:127.0.0.1:{first},127.0.0.1:{first + 1}")
        with grpc.insecure_channel(target, options=options) as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
            seen, deadline = set(), time.monotonic() + 10
            while seen != workers and time.monotonic() < deadline:  # until both subchannels are connected
                seen.add(infer(channel))
            answered = Counter(infer(channel) for _ in range(20))
        assert set(answered) == workers and min(answered.values()) >= 5, f"one channel, calls dealt in turn: {answered}"
    finally:
        _kill(server)
    stderr = server.stderr.read().decode() if server.stderr else ""
    assert f"ipv4:127.0.0.1:{first},127.0.0.1:{first + 1}" in stderr and "round_robin" in stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "1"], "--grpc-worker-ports 9100 needs --workers 2 or more"),
    (["--workers", "2", "--grpc-port", "0"], "needs gRPC, which --grpc-port 0 disables"),
    (["--workers", "3", "--http-port", "9102"], "takes ports 9100-9102, which include --http-port 9102"),
    (["--workers", "2", "--grpc-port", "9100"], "which include --grpc-port 9100"),
    (["--workers", "2", "--grpc-worker-ports", "65535"], "asks for ports 65535-65536, outside 1-65535"),
])
def test_grpc_worker_ports_are_checked(args: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from kiln.cli import main

    monkeypatch.setattr(sys, "argv", ["kiln", "serve", "--repo", str(tmp_path), "--http-port", "9000", "--grpc-port", "9001",
                                      "--grpc-worker-ports", "9100", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    out = capsys.readouterr()
    text = " ".join((out.out + out.err).split())  # the console wraps long lines
    assert "Traceback" not in text and message in text


def test_the_round_robin_target_names_every_workers_port() -> None:
    from kiln.serve.workers import round_robin_target

    assert round_robin_target("127.0.0.1", 9100, 3) == "ipv4:127.0.0.1:9100,127.0.0.1:9101,127.0.0.1:9102"
    assert round_robin_target("::1", 9100, 2) == "ipv6:[::1]:9100,[::1]:9101"
    for host in ("localhost", "0.0.0.0", "::"):  # no address a client can dial: the log names the ports instead
        assert round_robin_target(host, 9100, 2) is None


@pytest.mark.parametrize(("share_port", "joins"), [(False, False), (True, True)])
def test_a_workers_own_grpc_port_is_never_shared(share_port: bool, joins: bool) -> None:
    """A worker's own port (share_port=False) refuses to bind beside a socket that has the port with SO_REUSEPORT;
    the shared port (the default for a worker) joins it: that is how the workers share one port."""
    import asyncio
    import socket
    from types import SimpleNamespace

    from kiln.errors import KilnError
    from kiln.serve.oip_grpc import create_grpc_server

    port = free_port()
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen()

    async def bind() -> None:
        server = create_grpc_server(SimpleNamespace(repository=None), f"127.0.0.1:{port}",  # type: ignore[arg-type]
                                    worker_pid=os.getpid(), share_port=share_port)
        await server.stop(grace=0)

    try:
        if joins:
            asyncio.run(bind())
        else:
            with pytest.raises(KilnError, match=f"cannot bind gRPC to 127.0.0.1:{port}"):
                asyncio.run(bind())
    finally:
        holder.close()
