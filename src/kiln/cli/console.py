"""Shared terminal output: one console, error printing, progress bars."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from kiln.errors import KilnError

console = Console(stderr=False)
err_console = Console(stderr=True)


def print_error(exc: KilnError) -> None:
    err_console.print(f"[bold red]error:[/] {exc.message}", highlight=False)
    if exc.hint:
        err_console.print(f"[yellow]fix:[/] {exc.hint}", highlight=False)


def progress() -> Progress:
    """A progress display for work a person waits for (export, calibration, compilation)."""
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )
