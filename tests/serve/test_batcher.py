"""The batcher on its own (no HTTP): batching rule, split-back, limits, priorities, faults, drain."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from kiln.errors import DeadlineExceededError, UnavailableError
from kiln.serve.batcher import (
    BatchPolicy,
    BatchQueue,
    DynamicBatcher,
    InferenceFailedError,
    Pending,
    signature_of,
)


class RecordingRunner:
    """Doubles each input row and records the batch sizes it was given."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[int] = []
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
        x = inputs["x"]
        with self.lock:
            self.batches.append(x.shape[0])
        if self.delay_s:
            time.sleep(self.delay_s)
        return {"y": x * 2, "sum": x.reshape(x.shape[0], -1).sum(axis=1)}


def _x(rows: int, value: float) -> dict[str, np.ndarray]:
    return {"x": np.full((rows, 3), value, dtype=np.float32)}


async def test_concurrent_requests_are_batched_and_split_back_in_order() -> None:
    runner = RecordingRunner(delay_s=0.01)
    batcher = DynamicBatcher("m/1", [runner], BatchPolicy(max_batch_size=16, max_queue_delay_s=0.05)).start()
    try:
        # 40 distinct requests of 1-3 rows each: every output must match its own input.
        sizes = [1 + i % 3 for i in range(40)]
        results = await asyncio.gather(
            *(batcher.submit(_x(rows, float(i)), rows, timeout_s=10) for i, rows in enumerate(sizes))
        )
    finally:
        await batcher.close()
    for i, (rows, out) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(out["y"], np.full((rows, 3), 2.0 * i, dtype=np.float32))
        np.testing.assert_array_equal(out["sum"], np.full(rows, 3.0 * i, dtype=np.float32))
    assert sum(runner.batches) == sum(sizes)
    assert max(runner.batches) <= 16
    assert len(runner.batches) < len(sizes), "concurrent requests must share engine runs"


async def test_batch_never_exceeds_max_and_multi_row_requests_stay_whole() -> None:
    runner = RecordingRunner(delay_s=0.005)
    batcher = DynamicBatcher("m/1", [runner], BatchPolicy(max_batch_size=5, max_queue_delay_s=0.02)).start()
    try:
        await asyncio.gather(*(batcher.submit(_x(3, i), 3, timeout_s=10) for i in range(6)))
    finally:
        await batcher.close()
    assert all(size <= 5 for size in runner.batches)
    assert all(size % 3 == 0 for size in runner.batches), "a 3-row request is never split across batches"


def _pending(rows: int, priority: int = 0, arrival: float | None = None) -> Pending:
    loop = asyncio.new_event_loop()
    inputs = _x(rows, 0)
    return Pending(inputs, rows, signature_of(inputs), priority, time.monotonic() if arrival is None else arrival, loop.create_future(), loop)


def test_queue_waits_for_the_delay_then_dispatches_what_it_has() -> None:
    queue = BatchQueue(BatchPolicy(max_batch_size=8, max_queue_delay_s=0.05))
    queue.put(_pending(1))
    queue.put(_pending(2))
    started = time.monotonic()
    batch = queue.next_batch()
    assert batch is not None and [r.items for r in batch] == [1, 2]
    assert time.monotonic() - started >= 0.04, "a partial batch waits for more requests up to the delay"


def test_full_batch_and_preferred_size_dispatch_at_once() -> None:
    queue = BatchQueue(BatchPolicy(max_batch_size=4, max_queue_delay_s=60))
    for _ in range(5):
        queue.put(_pending(1))
    batch = queue.next_batch()
    assert batch is not None and len(batch) == 4 and len(queue) == 1

    preferred = BatchQueue(BatchPolicy(max_batch_size=8, max_queue_delay_s=60, preferred_batch_sizes=[2]))
    for _ in range(3):
        preferred.put(_pending(1))
    batch = preferred.next_batch()
    assert batch is not None and len(batch) == 2, "reaching a preferred size dispatches without waiting"


