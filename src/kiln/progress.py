"""Progress reporting that the layers use without knowing who displays it.

The CLI passes a rich-backed reporter; library callers and the server get a silent one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol


class Task(Protocol):
    def advance(self, amount: float = 1) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: float | None = None) -> AbstractContextManager[Task]: ...


class _NullTask:
    def advance(self, amount: float = 1) -> None:
        return None


class NullReporter:
    """Reports nothing."""

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        yield _NullTask()


class _RichTask:
    def __init__(self, progress: object, task_id: object) -> None:
        self._progress = progress
        self._task_id = task_id

    def advance(self, amount: float = 1) -> None:
        self._progress.advance(self._task_id, amount)  # type: ignore[attr-defined]


class RichReporter:
    """Shows each task as a rich progress bar on stderr."""

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Task]:
        from kiln.cli.console import progress

        with progress() as prog:
            task_id = prog.add_task(description, total=total)
            yield _RichTask(prog, task_id)
            if total is not None:
                prog.update(task_id, completed=total)
