"""``kiln.aio.cancel_and_wait``: the task's cancellation is absorbed, the caller's own is not."""

from __future__ import annotations

import asyncio

import pytest

from kiln.aio import cancel_and_wait


async def test_cancels_and_waits_for_the_task() -> None:
    finished: list[str] = []

    async def worker() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            finished.append("cleaned up")

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await cancel_and_wait(task)
    assert task.cancelled() and finished == ["cleaned up"]


async def test_a_cancellation_of_the_caller_still_propagates() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await release.wait()  # takes its time to clean up
            raise

    async def closer(task: asyncio.Task[None]) -> str:
        await cancel_and_wait(task)
        return "carried on"  # what suppress(CancelledError) would let happen

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    outer = asyncio.create_task(closer(inner))
    await asyncio.sleep(0.01)
    outer.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await outer
    assert inner.cancelled()


async def test_other_exceptions_of_the_task_propagate() -> None:
    async def broken() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("failed while stopping") from None

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="failed while stopping"):
        await cancel_and_wait(task)


async def test_cleanup_of_a_cancelled_caller_runs_to_the_end() -> None:
    steps: list[str] = []

    async def helper() -> None:
        await asyncio.sleep(60)

    async def owner() -> None:
        first, second = asyncio.create_task(helper()), asyncio.create_task(helper())
        try:
            await asyncio.sleep(60)
        finally:  # runs because owner was cancelled: every step of it must still happen
            await cancel_and_wait(first)
            steps.append("first stopped")
            await cancel_and_wait(second)
            steps.append("second stopped")

    task = asyncio.create_task(owner())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["first stopped", "second stopped"]