def test_a_batch_of_exactly_a_preferred_size_goes_at_once() -> None:
    """Preferred sizes 8 and 16: a queue holding 8 rows goes without waiting for 16 (a waiting taker wakes for
    it); 12 rows, no preferred size, wait out the delay."""
    queue = BatchQueue(BatchPolicy(max_batch_size=16, max_queue_delay_s=60, preferred_batch_sizes=[8, 16]))
    taken: list[list[int]] = []
    taker = threading.Thread(target=lambda: taken.append([r.items for r in queue.next_batch() or []]), daemon=True)
    taker.start()
    queue.put(_pending(4))
    time.sleep(0.2)  # the taker now waits out the 60 s delay for more
    queue.put(_pending(4))
    taker.join(timeout=10)
    assert not taker.is_alive(), "8 rows, a preferred size, must not wait for the delay"
    assert taken == [[4, 4]]

    short = BatchQueue(BatchPolicy(max_batch_size=16, max_queue_delay_s=0.1, preferred_batch_sizes=[8, 16]))
    for items in (4, 8):
        short.put(_pending(items))
    started = time.monotonic()
    batch = short.next_batch()
    assert batch is not None and [r.items for r in batch] == [4, 8]
    assert time.monotonic() - started >= 0.05, "12 rows is no preferred size: wait for more up to the delay"


def test_a_taker_wakes_for_a_preferred_batch_beside_other_shapes_and_after_a_discard() -> None:
    """The wake-up counts the rows a batch of that shape can hold, not every queued row: 4 + 4 rows of one shape
    are a preferred 8 although 3 rows of another shape wait too; and discarding 4 of 4 + 8 leaves a preferred 8."""
    def wide(rows: int) -> Pending:
        loop = asyncio.new_event_loop()
        inputs = {"x": np.zeros((rows, 5), dtype=np.float32)}
        return Pending(inputs, rows, signature_of(inputs), 0, time.monotonic(), loop.create_future(), loop)

    def taken_within(queue: BatchQueue, act: Callable[[], None]) -> list[int]:
        taken: list[list[int]] = []
        taker = threading.Thread(target=lambda: taken.append([r.items for r in queue.next_batch() or []]), daemon=True)
        taker.start()
        time.sleep(0.3)  # the taker waits out the 60 s delay
        act()
        taker.join(timeout=10)
        assert not taker.is_alive(), "a preferred-size batch was queued, but the taker slept on"
        return taken[0]

    mixed = BatchQueue(BatchPolicy(max_batch_size=16, max_queue_delay_s=60, preferred_batch_sizes=[8, 16]))
    mixed.put(_pending(4))
    mixed.put(wide(3))
    assert taken_within(mixed, lambda: mixed.put(_pending(4))) == [4, 4]

    dropped = BatchQueue(BatchPolicy(max_batch_size=16, max_queue_delay_s=60, preferred_batch_sizes=[8, 16]))
    first = _pending(4)
    dropped.put(first)
    dropped.put(_pending(8))
    assert taken_within(dropped, lambda: dropped.discard(first)) == [8]


def test_a_waiting_taker_dispatches_once_the_batch_fills_and_leftovers_reach_another() -> None:
    """Takers already waiting (out the queue delay, or on an empty queue) wake when a batch fills up, not only at
    the delay's end; requests a taker leaves behind wake the other taker."""
    queue = BatchQueue(BatchPolicy(max_batch_size=4, max_queue_delay_s=60))
    batches: list[list[int]] = []

    def take() -> None:
        batch = queue.next_batch()
        assert batch is not None
        batches.append([r.items for r in batch])

    takers = [threading.Thread(target=take, daemon=True) for _ in range(2)]
    for taker in takers:
        taker.start()
    time.sleep(0.2)  # both wait on the empty queue
    queue.put(_pending(1))
    time.sleep(0.2)  # one of them now waits out the 60 s delay
    for items in (1, 2, 4):  # a full batch (1 + 1 + 2 rows), and a second full one (4) that only the other taker runs
        queue.put(_pending(items))
    for taker in takers:
        taker.join(timeout=10)
    assert not any(t.is_alive() for t in takers), f"a taker slept through a full batch: took {batches}"
    assert sorted(batches) == [[1, 1, 2], [4]]


