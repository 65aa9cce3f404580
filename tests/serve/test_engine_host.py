"""The engine host (``--shared-engines``): remote runners attach to one loaded model, their calls are
batched together there, errors come back with their kind, and shared memory regions grow."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kiln.errors import KilnError, UnavailableError
from kiln.serve.engine_host import EngineHost
from kiln.serve.model import ServedModel
from kiln.serve.model_config import ModelConfig
from kiln.serve.remote_runner import RemoteRunner
from kiln.serve.timing import start_timings

from .conftest import Engines, add_model


class RunningHost:
    def __init__(self, address: str) -> None:
        self.host = EngineHost(address)
        self.address = address
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.host.serve(self._stop, on_ready=self._ready.set)

    def start(self) -> RunningHost:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def host(tmp_path: Path) -> Iterator[RunningHost]:
    running = RunningHost(str(tmp_path / "engines.sock")).start()
    try:
        yield running
    finally:
        running.stop()


def _served(root: Path, engines: Engines, config: dict[str, Any]) -> ServedModel:
    version = add_model(root, "long", engines.long, config)
    return ServedModel("long", "1", version, ModelConfig.read(root / "long"))


def test_remote_runners_share_one_model_and_their_calls_batch_together(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    served = _served(tmp_path / "repo", engines, {"max_batch_size": 8, "max_queue_delay_us": 2_000_000, "preferred_batch_sizes": [2]})
    first = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    second = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    assert first.max_batch_size == 8
    (hosted,) = host.host.models.values()
    assert hosted.users == 2
    instance = hosted.served.batcher.instances[0]  # type: ignore[union-attr]
    seen: list[int] = []
    local = instance.runner

    class Recording:
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            seen.append(next(iter(inputs.values())).shape[0])
            return local.infer(inputs, check=check)

    instance.runner = Recording()
    results: dict[str, dict[str, np.ndarray]] = {}
    calls = [threading.Thread(target=lambda r=r, k=k, x=x: results.__setitem__(k, r.infer({"x": x})))
             for r, k, x in ((first, "a", np.array([[1, 2, 3]], np.int64)), (second, "b", np.array([[4, 5, 6]], np.int64)))]
    for call in calls:
        call.start()
    for call in calls:
        call.join(20)
    assert results["a"]["y"].tolist() == [[3, 6, 9]]
    assert results["b"]["y"].tolist() == [[12, 15, 18]]
    # the host waited (2 s) for company and dispatched at the preferred size 2: one batch for both workers
    assert seen == [2]
    first.close()
    second.close()


def test_a_region_grows_for_larger_batches(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    served = _served(tmp_path / "repo", engines, {"max_batch_size": 8, "max_queue_delay_us": 0})
    runner = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    for rows in (1, 8, 2, 8):
        x = np.arange(rows * 3, dtype=np.int64).reshape(rows, 3)
        assert runner.infer({"x": x})["y"].tolist() == (x * 3).tolist()
    runner.close()


def test_the_model_closes_when_its_last_link_leaves(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    served = _served(tmp_path / "repo", engines, {"max_queue_delay_us": 0})
    runner = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    assert len(host.host.models) == 1
    runner.close()
    for _ in range(100):
        if not host.host.models:
            break
        threading.Event().wait(0.05)
    assert host.host.models == {}


def test_errors_come_back_with_their_kind(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    served = _served(tmp_path / "repo", engines, {"max_batch_size": 4, "max_queue_delay_us": 0})
    runner = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    # workers check requests against the model before they send them; the host only guards the batch size
    with pytest.raises(KilnError, match=r"engine host: the engine failed on a batch of 1"):
        runner.infer({"x": np.zeros((1, 3), np.float32)})
    with pytest.raises(KilnError, match=r"batch 6 is outside 1..max_batch_size 4"):
        runner.infer({"x": np.zeros((6, 3), np.int64)})
    # the link survives a refused call
    assert runner.infer({"x": np.ones((1, 3), np.int64)})["y"].tolist() == [[3, 3, 3]]
    (hosted,) = host.host.models.values()
    hosted.served.batcher.queue.close()  # type: ignore[union-attr]  # as when the host shuts down
    with pytest.raises(UnavailableError, match="shutting down"):
        runner.infer({"x": np.ones((1, 3), np.int64)})
    runner.close()


def test_attaching_a_model_that_cannot_load_names_the_problem(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    served = _served(tmp_path / "repo", engines, {})
    (served.directory / "model.opt.onnx").write_bytes(b"not an onnx model")
    with pytest.raises(KilnError, match="engine host: "):
        RemoteRunner(host.address, "long", "1", served.directory, served.config)
    assert host.host.models == {}
    with pytest.raises(KilnError, match="cannot reach the engine host"):
        RemoteRunner(str(tmp_path / "nothing.sock"), "long", "1", served.directory, served.config)


def test_a_served_model_with_an_engine_host_runs_remotely_except_text_models(host: RunningHost, tmp_path: Path,
                                                                            engines: Engines) -> None:
    root = tmp_path / "repo"
    version = add_model(root, "long", engines.long, {"instances": 1})
    served = ServedModel("long", "1", version, ModelConfig.read(root / "long"), engine_host=host.address)
    runners = served.load()
    assert served.remote and len(runners) == served.remote_calls == 4
    assert all(isinstance(r, RemoteRunner) for r in runners)
    assert runners[0].infer({"x": np.ones((2, 3), np.int64)})["y"].tolist() == [[3, 3, 3]] * 2
    for runner in runners:
        runner.close()  # type: ignore[attr-defined]
    text = add_model(root, "text", engines.text)
    local = ServedModel("text", "1", text, ModelConfig.read(root / "text"), engine_host=host.address)
    assert not any(isinstance(r, RemoteRunner) for r in local.load())
    assert not local.remote


def _slow_engine(host: RunningHost, seconds: float) -> None:
    (hosted,) = host.host.models.values()
    for instance in hosted.served.batcher.instances:  # type: ignore[union-attr]
        local = instance.runner

        class Slow:
            def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True, local: Any = local) -> dict[str, np.ndarray]:
                time.sleep(seconds)
                return local.infer(inputs, check=check)

        instance.runner = Slow()


def test_a_link_that_times_out_is_never_reused(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    served = _served(tmp_path / "repo", engines, {"max_queue_delay_us": 0, "hang_timeout_s": 0.3})
    runner = RemoteRunner(host.address, "long", "1", served.directory, served.config, reply_margin_s=0.0)
    _slow_engine(host, 1.0)
    with pytest.raises(UnavailableError, match=r"did not answer within 0\.3 s"):
        runner.infer({"x": np.ones((1, 3), np.int64)})
    _slow_engine(host, 0.0)
    time.sleep(1.0)  # the late answer to the first call arrives on the old link, which is closed
    # a new link: the answer is this call's, not the late one
    assert runner.infer({"x": np.full((1, 3), 100, np.int64)})["y"].tolist() == [[300, 300, 300]]
    runner.close()


def test_closing_a_runner_fails_its_blocked_call_at_once(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    served = _served(tmp_path / "repo", engines, {"max_queue_delay_us": 0})
    runner = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    _slow_engine(host, 3.0)
    errors: list[BaseException] = []

    def call() -> None:
        try:
            runner.infer({"x": np.ones((1, 3), np.int64)})
        except BaseException as exc:
            errors.append(exc)

    blocked = threading.Thread(target=call)
    started = time.monotonic()
    blocked.start()
    time.sleep(0.3)
    runner.close()
    blocked.join(5)
    assert time.monotonic() - started < 2.5
    assert len(errors) == 1 and isinstance(errors[0], UnavailableError)
    with pytest.raises(UnavailableError, match="closed"):
        runner.infer({"x": np.ones((1, 3), np.int64)})


def test_the_batch_deadline_travels_to_the_host(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    from kiln.errors import DeadlineExceededError
    from kiln.serve import batcher

    served = _served(tmp_path / "repo", engines, {"max_queue_delay_us": 0})
    runner = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    batcher._batch.deadline, batcher._batch.priority = time.monotonic() - 0.01, 1  # as Instance sets it for a batch
    try:
        with pytest.raises(DeadlineExceededError):
            runner.infer({"x": np.ones((1, 3), np.int64)})
    finally:
        batcher._batch.deadline, batcher._batch.priority = None, 0
    assert runner.infer({"x": np.ones((1, 3), np.int64)})["y"].tolist() == [[3, 3, 3]]
    runner.close()


def test_an_unclosed_runner_releases_its_link_and_region(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    import gc
    import os

    served = _served(tmp_path / "repo", engines, {"max_queue_delay_us": 0})
    warm = RemoteRunner(host.address, "long", "1", served.directory, served.config)  # the model loads once
    gc.collect()
    before = len(os.listdir("/proc/self/fd"))
    runners = [RemoteRunner(host.address, "long", "1", served.directory, served.config) for _ in range(3)]
    for runner in runners:
        runner.infer({"x": np.ones((1, 3), np.int64)})  # each now holds a socket and a region
    assert len(os.listdir("/proc/self/fd")) > before
    del runners, runner
    gc.collect()
    for _ in range(100):  # the host's side (in this process too) closes once it sees the links end
        if len(os.listdir("/proc/self/fd")) <= before:
            break
        time.sleep(0.02)
    assert len(os.listdir("/proc/self/fd")) == before
    warm.close()


def test_a_host_that_owns_its_process_freezes_its_heap_after_each_load(tmp_path: Path, engines: Engines,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import kiln.serve.engine_host as engine_host

    frozen: list[int] = []
    monkeypatch.setattr(engine_host, "freeze_heap", lambda: frozen.append(len(frozen)) or 0)
    served = _served(tmp_path / "repo", engines, {"max_batch_size": 8, "max_queue_delay_us": 0})
    embedded = RunningHost(str(tmp_path / "embedded.sock")).start()  # an embedder's process: its heap is its own
    try:
        RemoteRunner(embedded.address, "long", "1", served.directory, served.config).close()
    finally:
        embedded.stop()
    assert frozen == []
    owning = RunningHost(str(tmp_path / "owning.sock"))
    owning.host.freeze_heap = True  # what host_main, the host process's entry point, sets
    owning.start()
    try:
        runner = RemoteRunner(owning.address, "long", "1", served.directory, served.config)
        again = RemoteRunner(owning.address, "long", "1", served.directory, served.config)  # the model is loaded: no new freeze
        assert runner.infer({"x": np.array([[1, 2, 3]], np.int64)})["y"].tolist() == [[3, 6, 9]]
        runner.close()
        again.close()
    finally:
        owning.stop()
    assert frozen == [0], "one freeze per model load"


def test_a_batch_of_parts_is_written_straight_into_the_region(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    served = _served(tmp_path / "repo", engines, {"max_batch_size": 8, "max_queue_delay_us": 0})
    runner = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    for sizes in ((1, 2), (3, 1, 4), (1,)):  # the second call needs a larger region
        parts = [{"x": np.arange(rows * 3, dtype=np.int64).reshape(rows, 3) + 100 * i} for i, rows in enumerate(sizes)]
        joined = np.concatenate([part["x"] for part in parts])
        assert runner.infer_parts(parts)["y"].tolist() == (joined * 3).tolist()
        assert runner.last_gather_s > 0
    runner.close()


def test_the_host_reports_its_stages_of_each_call(host: RunningHost, tmp_path: Path, engines: Engines) -> None:
    # the host's queue delay (0.3 s) and engine time (0.2 s) come back with the answer, and a worker's request
    # timings (its server-timing) name them as parts of its "infer"
    root = tmp_path / "repo"
    version = add_model(root, "long", engines.long, {"instances": 1, "max_batch_size": 8, "max_queue_delay_us": 300_000})
    served = ServedModel("long", "1", version, ModelConfig.read(root / "long"), engine_host=host.address)
    runners = served.load()
    _slow_engine(host, 0.2)

    async def call() -> dict[str, float]:
        served.start(runners, None)
        timings = start_timings()
        assert served.batcher is not None
        outputs = await served.batcher.submit({"x": np.ones((2, 3), np.int64)}, 2, timeout_s=10)
        assert outputs["y"].tolist() == [[3, 3, 3]] * 2
        await served.close()
        return timings.stages

    stages = asyncio.run(call())
    assert stages["host_queue"] >= 0.25
    assert stages["host_infer"] >= 0.19
    assert 0 <= stages["host_link"] < 0.2
    assert stages["infer"] >= stages["host_queue"] + stages["host_infer"]


def test_a_call_queued_past_its_deadline_is_answered_504_while_the_engine_is_busy(host: RunningHost, tmp_path: Path,
                                                                                  engines: Engines) -> None:
    # the host answers from the instance thread, so no link thread waits out a call's time: the deadline watch fails
    # the second call at its 0.3 s while the one instance is still busy (1 s) with the first
    from kiln.errors import DeadlineExceededError

    served = _served(tmp_path / "repo", engines, {"instances": 1, "max_queue_delay_us": 0, "timeout_s": 0.3,
                                                  "hang_timeout_s": 30})
    first = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    second = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    _slow_engine(host, 1.0)
    outcome: list[Any] = []

    def run_first() -> None:
        try:
            outcome.append(first.infer({"x": np.ones((1, 3), np.int64)}))
        except Exception as exc:  # its own 0.3 s pass while it runs: a 504 too
            outcome.append(exc)

    busy = threading.Thread(target=run_first)
    busy.start()
    time.sleep(0.1)  # the first call is on the instance
    started = time.monotonic()
    with pytest.raises(DeadlineExceededError, match="waiting in the queue"):
        second.infer({"x": np.ones((1, 3), np.int64)})
    assert time.monotonic() - started < 0.8
    busy.join(5)
    assert len(outcome) == 1
    first.close()
    second.close()


def test_answered_calls_leave_the_deadline_watch() -> None:
    from kiln.serve.link_replies import DeadlineWatch, LinkReply

    watch = DeadlineWatch().start()
    sent: list[Any] = []
    try:
        for _ in range(100):
            reply = LinkReply(lambda request, outcome: sent.append(outcome))
            watch.watch(time.monotonic() + 60, None, reply)  # type: ignore[arg-type]
            reply.set_result({"y": np.zeros(1)})
        assert len(watch) == 1  # each watch took the answered ones before it off the top
        with pytest.raises(Exception, match="answer already"):
            reply.set_exception(RuntimeError("late"))
        assert len(sent) == 100
    finally:
        watch.stop()


def test_a_link_closed_while_its_call_runs_leaves_the_host_serving(host: RunningHost, tmp_path: Path,
                                                                   engines: Engines) -> None:
    # the call's inputs are views of the link's shared region, which must outlive the link while the batch reads
    # them: here the call's 0.2 s pass while the engine runs (the host answers 504), the worker closes the link,
    # and the batch reads its inputs after that (before ffcdf85 the link's end unmapped them: a crash)
    served = _served(tmp_path / "repo", engines, {"instances": 1, "max_queue_delay_us": 0, "timeout_s": 0.2,
                                                  "hang_timeout_s": 30})
    doomed = RemoteRunner(host.address, "long", "1", served.directory, served.config)
    _slow_engine(host, 0.5)
    with pytest.raises(KilnError, match=r"did not complete within 0\.2 s"):
        doomed.infer({"x": np.ones((8, 3), np.int64)})
    doomed.close()
    time.sleep(0.6)  # the batch reads its inputs and finishes after the link is gone
    fresh = _served(tmp_path / "other", engines, {"max_queue_delay_us": 0})
    other = RemoteRunner(host.address, "long", "1", fresh.directory, fresh.config)
    assert other.infer({"x": np.full((2, 3), 7, np.int64)})["y"].tolist() == [[21, 21, 21]] * 2
    other.close()
