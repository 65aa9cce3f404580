"""Per-request stage timings: the context variable, the Server-Timing header, and what the batcher adds."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from kiln.serve.batcher import BatchPolicy, DynamicBatcher
from kiln.serve.timing import current_timings, parse_server_timing, stage, start_timings

from .test_batcher import RecordingRunner, _x


def test_stages_add_up_and_round_trip_through_the_header() -> None:
    async def request() -> dict[str, float]:
        timings = start_timings()
        with stage("decode"):
            time.sleep(0.002)
        with stage("decode"):
            time.sleep(0.002)
        timings.add("infer", 0.0015)
        return parse_server_timing(timings.header())

    parsed = asyncio.run(request())
    assert set(parsed) == {"decode", "infer"}
    assert parsed["decode"] >= 4.0, "a stage measured twice adds up"
    assert parsed["infer"] == 1.5


def test_nothing_is_recorded_without_started_timings() -> None:
    async def request() -> None:
        assert current_timings() is None
        with stage("decode"):  # a no-op, not an error
            pass

    asyncio.run(request())


def test_each_request_task_has_its_own_timings() -> None:
    async def one(name: str) -> dict[str, float]:
        timings = start_timings()
        with stage(name):
            await asyncio.sleep(0.001)
        return timings.milliseconds()

    async def both() -> list[dict[str, float]]:
        return await asyncio.gather(one("a"), one("b"))

    first, second = asyncio.run(both())
    assert set(first) == {"a"} and set(second) == {"b"}


def test_parse_ignores_malformed_entries() -> None:
    assert parse_server_timing("decode;dur=1.5, bad;dur=x, ;dur=2, cache;desc=hit, infer;dur=0.25") == {
        "decode": 1.5, "infer": 0.25}


async def test_the_batcher_reports_queue_infer_and_resume() -> None:
    batcher = DynamicBatcher("m/1", [RecordingRunner(delay_s=0.02)], BatchPolicy(max_batch_size=1, max_queue_delay_s=0)).start()

    async def request(value: float) -> dict[str, float]:
        timings = start_timings()
        out = await batcher.submit(_x(1, value), 1, timeout_s=10)
        np.testing.assert_array_equal(out["y"], np.full((1, 3), 2 * value, np.float32))
        return timings.milliseconds()

    try:
        first, second = await asyncio.gather(request(1.0), request(2.0))
    finally:
        await batcher.close()
    for ms in (first, second):
        assert set(ms) == {"queue", "infer", "resume"}
        assert ms["infer"] >= 15.0
    # one instance, batches of one: one request waited for the other's batch
    assert max(first["queue"], second["queue"]) >= 15.0
