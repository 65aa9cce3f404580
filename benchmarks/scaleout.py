"""Scale-out benchmark (issue 7 acceptance) → docs/benchmarks/scaleout.md.

One gateway (``kiln serve --broker``) and 1, 2 and 4 ``kiln worker`` processes on CPU engines,
RabbitMQ and PostgreSQL of this machine; the same closed-loop load of synchronous cases over HTTP
for each; baseline: 1 worker (and, for reference, the embedded single-process server on SQLite).
Per run: cases/s, latency, CPU seconds per case of the gateway, the workers and the load client
(from /proc), and the gateway's own account of where a case's time goes (publish incl. the job row,
queue wait, worker time).

    PYTHONPATH=src python benchmarks/scaleout.py [--repo REPO --data DATA] [--cases 300]

Without ``--repo`` a tiny engine is trained and built first (about a minute); ``--data`` is a
synthetic dataset folder (``kiln auth synth``) whose cases are sent round-robin.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BROKER = os.environ.get("KILN_BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672/")
PG_ADMIN = os.environ.get("KILN_BENCH_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (its own threads; children not counted)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def service_cpu_s(names: tuple[str, ...]) -> float:
    """CPU seconds of every running process whose command name is one of ``names`` (broker, database)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() in names:
                total += cpu_s(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return total


BROKER_PROCS = ("beam.smp", "erl_child_setup", "epmd")
DB_PROCS = ("postgres",)


def build_tiny(work: Path) -> tuple[Path, Path]:
    """Synthetic data, one epoch of the tiny test model, an FP32 engine in a repository."""
    from kiln.apps.authenticity.engine import build_auth_engine
    from kiln.apps.authenticity.synth import SynthSpec, generate_dataset
    from kiln.apps.authenticity.train import TrainConfig, train
    from kiln.engine.spec import BatchProfile, Precision

    data = work / "data"
    generate_dataset(data, 24, SynthSpec(seed=7, size=96, twins=True), workers=1)
    config = TrainConfig(backbone="test_resnet", width=1.0, epochs=1, image_size=64, batch_size=16, lr=3e-3,
                         val_fraction=0.25, threads=2, min_side=64, embed_dim=32)
    result = train(data, work / "auth.pt", config)
    repo = work / "repo"
    build_auth_engine(result.checkpoint, data, repo / "authenticity" / "1", precision=Precision.FP32,
                      batch=BatchProfile(min=1, opt=6, max=8), validate=False, cache_dir=work / "cache")
    return repo, data


def write_config(repo: Path) -> None:
    (repo / "authenticity" / "config.json").write_text(json.dumps(
        {"max_batch_size": 8, "max_queue_delay_us": 2000, "engine_options": {"threads": 1}}))


def kiln(*args: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "kiln", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=log.open("wb"))


async def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    import httpx

    async with httpx.AsyncClient() as client:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if (await client.get(f"{url}/v2/health/ready")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    raise TimeoutError("server not ready")


async def consumers(prefix: str) -> int:
    import aio_pika

    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(f"{prefix}.cases", passive=True)
        return queue.declaration_result.consumer_count or 0


async def delete_queues(prefix: str) -> None:
    import aio_pika

    connection = await aio_pika.connect(BROKER)
    async with connection:
        channel = await connection.channel()
        for name in (f"{prefix}.cases", f"{prefix}.dead"):
            await channel.queue_delete(name)


async def load(url: str, forms: list[dict[str, Any]], n: int, concurrency: int) -> dict[str, Any]:
    """Closed loop: ``concurrency`` clients send synchronous cases until ``n`` are done."""
    import httpx

    latencies: list[float] = []
    errors: dict[int, int] = {}
    counter = iter(range(n))

    async def client_loop(client: httpx.AsyncClient) -> None:
        for i in counter:
            form = forms[i % len(forms)]
            start = time.perf_counter()
            response = await client.post(f"{url}/v1/authenticate", files=form["files"], data=form["data"])
            if response.status_code == 200:
                latencies.append(time.perf_counter() - start)
            else:
                errors[response.status_code] = errors.get(response.status_code, 0) + 1

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        start = time.perf_counter()
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()
    return {"elapsed_s": elapsed, "ok": len(latencies), "errors": errors, "cases_per_s": len(latencies) / elapsed,
            "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
            "p95_ms": 1000 * latencies[int(len(latencies) * 0.95)] if latencies else None}


def forms_from(data: Path) -> list[dict[str, Any]]:
    from kiln.scale.bulk import read_catalogue

    forms = []
    for case in read_catalogue(data):
        forms.append({
            "files": [("images", (p.name, p.read_bytes(), "image/png" if p.suffix == ".png" else "image/jpeg"))
                      for _, p in case.photos],
            "data": {"views": [v for v, _ in case.photos], "brand": case.brand, "model": case.model},
        })
    return forms


def gateway_stats(log: Path) -> dict[str, float]:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if "gateway stats:" in line:
            return dict(json.loads(json.loads(line)["message"].split("gateway stats:", 1)[1]))
    return {}


async def run_mode(workers: int, repo: Path, db: str, forms: list[dict[str, Any]], args: argparse.Namespace,
                   work: Path) -> dict[str, Any]:
    """One measurement: gateway + ``workers`` workers (0: the embedded server on SQLite)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    prefix = f"kiln-bench-{uuid.uuid4().hex[:8]}"
    gw_log = work / f"gateway-{workers}.log"
    serve_args = ["serve", "--repo", str(repo), "--apps", "authenticity", "--http-port", str(port), "--grpc-port", "0",
                  "--no-access-log"]
    if workers:
        serve_args += ["--broker", BROKER, "--db", db, "--queue-prefix", prefix]
    else:
        serve_args += ["--db", f"sqlite:///{work / 'embedded.db'}"]
    gateway = kiln(*serve_args, log=gw_log)
    procs = []
    try:
        await wait_ready(url, gateway)
        for i in range(workers):
            procs.append(kiln("worker", "--broker", BROKER, "--db", db, "--repo", str(repo), "--queue-prefix", prefix,
                              "--prefetch", "16", log=work / f"worker-{workers}-{i}.log"))
        deadline = time.monotonic() + 180
        while workers and await consumers(prefix) < workers:
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start; see {work}")
            await asyncio.sleep(0.3)
        await load(url, forms, 16, 8)  # warm-up: connections, engine batches
        before = {"gateway": cpu_s(gateway.pid), "workers": sum(cpu_s(p.pid) for p in procs),
                  "client": time.process_time(), "broker": service_cpu_s(BROKER_PROCS), "database": service_cpu_s(DB_PROCS)}
        result = await load(url, forms, args.cases, args.concurrency)
        after = {"gateway": cpu_s(gateway.pid), "workers": sum(cpu_s(p.pid) for p in procs),
                 "client": time.process_time(), "broker": service_cpu_s(BROKER_PROCS), "database": service_cpu_s(DB_PROCS)}
        ok = max(1, result["ok"])
        result.update({f"{k}_cpu_ms_per_case": 1000 * (after[k] - before[k]) / ok for k in before})
    finally:
        for p in [*procs, gateway]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [*procs, gateway]:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
    if workers:
        await delete_queues(prefix)
        stats = gateway_stats(gw_log)
        replies = max(1, int(stats.get("replies", 0)))
        result.update({
            "gateway_publish_ms_per_case": 1000 * stats.get("publish_s", 0.0) / max(1, int(stats.get("published", 0))),
            "queue_wait_ms_per_case": 1000 * stats.get("queue_wait_s", 0.0) / replies,
            "worker_work_ms_per_case": 1000 * stats.get("work_s", 0.0) / replies,
        })
    result["workers"] = workers
    return result


def total_cpu(r: dict[str, Any]) -> float:
    return float(sum(r.get(f"{k}_cpu_ms_per_case", 0.0) for k in ("gateway", "workers", "broker", "database", "client")))


def render(results: list[dict[str, Any]], args: argparse.Namespace, loads: tuple[float, float]) -> str:
    base = next(r for r in results if r["workers"] == 1)
    measured = getattr(args, "measured", None) or f"{datetime.now(UTC):%Y-%m-%d %H:%M}"
    lines = [
        "# Scale-out: gateway + RabbitMQ + N workers (CPU engines)",
        "",
        f"Measured {measured} UTC with `PYTHONPATH=src python benchmarks/scaleout.py"
        f" --cases {args.cases} --concurrency {args.concurrency}`.",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {platform.python_version()}, RabbitMQ and PostgreSQL"
        " on the same machine. **The machine has 2 cores shared with other work**: gateway, workers, broker, database"
        " and the load client all compete for them, so more workers cannot scale past the cores; the figures show"
        " the overhead and where time goes more than the scaling a real cluster would see."
        + (f" Figures were taken under contention (load average {loads[0]:.1f} before, {loads[1]:.1f} after)."
           if max(loads) > 1.5 else f" Load average {loads[0]:.1f} before, {loads[1]:.1f} after."),
        "",
        "Engine: the tiny test model of the authentication tests (timm `test_resnet`, 64 px, FP32 onnxruntime,"
        " 1 thread per worker, max batch 8, 2 ms queue delay); each case 1–6 photos of 96 px. Load: closed loop of"
        f" {args.concurrency} clients sending synchronous `POST /v1/authenticate`, {args.cases} cases per run after"
        " 16 warm-up cases. Baseline: 1 worker.",
        "",
        "| mode | cases/s | vs 1 worker | scaling efficiency | p50 ms | p95 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        name = "embedded (in-process queue, SQLite)" if r["workers"] == 0 else f"gateway + {r['workers']} worker(s)"
        ratio = r["cases_per_s"] / base["cases_per_s"]
        eff = f"{100 * ratio / r['workers']:.0f} %" if r["workers"] else "–"
        lines.append(f"| {name} | {r['cases_per_s']:.1f} | {ratio:.2f}× | {eff} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} |"
                     f" {r['errors'] or 'none'} |")
    lines += [
        "",
        "## Where the time goes (CPU milliseconds per case, from /proc)",
        "",
        "| mode | gateway CPU | workers CPU (sum) | RabbitMQ CPU | PostgreSQL CPU | load client CPU |"
        " gateway publish (job row + confirm), wall | queue wait, wall | worker time per case, wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r["workers"] == 0:
            lines.append(f"| embedded | {r['gateway_cpu_ms_per_case']:.1f} | – | – | – | {r['client_cpu_ms_per_case']:.1f} |"
                         " – | – | – |")
            continue
        lines.append(
            f"| {r['workers']} worker(s) | {r['gateway_cpu_ms_per_case']:.1f} | {r['workers_cpu_ms_per_case']:.1f} |"
            f" {r['broker_cpu_ms_per_case']:.1f} | {r['database_cpu_ms_per_case']:.1f} | {r['client_cpu_ms_per_case']:.1f} | {r['gateway_publish_ms_per_case']:.1f} |"
            f" {r['queue_wait_ms_per_case']:.1f} | {r['worker_work_ms_per_case']:.1f} |")
    four = next((r for r in results if r["workers"] == 4), None)
    if four:
        gw = four["gateway_cpu_ms_per_case"]
        lines += [
            "",
            f"At 4 workers the gateway spends {gw:.1f} ms of CPU per case, so one gateway core could carry about"
            f" {1000 / gw:.0f} cases/s; the run reached {four['cases_per_s']:.1f} cases/s. The workers together spend"
            f" {four['workers_cpu_ms_per_case']:.1f} ms of CPU per case ({four['workers_cpu_ms_per_case'] / gw:.1f}× the gateway)"
            f" out of {total_cpu(four):.1f} ms for all processes: the gateway is not the bottleneck. The wall time of its"
            f" publish step ({four['gateway_publish_ms_per_case']:.0f} ms: job row in a thread + broker confirm) is"
            " mostly waiting for a core on this saturated machine, as its CPU figure shows.",
            "",
            f"All processes together spend {total_cpu(four):.1f} ms of CPU per case at 4 workers"
            f" ({total_cpu(base):.1f} ms at 1 worker), so with both cores free this machine could reach at most about"
            f" {2000 / total_cpu(four):.0f} cases/s whatever the number of workers. Beyond two workers there is no CPU"
            " left to give: more workers only add processes competing for the same two cores (and the load average"
            " shows other work competing too), so on this machine the figures measure the overhead and where the"
            " time goes, not the scaling of a cluster; run-to-run variation under this contention is large. Where"
            " each worker has its own cores or GPU, the gateway's CPU per case is the ceiling per gateway core, and"
            " gateways scale out behind a load balancer like the workers do.",
        ]
    lines += ["", f"Raw results: `{args.out.with_suffix('.json').name}` next to this page.", ""]
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", type=Path)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--no-embedded", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks" / "scaleout.md")
    parser.add_argument("--render", type=Path, help="only re-render the page from a saved results JSON")
    args = parser.parse_args()
    if args.render is not None:
        saved = json.loads(args.render.read_text())
        args.cases, args.concurrency = saved["cases"], saved["concurrency"]
        args.measured = saved["measured"][:16].replace("T", " ")
        args.out.write_text(render(saved["results"], args, tuple(saved["load_average"])))  # type: ignore[arg-type]
        return
    import psycopg

    loads_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="kiln-scaleout-") as tmp:
        work = Path(tmp)
        if args.repo is None or args.data is None:
            args.repo, args.data = build_tiny(work)
        write_config(args.repo)
        forms = forms_from(args.data)
        name = f"kiln_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        db = f"postgresql://postgres@127.0.0.1:5432/{name}"
        results = []
        try:
            counts = [int(w) for w in args.workers.split(",")]
            if not args.no_embedded:
                counts = [0, *counts]
            for workers in counts:
                result = await run_mode(workers, args.repo, db, forms, args, work)
                print(json.dumps(result), flush=True)
                results.append(result)
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    args.out.parent.mkdir(parents=True, exist_ok=True)
    loads = (loads_before, os.getloadavg()[0])
    args.out.with_suffix(".json").write_text(json.dumps({
        "cases": args.cases, "concurrency": args.concurrency, "load_average": loads, "measured": datetime.now(UTC).isoformat(),
        "results": results}, indent=1) + "\n")
    args.out.write_text(render(results, args, loads))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