def test_a_preferred_size_above_the_limit_does_not_hold_back_a_full_batch() -> None:
    queue = BatchQueue(BatchPolicy(max_batch_size=4, max_queue_delay_s=60, preferred_batch_sizes=[8]))
    taken: list[int] = []
    taker = threading.Thread(target=lambda: taken.extend(r.items for r in queue.next_batch() or []), daemon=True)
    taker.start()
    time.sleep(0.2)  # the taker waits on the empty queue, then (after the first put) out the 60 s delay
    for _ in range(4):
        queue.put(_pending(1))
        time.sleep(0.02)
    taker.join(timeout=10)
    assert not taker.is_alive() and taken == [1, 1, 1, 1], "a full batch (the limit, 4) goes at once"


def test_interactive_requests_run_before_bulk() -> None:
    queue = BatchQueue(BatchPolicy(max_batch_size=2, max_queue_delay_s=0))
    old = time.monotonic() - 1
    bulk = [_pending(1, priority=1, arrival=old) for _ in range(3)]
    for request in bulk:
        queue.put(request)
    interactive = _pending(1, priority=0)
    queue.put(interactive)
    batch = queue.next_batch()
    assert batch is not None and batch[0] is interactive and batch[1] is bulk[0]


def test_requests_with_different_shapes_are_not_mixed() -> None:
    queue = BatchQueue(BatchPolicy(max_batch_size=8, max_queue_delay_s=0))
    a = _pending(1)
    loop = asyncio.new_event_loop()
    other = {"x": np.zeros((1, 5), dtype=np.float32)}
    b = Pending(other, 1, signature_of(other), 0, time.monotonic(), loop.create_future(), loop)
    queue.put(a)
    queue.put(b)
    first = queue.next_batch()
    second = queue.next_batch()
    assert first == [a] and second == [b]


async def test_full_queue_rejects_at_once() -> None:
    gate = threading.Event()

    class Blocking(RecordingRunner):
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            gate.wait(5)
            return super().infer(inputs)

    batcher = DynamicBatcher("m/1", [Blocking()], BatchPolicy(max_batch_size=1, max_queue_delay_s=0, max_queue_size=2)).start()
    try:
        running = asyncio.create_task(batcher.submit(_x(1, 0), 1, timeout_s=10))
        await asyncio.sleep(0.05)  # the instance holds the first request
        queued = [asyncio.create_task(batcher.submit(_x(1, i), 1, timeout_s=10)) for i in (1, 2)]
        await asyncio.sleep(0.01)
        started = time.monotonic()
        with pytest.raises(UnavailableError) as info:
            await batcher.submit(_x(1, 3), 1, timeout_s=10)
        assert time.monotonic() - started < 0.5
        assert info.value.status == 503 and info.value.retry_after_s > 0
        gate.set()
        await asyncio.gather(running, *queued)
    finally:
        gate.set()
        await batcher.close()


async def test_failing_instance_fails_only_its_batch() -> None:
    class Flaky(RecordingRunner):
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            if (inputs["x"] < 0).any():
                raise RuntimeError("device lost")
            return super().infer(inputs)

    batcher = DynamicBatcher("m/1", [Flaky()], BatchPolicy(max_batch_size=1, max_queue_delay_s=0)).start()
    try:
        with pytest.raises(InferenceFailedError, match="device lost"):
            await batcher.submit(_x(1, -1), 1, timeout_s=5)
        out = await batcher.submit(_x(1, 4), 1, timeout_s=5)
        assert out["y"][0, 0] == 8
    finally:
        await batcher.close()


async def test_wrong_number_of_output_rows_is_an_error_not_a_mixup() -> None:
    class Truncating(RecordingRunner):
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            return {"y": inputs["x"][:1]}

    batcher = DynamicBatcher("m/1", [Truncating()], BatchPolicy(max_batch_size=4, max_queue_delay_s=0)).start()
    try:
        with pytest.raises(InferenceFailedError, match="1 rows of output 'y' for 2 input rows"):
            await batcher.submit(_x(2, 1), 2, timeout_s=5)
    finally:
        await batcher.close()


async def test_hanging_instance_times_out_and_is_replaced() -> None:
    release = threading.Event()

    class Hanging(RecordingRunner):
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            if (inputs["x"] < 0).any():
                release.wait(10)
            return super().infer(inputs)

    batcher = DynamicBatcher(
        "m/1",
        [Hanging()],
        BatchPolicy(max_batch_size=1, max_queue_delay_s=0),
        runner_factory=RecordingRunner,
        hang_after_s=0.3,
    ).start()
    try:
        with pytest.raises(DeadlineExceededError) as info:
            await batcher.submit(_x(1, -1), 1, timeout_s=0.2)
        assert info.value.status == 504
        await asyncio.sleep(0.6)  # the watchdog replaces the stuck instance
        out = await batcher.submit(_x(1, 2), 1, timeout_s=2)
        assert out["y"][0, 0] == 4
        assert batcher.healthy
    finally:
        release.set()
        await batcher.close()


async def test_timeout_while_queued_frees_the_slot() -> None:
    gate = threading.Event()

    class Blocking(RecordingRunner):
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            gate.wait(5)
            return super().infer(inputs)

    batcher = DynamicBatcher("m/1", [Blocking()], BatchPolicy(max_batch_size=1, max_queue_delay_s=0, max_queue_size=1)).start()
    try:
        first = asyncio.create_task(batcher.submit(_x(1, 0), 1, timeout_s=10))
        await asyncio.sleep(0.05)
        with pytest.raises(DeadlineExceededError, match="waiting in the queue"):
            await batcher.submit(_x(1, 1), 1, timeout_s=0.1)
        assert len(batcher.queue) == 0
        gate.set()
        await first
    finally:
        gate.set()
        await batcher.close()


async def test_close_drains_queued_requests_and_then_refuses() -> None:
    runner = RecordingRunner(delay_s=0.02)
    batcher = DynamicBatcher("m/1", [runner, RecordingRunner(delay_s=0.02)], BatchPolicy(max_batch_size=2, max_queue_delay_s=0)).start()
    tasks = [asyncio.create_task(batcher.submit(_x(1, i), 1, timeout_s=10)) for i in range(10)]
    await asyncio.sleep(0.01)
    await batcher.close()
    results = await asyncio.gather(*tasks)
    assert [r["y"][0, 0] for r in results] == [2.0 * i for i in range(10)]
    with pytest.raises(UnavailableError, match="shutting down"):
        await batcher.submit(_x(1, 0), 1, timeout_s=1)


async def test_instances_run_batches_concurrently() -> None:
    active = 0
    peak = 0
    lock = threading.Lock()

    class Counting(RecordingRunner):
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            nonlocal active, peak
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.05)
            with lock:
                active -= 1
            return super().infer(inputs)

    batcher = DynamicBatcher("m/1", [Counting(), Counting()], BatchPolicy(max_batch_size=1, max_queue_delay_s=0)).start()
    try:
        await asyncio.gather(*(batcher.submit(_x(1, i), 1, timeout_s=5) for i in range(4)))
    finally:
        await batcher.close()
    assert peak == 2


