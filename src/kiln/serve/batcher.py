"""Dynamic batching: requests in, batches out, run by N engine instances on their own threads.

The pieces, each testable without HTTP:

- ``BatchQueue``: a bounded, thread-safe queue with priority levels. ``next_batch`` is the one
  batching rule: take requests (highest priority first, then oldest) with the same item shapes
  until ``max_batch_size`` items; dispatch at once when the batch is full, reaches the largest
  preferred size, is exactly a preferred size, or the oldest request has waited ``max_queue_delay``; otherwise wait on a
  monotonic deadline. A full queue rejects at once (``UnavailableError`` → 503 / UNAVAILABLE).
- ``Instance``: a thread that owns one runner, pulls a batch whenever it is idle (so N instances
  run N batches concurrently), concatenates the requests' inputs, runs the engine, checks that it
  returned one output row per input row, and hands each request its slice of the outputs.
- ``DynamicBatcher``: the asyncio face: ``submit`` enqueues and awaits the result with a
  deadline (``DeadlineExceededError`` → 504 / DEADLINE_EXCEEDED); ``submit_blocking`` is the same
  for a plain thread, with no event loop in the way; ``submit_nowait`` hands the outcome to a
  completion on the thread that ran the batch (the engine host's answers); a request whose estimated wait
  (queue depth × recent batch time) is already past its deadline is refused at once (503), and
  one whose deadline passed while it waited is dropped before it is computed; a watchdog replaces
  an instance that hangs; ``close`` stops intake, drains the queue and finishes in-flight batches.

Results cross back to the event loop with one ``call_soon_threadsafe`` per batch, not per request;
a request submitted from a thread gets its result straight from the instance thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kiln.aio import cancel_and_wait
from kiln.errors import DeadlineExceededError, KilnError, UnavailableError
from kiln.serve.timing import current_timings

log = logging.getLogger(__name__)

Tensors = dict[str, np.ndarray]


class InferenceFailedError(KilnError):
    """An engine instance failed on a batch (a server-side fault, not the client's)."""

    status = 500


class InstanceRunner(Protocol):
    """What an instance runs: kiln's ``Runner`` (and test doubles) fit.

    A runner that also has ``infer_parts(list_of_inputs) -> outputs`` (``Runner`` does) is given a
    batch of several requests as their separate inputs, to join where its engine reads them from; its
    ``last_gather_s`` is then reported as the batch's input time. (So a test double that wraps only
    ``infer`` sees single requests, not batches of several, unless it wraps ``infer_parts`` too.)"""

    def infer(self, inputs: Tensors, *, check: bool = True) -> Tensors: ...


class BatchObserver(Protocol):
    """Where the batcher reports what it did (metrics); every method must be cheap and thread-safe."""

    def queued(self, delta: int) -> None: ...

    def rejected(self, reason: str) -> None: ...

    def batch_done(
        self, items: int, requests: int, queue_s: list[float], input_s: float, infer_s: float, output_s: float
    ) -> None: ...

    def batch_failed(self, requests: int, reason: str) -> None: ...

    def instance_replaced(self) -> None: ...


class NullObserver:
    def queued(self, delta: int) -> None:
        return None

    def rejected(self, reason: str) -> None:
        return None

    def batch_done(
        self, items: int, requests: int, queue_s: list[float], input_s: float, infer_s: float, output_s: float
    ) -> None:
        return None

    def batch_failed(self, requests: int, reason: str) -> None:
        return None

    def instance_replaced(self) -> None:
        return None


class Completion(Protocol):
    """What ``DynamicBatcher.submit_nowait`` completes where the batch ran: thread-safe, and the first of
    ``set_result`` / ``set_exception`` wins (a later one raises ``concurrent.futures.InvalidStateError``)."""

    request: Pending | None  # the request it completes: set when queued, before any instance can take it

    def done(self) -> bool: ...

    def set_result(self, result: Tensors) -> None: ...

    def set_exception(self, exception: BaseException) -> None: ...


@dataclass(eq=False, slots=True)
class Pending:
    """One request waiting for its outputs."""

    inputs: Tensors
    items: int
    signature: tuple[Any, ...]
    priority: int
    arrival: float
    # an asyncio future completed on ``loop``, or (``loop`` None) a thread-safe one completed where
    # the batch ran (``DynamicBatcher.submit_blocking``, ``submit_nowait``)
    future: asyncio.Future[Tensors] | concurrent.futures.Future[Tensors] | Completion
    loop: asyncio.AbstractEventLoop | None
    deadline: float = float("inf")  # time.monotonic() past which nobody waits for the result
    started: float = 0.0  # monotonic: when its batch was taken by an instance
    finished: float = 0.0  # monotonic: when its batch's outputs were ready
    done: bool = False
    # stages (seconds) inside its batch's run that the runner measured (``last_stages``: the engine host's)
    stages: dict[str, float] | None = None


def signature_of(inputs: Tensors) -> tuple[Any, ...]:
    """Requests can share a batch only when every input has the same dtype and non-batch shape."""
    return tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(inputs.items()))


