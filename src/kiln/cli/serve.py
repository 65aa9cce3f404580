"""Server commands: ``kiln serve`` and ``kiln bench serve``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kiln.errors import KilnError

bench_app = typer.Typer(help="Measure throughput and latency.", no_args_is_help=True)


def serve(
    repo: Annotated[Path, typer.Option("--repo", help="model repository: REPO/<model>/[config.json] and REPO/<model>/<version>/")],
    host: Annotated[str, typer.Option(help="address to bind (loopback by default)")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP port (Open Inference Protocol REST, /metrics, apps)")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (inference.GRPCInferenceService); 0 disables gRPC")] = 8001,
    apps: Annotated[str, typer.Option("--apps", help="comma-separated apps: authenticity, packaging, web, or module:attribute; "
                                      "default: every kiln app whose models are in the repository, and web")] = "",
    models: Annotated[str, typer.Option("--models", help="serve only these models (comma-separated)")] = "",
    strict_readiness: Annotated[bool, typer.Option("--strict-readiness", help="stay unready while any model failed to load")] = False,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="JSON line per HTTP request")] = True,
    log_level: Annotated[str, typer.Option(help="debug | info | warning | error")] = "info",
    web: Annotated[Path | None, typer.Option("--web", help="folder of static pages served at / (default: kiln's pages)")] = None,
    pages: Annotated[bool, typer.Option("--pages/--no-pages", help="serve the web pages at /")] = True,
    broker: Annotated[str | None, typer.Option("--broker", envvar="KILN_BROKER",
                                               help="amqp:// URL: run as a gateway that publishes cases to workers (kiln worker)")] = None,
    db: Annotated[str | None, typer.Option("--db", envvar="KILN_DB", help="database URL (sqlite:///PATH or postgresql://...)")] = None,
    queue_prefix: Annotated[str, typer.Option("--queue-prefix", help="name prefix of the broker queues (gateway mode)")] = "kiln",
    auth: Annotated[str, typer.Option("--auth", help="API keys: auto (required unless --host is loopback), on, off")] = "auto",
    rate: Annotated[float, typer.Option("--rate", help="default requests per second per API key (0: unlimited)")] = 50.0,
    max_inflight: Annotated[int, typer.Option("--max-inflight", help="HTTP requests in progress before new ones get 503 (0: unbounded)")] = 128,
    workers: Annotated[int, typer.Option("--workers", help="server processes sharing the ports (SO_REUSEPORT), each loading "
                                         "every model; per-process metrics and rate limits")] = 1,
    grpc_worker_ports: Annotated[int | None, typer.Option(
        "--grpc-worker-ports", metavar="FIRST",
        help="with --workers N: each worker also listens for gRPC on its own port FIRST+i, so that clients can balance "
             "requests with gRPC's round_robin policy over ipv4:HOST:FIRST,...,HOST:FIRST+N-1")] = None,
    shared_engines: Annotated[bool, typer.Option("--shared-engines", help="run the engines once, in an engine host process that "
                                                 "batches every worker's requests together (one CUDA context on a GPU)")] = False,
    max_loop_lag_ms: Annotated[float, typer.Option("--max-loop-lag-ms",
                                                   help="refuse new HTTP requests (503) while the event loop runs this late (0: never)")] = 50.0,
    loop: Annotated[str, typer.Option("--loop", help="event loop: asyncio (accepts connections faster under load) or uvloop")] = "asyncio",
) -> None:
    """Serve a model repository over HTTP and gRPC with dynamic batching."""
    from kiln.serve.context import AppPlugin
    from kiln.serve.process import ServeOptions, run

    for name, port in (("--http-port", http_port), ("--grpc-port", grpc_port)):
        if not 0 <= port <= 65535:
            raise KilnError(f"{name} {port} is not a port number (0-65535)")
    if http_port == grpc_port:
        raise KilnError(f"--http-port and --grpc-port are both {http_port}", hint="give them different ports")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise KilnError(f"--log-level {log_level!r} is not debug, info, warning or error")
    if auth not in ("auto", "on", "off"):
        raise KilnError(f"--auth {auth!r} is not auto, on or off")
    if max_inflight < 0:
        raise KilnError("--max-inflight must be 0 (unbounded) or positive")
    if loop not in ("asyncio", "uvloop"):
        raise KilnError(f"--loop {loop!r} is not asyncio or uvloop")
    if max_loop_lag_ms < 0:
        raise KilnError("--max-loop-lag-ms must be 0 (never) or positive")
    if rate < 0:
        raise KilnError("--rate must be 0 (unlimited) or positive")
    if workers < 1:
        raise KilnError(f"--workers {workers} must be at least 1")
    if workers > 1 and http_port == 0:
        raise KilnError(f"--workers {workers} needs a fixed --http-port, not 0",
                        hint="the workers share one port: give a port number")
    if grpc_worker_ports is not None:
        _check_grpc_worker_ports(grpc_worker_ports, workers, http_port, grpc_port)
    if web is not None and not web.is_dir():
        raise KilnError(f"--web {web} is not a directory")
    if pages and web is None:
        from kiln.web import pages_dir

        web = pages_dir()
    chosen = [a.strip() for a in apps.split(",") if a.strip()] or default_apps(repo, pages=pages)
    options = ServeOptions(
        repo=repo,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port or None,
        apps=list[str | AppPlugin](chosen),
        models=[m.strip() for m in models.split(",") if m.strip()] or None,
        strict_readiness=strict_readiness,
        access_log=access_log,
        log_level=log_level,
        static_dir=web if pages else None,
        broker=broker,
        db=db,
        queue_prefix=queue_prefix,
        auth=auth,
        rate_per_s=rate,
        max_inflight=max_inflight or None,
        max_loop_lag_s=max_loop_lag_ms / 1e3 or None,
        loop=loop,
        shared_engines=shared_engines,
        grpc_worker_port=grpc_worker_ports,
    )
    if shared_engines and broker:
        raise KilnError("--shared-engines does not apply to a gateway (--broker): it runs no engines")
    if workers == 1 and not shared_engines:
        run(options)
        return
    from kiln.serve.workers import supervise

    code = supervise(options, workers)
    if code:
        raise typer.Exit(code)


def _check_grpc_worker_ports(first: int, workers: int, http_port: int, grpc_port: int) -> None:
    name = f"--grpc-worker-ports {first}"
    if workers < 2:
        raise KilnError(f"{name} needs --workers 2 or more (got {workers})",
                        hint="one process has one gRPC port already: use --grpc-port")
    if grpc_port == 0:
        raise KilnError(f"{name} needs gRPC, which --grpc-port 0 disables", hint="give a --grpc-port")
    last = first + workers - 1
    if first < 1 or last > 65535:
        raise KilnError(f"{name} with --workers {workers} asks for ports {first}-{last}, outside 1-65535",
                        hint=f"choose FIRST between 1 and {65536 - workers}")
    for option, port in (("--http-port", http_port), ("--grpc-port", grpc_port)):
        if first <= port <= last:
            raise KilnError(f"{name} with --workers {workers} takes ports {first}-{last}, which include {option} {port}",
                            hint="choose a range apart from the HTTP and gRPC ports")


def default_apps(repo: Path, *, pages: bool) -> list[str]:
    """kiln's apps whose models are all in ``repo`` (and ``web``, which feeds the pages), decided
    without importing the apps."""
    from kiln.serve.plugins import KNOWN_APP_MODELS

    chosen = [name for name, needed in KNOWN_APP_MODELS.items()
              if needed and all((repo / model).is_dir() for model in needed)]
    return [*chosen, "web"] if pages else chosen


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.add_typer(bench_app, name="bench")


def _parse_shapes(values: list[str]) -> dict[str, list[int]]:
    shapes: dict[str, list[int]] = {}
    for value in values:
        name, _, dims = value.partition("=")
        try:
            shapes[name] = [int(d) for d in dims.lower().split("x")]
        except ValueError:
            shapes[name] = []
        if not name or not shapes[name] or any(d <= 0 for d in shapes[name]):
            raise KilnError(f"--shape {value!r} is not NAME=DxDx...", hint="for example --shape input=1x3x224x224")
    return shapes


def bench_serve(
    url: Annotated[str, typer.Option(help="server address: http://HOST:PORT for HTTP, HOST:PORT for gRPC, or a gRPC target "
                                          "of several servers such as ipv4:HOST:P0,HOST:P1 (calls dealt round_robin)")],
    model: Annotated[str, typer.Option(help="model name")],
    protocol: Annotated[str, typer.Option(help="http | grpc")] = "http",
    concurrency: Annotated[str, typer.Option(help="closed-loop concurrency levels, comma-separated")] = "1,8,32",
    rate: Annotated[float | None, typer.Option(help="open loop: requests per second (replaces --concurrency)")] = None,
    duration: Annotated[float, typer.Option(help="seconds measured per level")] = 10.0,
    warmup: Annotated[float, typer.Option(help="seconds of unmeasured load before each closed-loop level")] = 1.0,
    batch: Annotated[int, typer.Option(help="rows per request (the batch dimension)")] = 1,
    connections: Annotated[int | None, typer.Option(
        help="HTTP connections or gRPC channels (each its own connection) per level; default: the concurrency, "
             "or 256 (HTTP) / 16 (gRPC) in open loop. A server's workers share out connections, not requests"
    )] = None,
    shape: Annotated[list[str] | None, typer.Option("--shape", help="input shape NAME=DxDx... (dynamic dimensions)")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
) -> None:
    """Load an Open Inference Protocol server (kiln, Triton, KServe) and report throughput and latency."""
    import asyncio
    import json

    from kiln.cli.console import console
    from kiln.serve import loadgen

    if protocol not in ("http", "grpc"):
        raise KilnError(f"--protocol {protocol!r} is not http or grpc")
    try:
        levels = [int(c) for c in concurrency.split(",") if c.strip()]
    except ValueError:
        levels = []
    if rate is None and (not levels or any(c < 1 for c in levels)):
        raise KilnError(f"--concurrency {concurrency!r} is not a list of positive integers", hint="for example 1,8,32")
    if rate is not None and rate <= 0:
        raise KilnError("--rate must be positive")
    if not 0 < duration <= 3600:
        raise KilnError("--duration must be between 0 and 3600 seconds")
    if batch < 1:
        raise KilnError("--batch must be at least 1")
    if connections is not None and not 1 <= connections <= 4096:
        raise KilnError(f"--connections {connections} is not between 1 and 4096")
    if protocol == "http" and url.startswith(loadgen.GRPC_SCHEMES):
        raise KilnError(f"--url {url} is a gRPC target, and --protocol is http", hint="add --protocol grpc")
    shapes = _parse_shapes(shape or [])

    async def run() -> list[dict[str, object]]:
        from rich.live import Live

        metadata = await loadgen.fetch_metadata(url if protocol == "grpc" or "://" in url else f"http://{url}", model, protocol)
        inputs = loadgen.make_inputs(metadata, batch, shapes)
        plans: list[tuple[str, float | int]] = [("open", rate)] if rate is not None else [("closed", c) for c in levels]
        results = []
        for mode, level in plans:
            default = int(level) if mode == "closed" else (256 if protocol == "http" else 16)
            target = loadgen.make_target(url, model, protocol, inputs, connections=connections or default)
            label = f"{protocol} {'concurrency' if mode == 'closed' else 'rate'} {level}"
            with Live(console=console, refresh_per_second=4, transient=True) as live:

                def show(p: loadgen.Progress, label: str = label, live: Live = live) -> None:
                    rps = p.requests / p.elapsed_s if p.elapsed_s > 0 else 0.0
                    live.update(f"[bold]{label}[/]: {min(p.elapsed_s, p.duration_s):5.1f}/{p.duration_s:.0f} s  "
                                f"{p.requests} ok  {p.errors} errors  {rps:,.1f} req/s")

                try:
                    if mode == "closed":
                        result = await loadgen.closed_loop(target, int(level), duration, batch=batch, protocol=protocol, warmup_s=warmup, on_progress=show)
                    else:
                        result = await loadgen.open_loop(target, float(level), duration, batch=batch, protocol=protocol, on_progress=show)
                finally:
                    await target.close()
            summary = result.summary()
            latency = summary["latency_ms"]
            assert isinstance(latency, dict)
            console.print(
                f"{label}: {summary['throughput_rps']:,.1f} req/s ({summary['items_per_s']:,.1f} items/s), "
                f"p50 {latency['p50']:.2f} ms, p95 {latency['p95']:.2f} ms, p99 {latency['p99']:.2f} ms, "
                f"errors {summary['errors']}" + (f" {summary['errors_by_reason']}" if summary["errors"] else "")
            )
            per_worker = summary.get("requests_per_worker")
            if isinstance(per_worker, dict) and len(per_worker) > 1:
                console.print("  answered by server workers: " + ", ".join(f"{w} {n}" for w, n in per_worker.items()),
                              highlight=False)
            stages = summary.get("server_stages_ms")
            if isinstance(stages, dict):
                console.print("  server stages, p50 / p99 ms: " + ", ".join(
                    f"{stage} {q['p50']:.2f} / {q['p99']:.2f}" for stage, q in stages.items()), highlight=False)
            results.append(summary)
        return results

    runs = asyncio.run(run())
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"url": url, "model": model, "protocol": protocol, "batch": batch, "runs": runs}, indent=2) + "\n")


bench_app.command("serve")(bench_serve)



def bench_soak(
    url: Annotated[str | None, typer.Option(help="server to load, http://HOST:PORT (or give --repo to start one)")] = None,
    repo: Annotated[Path | None, typer.Option("--repo", help="start 'kiln serve' on this repository (loopback, free port)")] = None,
    apps: Annotated[str, typer.Option("--apps", help="with --repo: apps to serve (comma-separated)")] = "",
    duration: Annotated[float, typer.Option(help="seconds of soak at 80% of the maximum (default 10 minutes)")] = 600.0,
    model: Annotated[str | None, typer.Option(help="model for the inference part of the mix (default: first ready)")] = None,
    key: Annotated[str | None, typer.Option(help="API key (admin scope: the mix reads the repository index)")] = None,
    pid: Annotated[int | None, typer.Option(help="server process id, to sample its resident memory")] = None,
    probe: Annotated[float, typer.Option(help="seconds per concurrency level when finding the maximum")] = 8.0,
    calibrate: Annotated[float, typer.Option(help="seconds of each open-loop check of the sustained maximum")] = 30.0,
    overload: Annotated[float, typer.Option(help="seconds at 3x the maximum")] = 20.0,
    timeout_ms: Annotated[int, typer.Option(help="per-request timeout sent with inference requests")] = 2000,
    shape: Annotated[list[str] | None, typer.Option("--shape", help="input shape NAME=DxDx... for dynamic dimensions")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
) -> None:
    """Soak: find the maximum throughput of a mixed workload, hold 80% of it, then overload at 3x and recover."""
    import asyncio
    import json

    from kiln.cli.console import console
    from kiln.serve.soak import SoakSettings, p99_stable, run_soak, verdict

    if (url is None) == (repo is None):
        raise KilnError("give either --url (a running server) or --repo (start one)")
    if not 0 < duration <= 24 * 3600:
        raise KilnError("--duration must be between 0 and 86400 seconds")
    if probe <= 0 or calibrate <= 0 or overload <= 0 or timeout_ms <= 0:
        raise KilnError("--probe, --calibrate, --overload and --timeout-ms must be positive")
    with _server(repo, apps) if repo is not None else _nothing(url or "", pid) as (target, server_pid):
        settings = SoakSettings(url=target, duration_s=duration, model=model, key=key, pid=server_pid, probe_s=probe,
                                calibration_s=calibrate,
                                overload_s=overload, timeout_us=timeout_ms * 1000, shapes=_parse_shapes(shape or []) or None)
        result = asyncio.run(run_soak(settings, report=lambda line: console.print(line, highlight=False)))
    problems = verdict(result)
    result["problems"] = problems
    result["p99_stable"] = p99_stable(result)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    console.print("[green]soak passed[/]" if not problems else "[red]soak found problems:[/] " + "; ".join(problems))
    if problems:
        import sys

        sys.exit(1)


def _nothing(url: str, pid: int | None):  # type: ignore[no-untyped-def]
    import contextlib

    return contextlib.nullcontext((url.rstrip("/") if "://" in url else f"http://{url}", pid))


def _server(repo: Path, apps: str):  # type: ignore[no-untyped-def]
    """``kiln serve`` in a child process on a free loopback port with a database of its own (so that a run
    does not start with the cases of the runs before it), stopped at the end."""
    import contextlib
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    import httpx

    @contextlib.contextmanager
    def run():  # type: ignore[no-untyped-def]
        state = tempfile.TemporaryDirectory(prefix="kiln-soak-")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        command = [sys.executable, "-m", "kiln", "serve", "--repo", str(repo), "--http-port", str(port), "--grpc-port", "0",
                   "--no-access-log", "--log-level", "warning", "--db", f"sqlite:///{state.name}/kiln.db"] + (["--apps", apps] if apps else [])
        process = subprocess.Popen(command)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise KilnError(f"the server exited with status {process.returncode} before it was ready")
                try:
                    if httpx.get(url + "/v2/health/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.5)
            else:
                raise KilnError("the server did not become ready within 300 s")
            yield url, process.pid
        finally:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
            state.cleanup()

    return run()


bench_app.command("soak")(bench_soak)