async def test_expired_queued_work_is_not_computed() -> None:
    gate = threading.Event()

    class Blocking(RecordingRunner):
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            gate.wait(5)
            return super().infer(inputs)

    runner = Blocking()
    batcher = DynamicBatcher("m/1", [runner], BatchPolicy(max_batch_size=1, max_queue_delay_s=0)).start()
    try:
        first = asyncio.create_task(batcher.submit(_x(1, 0), 1, timeout_s=10))
        await asyncio.sleep(0.05)  # the instance holds the first request
        late = asyncio.create_task(batcher.submit(_x(1, 1), 1, timeout_s=0.05))
        await asyncio.sleep(0)  # queued behind it
        time.sleep(0.1)  # the event loop is stuck, so its timer cannot take the request out of the queue
        gate.set()
        time.sleep(0.1)  # the instance takes the request after its deadline
        with pytest.raises(DeadlineExceededError, match="waiting in the queue"):
            await late
        await first
        assert runner.batches == [1], "only the first request reached the engine"
    finally:
        gate.set()
        await batcher.close()


async def test_request_that_the_queue_cannot_reach_in_time_is_refused_at_once() -> None:
    gate = threading.Event()

    class Blocking(RecordingRunner):
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            gate.wait(5)
            return super().infer(inputs)

    batcher = DynamicBatcher("m/1", [Blocking()], BatchPolicy(max_batch_size=1, max_queue_delay_s=0)).start()
    try:
        first = asyncio.create_task(batcher.submit(_x(1, 0), 1, timeout_s=10))
        await asyncio.sleep(0.05)
        batcher.queue.batch_s = 1.0  # recent batches took a second each
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="deadline") as info:
            await batcher.submit(_x(1, 1), 1, timeout_s=0.5)
        assert time.monotonic() - started < 0.2 and info.value.retry_after_s > 0
        assert len(batcher.queue) == 0
        gate.set()
        await first
        assert batcher.queue.batch_s < 1.0  # the real batch time is averaged in
    finally:
        gate.set()
        await batcher.close()


async def test_request_whose_time_is_already_spent_fails_without_queueing() -> None:
    runner = RecordingRunner()
    batcher = DynamicBatcher("m/1", [runner], BatchPolicy(max_batch_size=4)).start()
    try:
        with pytest.raises(DeadlineExceededError, match="before it reached the model"):
            await batcher.submit(_x(1, 0), 1, timeout_s=0)
        assert runner.batches == [] and len(batcher.queue) == 0
    finally:
        await batcher.close()


async def test_threads_submit_without_the_event_loop_and_share_batches_with_it() -> None:
    # The engine host's link threads call submit_blocking; their requests batch with the loop's own.
    values: list[set[float]] = []

    class ValueRecording(RecordingRunner):
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            values.append(set(inputs["x"][:, 0].tolist()))
            return super().infer(inputs, check=check)

    runner = ValueRecording(delay_s=0.02)
    batcher = DynamicBatcher("m/1", [runner], BatchPolicy(max_batch_size=32, max_queue_delay_s=0.05)).start()
    results: dict[int, dict[str, np.ndarray]] = {}

    def call(i: int) -> None:
        results[i] = batcher.submit_blocking(_x(2, float(i)), 2, timeout_s=10)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    try:
        for thread in threads:
            thread.start()
        from_loop = await asyncio.gather(*(batcher.submit(_x(1, 100.0 + i), 1, timeout_s=10) for i in range(4)))
        await asyncio.to_thread(lambda: [thread.join(10) for thread in threads])
    finally:
        await batcher.close()
    for i in range(6):
        np.testing.assert_array_equal(results[i]["y"], np.full((2, 3), 2.0 * i, dtype=np.float32))
    for i, out in enumerate(from_loop):
        np.testing.assert_array_equal(out["y"], np.full((1, 3), 2.0 * (100 + i), dtype=np.float32))
    assert sum(runner.batches) == 16
    assert any(min(batch) < 100 <= max(batch) for batch in values), "thread-side and loop-side requests must share engine runs"


