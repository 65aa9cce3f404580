"""Per-request stage timings: cheap wall-clock laps a request collects as it crosses the layers.

A route starts a ``StageTimings`` (``start_timings``); the code below it adds its stages (decode,
queue, infer, ...) to whatever timings are current for the request (a context variable, so
nothing has to be passed down), and the route returns them as a ``Server-Timing`` header. With
no timings started, ``current_timings()`` is None and nothing is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

SERVER_TIMING = "server-timing"  # gRPC trailing metadata key of the same value (ModelInfer answers)

_CURRENT: ContextVar[StageTimings | None] = ContextVar("kiln_stage_timings", default=None)


class StageTimings:
    """Seconds per named stage of one request; a stage measured twice adds up."""

    __slots__ = ("stages",)

    def __init__(self) -> None:
        self.stages: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + max(0.0, seconds)

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - start)

    def milliseconds(self) -> dict[str, float]:
        return {stage: round(seconds * 1e3, 3) for stage, seconds in self.stages.items()}

    def header(self) -> str:
        """The ``Server-Timing`` header value (durations in milliseconds)."""
        return server_timing(self.milliseconds())


def server_timing(milliseconds: dict[str, float]) -> str:
    """{stage: milliseconds} → a ``Server-Timing`` header value."""
    return ", ".join(f"{stage};dur={ms}" for stage, ms in milliseconds.items())


def start_timings() -> StageTimings:
    """New timings for the current request (task); later ``current_timings()`` calls in it return them."""
    timings = StageTimings()
    _CURRENT.set(timings)
    return timings


def current_timings() -> StageTimings | None:
    return _CURRENT.get()


@contextmanager
def stage(name: str) -> Iterator[None]:
    """Adds the time spent in the block to the current request's timings (if any)."""
    timings = _CURRENT.get()
    if timings is None:
        yield
        return
    with timings.measure(name):
        yield


def parse_server_timing(value: str) -> dict[str, float]:
    """``Server-Timing`` header → {stage: milliseconds} (for clients and benchmarks)."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, rest = part.strip().partition(";")
        for param in rest.split(";"):
            key, _, number = param.strip().partition("=")
            if key == "dur" and name:
                try:
                    out[name] = float(number)
                except ValueError:
                    continue
    return out
