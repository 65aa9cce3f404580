"""``kiln demo``: build the demo models once (then reuse them) and serve both apps with the web pages."""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer

from kiln.errors import KilnError

PAGES = (("home", "/"), ("authenticate", "/authenticate"), ("cases", "/cases"), ("packaging", "/packaging"),
         ("operations", "/ops"), ("API docs", "/docs"))


def demo(
    prepare_only: Annotated[bool, typer.Option("--prepare", help="build everything and exit; prints the model repository last")] = False,
    size: Annotated[str, typer.Option("--size", help="demo | tiny (about a minute; for tests); default $KILN_DEMO_SIZE or demo")] = "",
    host: Annotated[str | None, typer.Option(help="address to bind (default $KILN_HOST or 127.0.0.1)")] = None,
    http_port: Annotated[int | None, typer.Option(help="HTTP port: pages, apps, Open Inference Protocol (default $KILN_HTTP_PORT or 8000)")] = None,
    grpc_port: Annotated[int | None, typer.Option(help="gRPC port, 0 disables gRPC (default $KILN_GRPC_PORT or 8001)")] = None,
) -> None:
    """Set up the labelled-synthetic demo (first run: a few minutes; later: seconds) and serve it."""
    from kiln.cli.console import console, err_console
    from kiln.config import get_settings
    from kiln.demo.prepare import StepResult, prepare, sizes_named
    from kiln.progress import RichReporter

    name = size or os.environ.get("KILN_DEMO_SIZE", "") or "demo"
    sizes = sizes_named(name)
    settings = get_settings()
    host = host or settings.host
    http_port = settings.http_port if http_port is None else http_port
    grpc_port = settings.grpc_port if grpc_port is None else grpc_port
    for option, port in (("--http-port", http_port), ("--grpc-port", grpc_port)):
        if not 0 <= port <= 65535:
            raise KilnError(f"{option} {port} is not a port number (0-65535)")
    if http_port == grpc_port:
        raise KilnError(f"--http-port and --grpc-port are both {http_port}", hint="give them different ports")
    home = settings.home
    started = time.perf_counter()
    err_console.print(f"[bold]kiln demo[/] ({name} size) in {home / 'demo'}: labelled-synthetic data and models, "
                      "for trying kiln, not for real items", highlight=False)

    def step(number: int, total: int, title: str) -> None:
        err_console.print(f"[bold cyan][{number}/{total}][/] {title}", highlight=False)

    def done(result: StepResult) -> None:
        how = "reused" if result.reused else f"done in {result.seconds:.0f}s"
        detail = f": {result.detail}" if result.detail and not result.reused else ""
        err_console.print(f"      [green]{how}[/]{detail}", highlight=False)

    prepared = prepare(home, sizes, reporter=RichReporter(), on_step=step, on_done=done)
    err_console.print(f"[green]ready[/] in {time.perf_counter() - started:.0f}s", highlight=False)
    if prepare_only:
        err_console.print(f"serve it with: kiln serve --repo {prepared.repo}", highlight=False)
        console.print(str(prepared.repo.resolve()), highlight=False, soft_wrap=True)
        return

    from kiln.serve.process import ServeOptions, run
    from kiln.web import pages_dir

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    base = f"http://{shown}:{http_port}"
    console.print("[bold]kiln demo[/] pages (synthetic demo material):", highlight=False)
    for label, path in PAGES:
        console.print(f"  {label:<13} {base}{path}", highlight=False, soft_wrap=True)
    console.print(f"  model repository {prepared.repo}", highlight=False, soft_wrap=True)
    console.print("Stop with Ctrl+C.", highlight=False)
    run(ServeOptions(repo=prepared.repo, host=host, http_port=http_port, grpc_port=grpc_port or None,
                     apps=["authenticity", "packaging", "web"], static_dir=pages_dir(), log_level="warning",
                     access_log=False))


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)