@dataclass
class BatchPolicy:
    max_batch_size: int
    max_queue_delay_s: float = 0.001
    preferred_batch_sizes: list[int] = field(default_factory=list)
    max_queue_size: int = 256
    priority_levels: int = 2


class BatchQueue:
    """Bounded priority queue that hands out batches under one lock (thread-safe)."""

    def __init__(self, policy: BatchPolicy, observer: BatchObserver | None = None, *, name: str = "queue") -> None:
        if policy.max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.policy = policy
        self.name = name
        self.batch_s = 0.0  # recent time to run one batch (exponential average; 0 until one ran)
        self.workers = 1  # instances taking batches from this queue
        self._levels: list[deque[Pending]] = [deque() for _ in range(policy.priority_levels)]
        self._count = 0
        self._items_of: Counter[tuple[Any, ...]] = Counter()  # rows queued per signature (what one batch can hold)
        self._closed = False
        self._cond = threading.Condition(threading.Lock())
        self._observer = observer or NullObserver()
        # a batch this big goes at once (a preferred size above max_batch_size, which a model's config may leave
        # unchecked when the engine sets the limit, counts as the limit)
        self._dispatch_at = min(max(policy.preferred_batch_sizes, default=policy.max_batch_size), policy.max_batch_size)
        # a batch of exactly one of these sizes goes at once as well: waiting could only grow it past a size
        # the engine runs without padding (the preferred sizes are usually its CUDA graphs' batch sizes)
        self._preferred = frozenset(size for size in policy.preferred_batch_sizes if size <= policy.max_batch_size)

    def __len__(self) -> int:
        return self._count

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, request: Pending) -> None:
        with self._cond:
            if self._closed:
                self._observer.rejected("shutting_down")
                raise UnavailableError("the server is shutting down", hint="retry on another replica", retry_after_s=5)
            if self._count >= self.policy.max_queue_size:
                self._observer.rejected("queue_full")
                raise UnavailableError(
                    f"the queue is full ({self.policy.max_queue_size} requests waiting)",
                    hint="retry after a short pause or lower the request rate",
                    retry_after_s=1,
                )
            wait = self.estimated_wait()
            if request.arrival + wait > request.deadline:
                self._observer.rejected("queue_wait")
                raise UnavailableError(
                    f"the queue would not reach this request before its deadline (about {wait:.2g} s of work ahead, "
                    f"{max(0.0, request.deadline - request.arrival):.2g} s left)",
                    hint="retry after a short pause, lower the request rate or raise the timeout",
                    retry_after_s=1,
                )
            level = min(max(request.priority, 0), self.policy.priority_levels - 1)
            self._levels[level].append(request)
            self._count += 1
            self._items_of[request.signature] += request.items
            # Wake a taker only where this request can change its decision: the queue was empty (takers wait
            # without a timeout), or there may now be a batch to dispatch at once. A taker already waiting out
            # the queue delay wakes at its deadline anyway, which a later arrival does not move; waking it for
            # every request only hands the GIL back and forth (py-spy, ~1.2k gRPC requests/s on 2 cores: 4 % of the event
            # loop's samples in notify, 15 % with another job on the cores; now under 1 %; docs/benchmarks/grpc_cpu.md).
            if self._count == 1 or self._may_dispatch(request.signature):
                self._cond.notify()
        self._observer.queued(1)

    def _may_dispatch(self, signature: tuple[Any, ...]) -> bool:
        """Whether the requests of ``signature`` may now make a batch that goes at once (a hint for waking a
        taker, which decides for itself)."""
        items = self._items_of.get(signature, 0)
        return items >= self._dispatch_at or items in self._preferred

    def _drop_items(self, signature: tuple[Any, ...], items: int) -> None:
        left = self._items_of[signature] - items
        if left > 0:
            self._items_of[signature] = left
        else:
            del self._items_of[signature]

    def record_batch_time(self, seconds: float) -> None:
        self.batch_s = seconds if self.batch_s == 0.0 else 0.8 * self.batch_s + 0.2 * seconds

    def estimated_wait(self) -> float:
        """Seconds a request put now would wait: the batches ahead of it shared by the instances."""
        batches = -(-(self._count + 1) // self.policy.max_batch_size)
        return batches * self.batch_s / max(1, self.workers)

    def discard(self, request: Pending) -> bool:
        """Removes a request that no longer needs running (timed out, client gone)."""
        with self._cond:
            for level in self._levels:
                try:
                    level.remove(request)
                except ValueError:
                    continue
                self._count -= 1
                self._drop_items(request.signature, request.items)
                if self._count and self._may_dispatch(request.signature):  # what is left may now be a batch
                    self._cond.notify()
                self._observer.queued(-1)
                return True
        return False

    def close(self) -> None:
        """Stops intake; requests already queued are still handed out (drain)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def _select(self) -> tuple[list[Pending], int, bool]:
        """The batch to run next: (requests, items, whether waiting could not make it bigger)."""
        limit = self.policy.max_batch_size
        chosen: list[Pending] = []
        items = 0
        blocked = False
        signature: tuple[Any, ...] | None = None
        for level in self._levels:
            for request in level:
                if signature is None:
                    signature = request.signature
                elif request.signature != signature:
                    continue
                if items + request.items > limit:
                    blocked = True
                    break
                chosen.append(request)
                items += request.items
                if items == limit:
                    return chosen, items, True
            if blocked:
                break
        return chosen, items, blocked

    def _oldest_arrival(self) -> float:
        return min(level[0].arrival for level in self._levels if level)

    def _take(self, chosen: list[Pending]) -> list[Pending]:
        for request in chosen:
            self._levels[min(max(request.priority, 0), self.policy.priority_levels - 1)].remove(request)
        self._count -= len(chosen)
        for request in chosen:
            self._drop_items(request.signature, request.items)
        return chosen

    def _trim_to_preferred(self, chosen: list[Pending]) -> list[Pending]:
        kept: list[Pending] = []
        items = 0
        for request in chosen:
            if kept and items + request.items > self._dispatch_at:
                break
            kept.append(request)
            items += request.items
        return kept

    def next_batch(self, stop: threading.Event | None = None) -> list[Pending] | None:
        """Blocks until a batch is due; None once the queue is closed and empty (or ``stop`` is set)."""
        delay = self.policy.max_queue_delay_s
        with self._cond:
            while True:
                if stop is not None and stop.is_set():
                    if self._count:  # this taker may have been the one a put woke: hand that on
                        self._cond.notify()
                    return None
                if self._count == 0:
                    if self._closed:
                        return None
                    self._cond.wait(timeout=0.5 if stop is not None else None)
                    continue
                chosen, items, full = self._select()
                if full or self._closed:
                    batch = self._take(chosen)
                    break
                if self.policy.preferred_batch_sizes and items >= self._dispatch_at:
                    batch = self._take(self._trim_to_preferred(chosen))
                    break
                if items in self._preferred:  # every request that could join is in it, at a preferred size
                    batch = self._take(chosen)
                    break
                wait = self._oldest_arrival() + delay - time.monotonic()
                if wait <= 0:
                    batch = self._take(chosen)
                    break
                self._cond.wait(timeout=wait)
            if self._count:  # requests left behind: another taker may run them meanwhile (put woke only one)
                self._cond.notify()
        self._observer.queued(-len(batch))
        return batch


_batch = threading.local()


def current_batch() -> tuple[float | None, int]:
    """On an instance thread while its runner runs a batch: the batch's earliest deadline
    (``time.monotonic()``; None when no request has one) and its highest priority. A runner that
    forwards the batch elsewhere (``remote_runner``) passes them on."""
    deadline = getattr(_batch, "deadline", None)
    return (None if deadline is None or deadline == float("inf") else deadline), getattr(_batch, "priority", 0)


def _close_runner(runner: InstanceRunner) -> None:
    close = getattr(runner, "close", None)  # remote runners hold a link and shared memory
    if callable(close):
        try:
            close()
        except Exception:
            log.exception("closing an engine instance failed")


def _deliver(results: list[tuple[Pending, Tensors | BaseException]],
             on_error_delivered: Callable[[], None] | None = None) -> None:
    """Completes each request's future once: on its event loop, or (thread-side requests) anywhere;
    ``on_error_delivered`` runs for each error that did complete its future."""
    for request, outcome in results:
        if request.future.done():
            continue
        # a thread-side future may be completed by its caller's timeout meanwhile: the first one wins
        try:
            if isinstance(outcome, BaseException):
                request.future.set_exception(outcome)
                if on_error_delivered is not None:
                    on_error_delivered()
            else:
                request.future.set_result(outcome)
        except concurrent.futures.InvalidStateError:
            continue


def run_batch(runner: InstanceRunner, batch: list[Pending]) -> tuple[list[Tensors] | BaseException, float, float, float]:
    """Concatenates, runs and splits one batch; returns per-request outputs (or the error) and timings."""
    t0 = time.perf_counter()
    total = sum(r.items for r in batch)
    infer_parts = getattr(runner, "infer_parts", None) if len(batch) > 1 else None
    if infer_parts is None:
        inputs = batch[0].inputs if len(batch) == 1 else {
            name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs
        }
    t1 = time.perf_counter()
    try:
        if infer_parts is None:
            outputs = runner.infer(inputs, check=False)
        else:  # the runner joins the parts itself, where its engine reads them from
            outputs = infer_parts([r.inputs for r in batch])
            t1 += float(getattr(runner, "last_gather_s", 0.0))
    except (UnavailableError, DeadlineExceededError) as exc:  # the engine host refused or timed out: keep the kind
        return exc, t1 - t0, 0.0, 0.0
    except KilnError as exc:
        return InferenceFailedError(f"the engine failed on a batch of {total}: {exc.message}"), t1 - t0, 0.0, 0.0
    except Exception as exc:  # any engine/runtime error fails this batch only; the instance lives on
        log.exception("engine failure on a batch of %d", total)
        return InferenceFailedError(f"the engine failed on a batch of {total}: {type(exc).__name__}: {exc}"), t1 - t0, 0.0, 0.0
    t2 = time.perf_counter()
    for name, array in outputs.items():
        rows = array.shape[0] if array.ndim else 0
        if rows != total:
            error = InferenceFailedError(
                f"the engine returned {rows} rows of output {name!r} for {total} input rows",
                hint="the engine must keep the batch dimension first",
            )
            return error, t1 - t0, t2 - t1, 0.0
    if len(batch) == 1:
        split = [outputs]
    else:
        split = []
        offset = 0
        for request in batch:
            end = offset + request.items
            split.append({name: array[offset:end] for name, array in outputs.items()})
            offset = end
    return split, t1 - t0, t2 - t1, time.perf_counter() - t2


class Instance:
    """One engine instance: a thread that runs batches from the queue on its own runner."""

    _ids = itertools.count()

    def __init__(self, name: str, runner: InstanceRunner, queue: BatchQueue, observer: BatchObserver) -> None:
        self.name = f"{name}#{next(self._ids)}"
        self.runner = runner
        self.queue = queue
        self.observer = observer
        self.busy_since: float | None = None
        self.abandoned = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"kiln-instance-{self.name}", daemon=True)

    def start(self) -> Instance:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        while not self.abandoned.is_set():
            batch = self.queue.next_batch(self.abandoned)
            if batch is None:
                return
            self.busy_since = time.monotonic()
            try:
                self._execute(batch)
            finally:
                self.busy_since = None
                # not held while waiting for the next one: its inputs may be views of an engine link's shared
                # mapping, which the engine host leaves to close with its last view
                batch = None

    def _execute(self, batch: list[Pending]) -> None:
        started = time.monotonic()
        expired = [r for r in batch if r.deadline <= started]
        if expired:  # their callers have their 504 (or soon will): no engine time for them
            # counted where the 504 lands: the caller's own timeout may have answered first (and counted)
            _post([(r, _deadline_error(self.queue.name, r, "waiting in the queue")) for r in expired],
                  on_error_delivered=lambda: self.observer.rejected("timeout"))
            batch = [r for r in batch if r.deadline > started]
            if not batch:
                return
        queue_s = [started - r.arrival for r in batch]
        _batch.deadline, _batch.priority = min(r.deadline for r in batch), max(r.priority for r in batch)
        try:
            outcome, input_s, infer_s, output_s = run_batch(self.runner, batch)
        finally:
            _batch.deadline, _batch.priority = None, 0
        finished = time.monotonic()
        stages = getattr(self.runner, "last_stages", None) if not isinstance(outcome, BaseException) else None
        for r in batch:
            r.started, r.finished, r.stages = started, finished, stages
        self.queue.record_batch_time(finished - started)
        if isinstance(outcome, BaseException):
            self.observer.batch_failed(len(batch), "engine_error")
            results: list[tuple[Pending, Tensors | BaseException]] = [(r, outcome) for r in batch]
        else:
            self.observer.batch_done(sum(r.items for r in batch), len(batch), queue_s, input_s, infer_s, output_s)
            results = list(zip(batch, outcome, strict=True))
        _post(results)


def _post(results: list[tuple[Pending, Tensors | BaseException]],
          on_error_delivered: Callable[[], None] | None = None) -> None:
    """Hands results to their event loops: one callback per loop; thread-side requests at once."""
    by_loop: dict[asyncio.AbstractEventLoop | None, list[tuple[Pending, Tensors | BaseException]]] = {}
    for request, result in results:
        by_loop.setdefault(request.loop, []).append((request, result))
    for loop, items in by_loop.items():
        if loop is None:
            _deliver(items, on_error_delivered)
            continue
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits for these results
            loop.call_soon_threadsafe(_deliver, items, on_error_delivered)


def _deadline_error(name: str, request: Pending, where: str) -> DeadlineExceededError:
    return DeadlineExceededError(
        f"{name}: the request did not complete within {request.deadline - request.arrival:g} s ({where})",
        hint="raise the timeout or lower the load",
    )


class DynamicBatcher:
    """Batches requests for one model version over N instances; the asyncio side of batching."""

    def __init__(
        self,
        name: str,
        runners: list[InstanceRunner],
        policy: BatchPolicy,
        *,
        observer: BatchObserver | None = None,
        runner_factory: Callable[[], InstanceRunner] | None = None,
        hang_after_s: float | None = None,
    ) -> None:
        if not runners:
            raise ValueError("a batcher needs at least one runner")
        self.name = name
        self.policy = policy
        self.observer = observer or NullObserver()
        self.queue = BatchQueue(policy, self.observer, name=name)
        self.instances = [Instance(name, runner, self.queue, self.observer) for runner in runners]
        self.queue.workers = len(self.instances)
        self._runner_factory = runner_factory
        self._hang_after_s = hang_after_s
        self._watchdog: asyncio.Task[None] | None = None
        self._replacing = 0

    def start(self) -> DynamicBatcher:
        for instance in self.instances:
            instance.start()
        if self._hang_after_s is not None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch(self._hang_after_s))
        return self

    async def submit(self, inputs: Tensors, items: int, *, priority: int = 0, timeout_s: float) -> Tensors:
        """Runs ``items`` rows through the model with others; raises 503/504-type errors as documented.

        ``timeout_s`` is what is left of the request's time; at or below 0 it fails at once (504).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Tensors] = loop.create_future()
        request = self._enqueue(inputs, items, priority, timeout_s, future, loop)
        timer = loop.call_later(timeout_s, self._expire, request)
        try:
            outputs = await future
        except asyncio.CancelledError:
            self.queue.discard(request)  # the caller went away: don't spend engine time on it
            raise
        finally:
            timer.cancel()
        timings = current_timings()
        if timings is not None and request.finished:
            # queue: waiting for an instance; infer: the batch on the engine (copies included);
            # resume: from the outputs being ready to this coroutine running again (event-loop lag)
            timings.add("queue", request.started - request.arrival)
            timings.add("infer", request.finished - request.started)
            timings.add("resume", time.monotonic() - request.finished)
            for name, seconds in (request.stages or {}).items():  # parts of "infer", where the runner tells them
                timings.add(name, seconds)
        return outputs

    def submit_blocking(self, inputs: Tensors, items: int, *, priority: int = 0, timeout_s: float) -> Tensors:
        """``submit`` for a plain thread: blocks until the outputs are ready, with the same errors.

        The request goes into the queue from this thread and its result comes back from the
        instance thread that ran its batch, with no event loop in between.
        """
        future: concurrent.futures.Future[Tensors] = concurrent.futures.Future()
        request = self._enqueue(inputs, items, priority, timeout_s, future, None)
        try:
            return future.result(timeout=max(0.0, request.deadline - time.monotonic()))
        except concurrent.futures.TimeoutError:
            pass
        error = self._timed_out(request)
        try:
            future.set_exception(error)
        except concurrent.futures.InvalidStateError:  # the batch finished just now: its result stands
            return future.result()
        self.observer.rejected("timeout")
        raise error

    def submit_nowait(self, inputs: Tensors, items: int, completion: Completion, *, priority: int = 0,
                      timeout_s: float) -> Pending:
        """Queues a request and returns at once; ``completion`` gets its outputs or error on the thread that ran
        its batch (no thread waits for it: the engine host answers its links from there). Refusals (queue full,
        no time left) raise here, as in ``submit``. Nothing times the request out but ``expire``: the caller
        calls it once the request's deadline passes."""
        return self._enqueue(inputs, items, priority, timeout_s, completion, None)

    def expire(self, request: Pending) -> None:
        """From any thread, at or after the deadline of a request queued with ``submit_nowait``: fails it with
        504 unless its outcome is in already (then nothing happens)."""
        if request.future.done():
            return
        error = self._timed_out(request)
        try:
            request.future.set_exception(error)
        except concurrent.futures.InvalidStateError:  # its batch finished just now: that outcome stands
            return
        self.observer.rejected("timeout")

    def _enqueue(self, inputs: Tensors, items: int, priority: int, timeout_s: float,
                 future: asyncio.Future[Tensors] | concurrent.futures.Future[Tensors] | Completion,
                 loop: asyncio.AbstractEventLoop | None) -> Pending:
        """Queues a request with ``timeout_s`` left (at or below 0: 504 at once, nothing queued)."""
        if timeout_s <= 0:
            self.observer.rejected("timeout")
            raise DeadlineExceededError(f"{self.name}: the request's timeout passed before it reached the model",
                                        hint="raise the timeout or lower the load")
        now = time.monotonic()
        request = Pending(inputs, items, signature_of(inputs), priority, now, future, loop, deadline=now + timeout_s)
        if not isinstance(future, asyncio.Future | concurrent.futures.Future):
            future.request = request
        self.queue.put(request)
        return request

    def _timed_out(self, request: Pending) -> DeadlineExceededError:
        """Takes a request whose time is up out of the queue (if still there) and says where it was."""
        queued = self.queue.discard(request)
        return _deadline_error(self.name, request, "waiting in the queue" if queued else "while its batch was running")

    def _expire(self, request: Pending) -> None:
        if request.future.done():
            return
        error = self._timed_out(request)
        self.observer.rejected("timeout")
        request.future.set_exception(error)

    async def _watch(self, hang_after_s: float) -> None:
        """Replaces an instance stuck in one batch longer than ``hang_after_s`` (its requests have timed out)."""
        while True:
            await asyncio.sleep(min(1.0, hang_after_s / 4))
            now = time.monotonic()
            for instance in list(self.instances):
                since = instance.busy_since
                if since is None or now - since < hang_after_s or instance.abandoned.is_set():
                    continue
                log.error("%s: instance %s busy for %.1f s; replacing it", self.name, instance.name, now - since)
                instance.abandoned.set()
                _close_runner(instance.runner)  # a remote call blocked on its link fails now
                self.instances.remove(instance)
                self.queue.workers = max(1, len(self.instances))
                self.observer.instance_replaced()
                if self._runner_factory is not None:
                    self._replacing += 1
                    try:
                        runner = await asyncio.to_thread(self._runner_factory)
                    except KilnError as exc:
                        log.error("%s: could not start a replacement instance: %s", self.name, exc)
                        continue
                    finally:
                        self._replacing -= 1
                    replacement = Instance(self.name, runner, self.queue, self.observer).start()
                    self.instances.append(replacement)
                    self.queue.workers = len(self.instances)

    @property
    def healthy(self) -> bool:
        return any(not i.abandoned.is_set() for i in self.instances) or self._replacing > 0

    async def close(self, timeout_s: float = 30.0) -> None:
        """Stops intake, lets the instances drain the queue and finish their batches."""
        self.queue.close()
        if self._watchdog is not None:
            await cancel_and_wait(self._watchdog)
        deadline = time.monotonic() + timeout_s
        for instance in self.instances:
            await asyncio.to_thread(instance.join, max(0.0, deadline - time.monotonic()))
            if not instance.alive:
                _close_runner(instance.runner)
        # Let the results the instances posted reach their futures before the loop moves on.
        await asyncio.sleep(0)