async def test_a_thread_side_request_that_times_out_in_the_queue_is_removed_and_fails_504() -> None:
    gate = threading.Event()

    class Blocked(RecordingRunner):
        def infer(self, inputs: dict[str, np.ndarray], *, check: bool = True) -> dict[str, np.ndarray]:
            gate.wait(10)
            return super().infer(inputs, check=check)

    runner = Blocked()
    batcher = DynamicBatcher("m/1", [runner], BatchPolicy(max_batch_size=1, max_queue_delay_s=0.0)).start()
    try:
        first = asyncio.create_task(batcher.submit(_x(1, 1.0), 1, timeout_s=10))  # holds the only instance
        await asyncio.sleep(0.05)
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="waiting in the queue"):
            await asyncio.to_thread(batcher.submit_blocking, _x(1, 2.0), 1, timeout_s=0.2)
        assert 0.15 < time.monotonic() - start < 5
        assert len(batcher.queue) == 0, "the timed-out request must leave the queue"
        gate.set()
        await first
    finally:
        gate.set()
        await batcher.close()
    assert runner.batches == [1], "the timed-out request must never reach the engine"
    with pytest.raises(DeadlineExceededError, match="timeout passed"):
        batcher.submit_blocking(_x(1, 3.0), 1, timeout_s=0)


def test_a_timeout_is_counted_once_by_whoever_answers_it() -> None:
    # The caller's own timeout and an instance dropping the expired request can race: the first to
    # complete the future answers (and counts) it; the other finds it done and does neither.
    import concurrent.futures

    from kiln.serve.batcher import _deliver

    counted: list[str] = []
    answered: concurrent.futures.Future[dict[str, np.ndarray]] = concurrent.futures.Future()
    answered.set_exception(DeadlineExceededError("the caller's own 504"))
    waiting: concurrent.futures.Future[dict[str, np.ndarray]] = concurrent.futures.Future()
    inputs = _x(1, 0.0)
    requests = [Pending(inputs, 1, signature_of(inputs), 0, time.monotonic(), future, None) for future in (answered, waiting)]
    _deliver([(r, DeadlineExceededError("dropped by the instance")) for r in requests], lambda: counted.append("timeout"))
    assert counted == ["timeout"], "only the request the instance did answer counts"
    with pytest.raises(DeadlineExceededError, match="caller's own"):
        answered.result(0)
    with pytest.raises(DeadlineExceededError, match="dropped by the instance"):
        waiting.result(0)


class GatheringRunner(RecordingRunner):
    """A runner that joins a batch's parts itself (``infer_parts``, as kiln's runners do)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[int] = []
        self.last_gather_s = 0.0

    def infer_parts(self, parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        self.parts.append(len(parts))
        self.last_gather_s = 0.25  # reported as the batch's input time
        return self.infer({"x": np.concatenate([part["x"] for part in parts])})


async def test_a_runner_that_gathers_gets_the_requests_parts() -> None:
    runner = GatheringRunner()
    observed: list[tuple[int, float]] = []

    class Observer:
        def queued(self, delta: int) -> None: ...
        def rejected(self, reason: str) -> None: ...
        def batch_failed(self, requests: int, reason: str) -> None: ...
        def instance_replaced(self) -> None: ...

        def batch_done(self, items: int, requests: int, queue_s: list[float], input_s: float, infer_s: float,
                       output_s: float) -> None:
            observed.append((requests, input_s))

    batcher = DynamicBatcher("m/1", [runner], BatchPolicy(max_batch_size=8, max_queue_delay_s=5.0,
                                                          preferred_batch_sizes=[6]), observer=Observer()).start()
    try:
        sizes = [1, 2, 3]
        results = await asyncio.gather(*(batcher.submit(_x(rows, float(i)), rows, timeout_s=10) for i, rows in enumerate(sizes)))
        alone = await batcher.submit(_x(8, 9.0), 8, timeout_s=10)  # a full batch of one request: plain infer
    finally:
        await batcher.close()
    assert runner.parts == [3]
    assert runner.batches == [6, 8]
    for i, (rows, out) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(out["y"], np.full((rows, 3), 2.0 * i, dtype=np.float32))
    np.testing.assert_array_equal(alone["y"], np.full((8, 3), 18.0, dtype=np.float32))
    assert observed[0][0] == 3 and observed[0][1] >= 0.25  # the runner's join time is the input time
    assert observed[1][0] == 1 and observed[1][1] < 0.25
