"""Authentication cases over HTTP on a GPU (issue 9, acceptance 3 and 5).

A 6-photo case of 1024×1024 JPEGs, posted as multipart to `kiln serve` (the real server: the app's
router, the dynamic batcher, SQLite store), with the auth model as a torch engine on the GPU
(fp16, uint8 input normalised inside the engine) and the photos decoded on the GPU (batched
nvJPEG, `apps/authenticity/gpu_imaging.py`) unless `--decode cpu|auto` says otherwise. Measured
from separate client processes, open loop (Poisson arrivals; latency counted from each request's
scheduled time, so a client that falls behind cannot hide queueing):

  1. the target rate (default 100 cases/s): p50/p95/p99, where each case's time goes (the
     server's per-stage Server-Timing: form, check, decode, quality, preprocess, queue, infer,
     resume, assess, references, respond, store), GPU utilization (NVML) and the server's CPU use;
  2. a rate sweep for the highest rate whose p95 stays within --p95-ms (default 80 ms);
  3. heatmap PNG and overlay JPEG of stored cases, which the app renders on request, not per case.

The model is trained for one epoch on synthetic data in the script unless --checkpoint/--data are
given: timing does not depend on how well it was trained (the JSON says which it was). References
(--references per view) are written to the store before the server starts, with random unit
embeddings in the engine's embedding space, so every usable photo searches a populated index.

    python benchmarks/gpu_authenticity.py --out gpu_authenticity.json              # on the GPU machine
    python benchmarks/gpu_authenticity.py --device cpu --smoke --out /tmp/a.json    # checks the script on a CPU
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from authenticity import free_port, make_case, multipart, prepare_checkpoint  # noqa: E402
from readiness import wait_ready  # noqa: E402

BRAND, MODEL = "aurelle", "celeste"
BUCKETS = (6, 12, 24, 48)  # cases of 6 photos: 1, 2, 4, 8 per engine call


# Python modules the run needs (module → pip package); checked before any work so that a missing
# wheel costs seconds of GPU time, not minutes
SERVER_MODULES = {
    "typer": "typer", "fastapi": "fastapi", "uvicorn": "uvicorn", "httptools": "httptools", "uvloop": "uvloop",
    "python_multipart|multipart": "python-multipart", "orjson": "orjson", "sqlalchemy": "sqlalchemy", "alembic": "alembic",
    "grpc": "grpcio", "prometheus_client": "prometheus-client", "faiss": "faiss-cpu", "cv2": "opencv-python-headless",
    "jinja2": "jinja2", "fpdf": "fpdf2", "timm": "timm", "torchvision": "torchvision", "pydantic_settings": "pydantic-settings",
}


def require_modules(modules: dict[str, str], optional: dict[str, str] | None = None) -> dict[str, Any]:
    """Exits with the pip command to run when a module is missing; notes missing optional ones.

    Each module is imported, not only found: a package whose own needs are missing (fastapi 0.165
    without opentelemetry-api) counts as missing, and the error says what it lacks."""
    import importlib

    failures: dict[str, str] = {}

    def absent_module(names: str) -> bool:  # "a|b": either will do
        for name in names.split("|"):
            try:
                importlib.import_module(name)
                return False
            except ImportError as exc:
                failures[names] = str(exc)
        return True

    missing = [pip for module, pip in modules.items() if absent_module(module)]
    if missing:
        why = "; ".join(f"{module}: {error}" for module, error in failures.items() if modules.get(module) in missing)
        raise SystemExit(f"missing Python packages: {', '.join(missing)} ({why})\n  pip install {' '.join(missing)}"
                         "\n  (for a GPU machine: benchmarks/device_wheels.txt)")
    absent = [pip for module, pip in (optional or {}).items() if absent_module(module)]
    if absent:
        print(f"note: optional packages missing: {', '.join(absent)} (pip install {' '.join(absent)})", flush=True)
    return {"optional_missing": absent}


# --- client (separate processes) ---------------------------------------------------------------------
UNIQUE_SLOT = b"KILNUNIQUE:0000000000000"  # in a JPEG comment of every photo; each request writes its own token


def with_unique_slot(jpeg: bytes) -> bytes:
    """The JPEG with a comment segment (COM, ignored by decoders) right after its start marker, holding
    ``UNIQUE_SLOT``: a client rewrites it per request so that no two cases upload the same photo bytes
    (a store that keeps one file per distinct photo would otherwise skip every write after the first)."""
    assert jpeg[:2] == b"\xff\xd8", "not a JPEG"
    return jpeg[:2] + b"\xff\xfe" + (len(UNIQUE_SLOT) + 2).to_bytes(2, "big") + UNIQUE_SLOT + jpeg[2:]


def run_client(port: int, rate: float, seconds: float, body: bytes, content_type: str, seed: int, threads: int,
               arrivals: str, start_at: float) -> list[dict[str, Any]]:
    """Open loop: requests at scheduled times; latency from the scheduled time to the full response.
    Every request's photos get a token of their own in ``UNIQUE_SLOT`` (when the body has one)."""
    rng = random.Random(seed)
    sequence = itertools.count()
    unique = UNIQUE_SLOT in body
    schedule: queue.Queue[float] = queue.Queue()
    t = rng.uniform(0, 1 / rate) if arrivals == "uniform" else rng.expovariate(rate)
    while t < seconds:
        schedule.put(t)
        t += 1 / rate if arrivals == "uniform" else rng.expovariate(rate)
    origin = time.perf_counter() + max(0.0, start_at - time.time())
    results: list[dict[str, Any]] = []
    lock = threading.Lock()
    headers = {"Content-Type": content_type}

    def worker() -> None:
        conn: http.client.HTTPConnection | None = None
        while True:
            try:
                offset = schedule.get_nowait()
            except queue.Empty:
                break
            delay = origin + offset - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            record: dict[str, Any] = {"at": round(offset, 4)}
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                token = f"KILNUNIQUE:{seed % 10_000:04d}{next(sequence):09d}".encode()
                payload_out = body.replace(UNIQUE_SLOT, token) if unique else body
                conn.request("POST", "/v1/authenticate", body=payload_out, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                record["status"] = response.status
                record["timing"] = response.getheader("Server-Timing") or ""
                if response.status != 200:
                    record["error"] = payload[:200].decode("utf-8", "replace")
                if response.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as exc:
                record["status"] = 0
                record["error"] = f"{type(exc).__name__}: {exc}"
                if conn is not None:
                    conn.close()
                conn = None
            record["latency_ms"] = round((time.perf_counter() - (origin + offset)) * 1e3, 3)
            with lock:
                results.append(record)
        if conn is not None:
            conn.close()

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return results


def client_main(args: argparse.Namespace) -> None:
    body = Path(args.body).read_bytes()
    results = run_client(args.port, args.rate, args.seconds, body, args.content_type, args.seed, args.threads,
                         args.arrivals, args.start_at)
    Path(args.results).write_text(json.dumps(results))


# --- measuring ---------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    import numpy as np

    return round(float(np.percentile(np.asarray(values), q)), 3) if values else None


class Sampler:
    """GPU utilization and memory through NVML every 0.1 s (nothing where NVML is missing), and the
    server process's CPU time from /proc."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.gpu: list[float] = []
        self.memory_mib: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._cpu_start = 0.0
        self._wall_start = 0.0
        self.nvml_error: str | None = None

    def _cpu_seconds(self) -> float:
        """The server's CPU time, its worker processes' included (kiln serve --workers)."""
        pids = [self.server_pid]
        try:
            for task in Path(f"/proc/{self.server_pid}/task").iterdir():
                pids.extend(int(c) for c in (task / "children").read_text().split())
        except (OSError, ValueError):
            pass
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            except (OSError, IndexError, ValueError):
                pass
        return total

    def _run(self) -> None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or 0))
        except Exception as exc:  # no NVML here (a CPU machine, or nvidia-ml-py missing): reported, not fatal
            self.nvml_error = f"{type(exc).__name__}: {exc}"
            return
        while not self._stop.wait(0.1):
            self.gpu.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0)
            self.memory_mib.append(pynvml.nvmlDeviceGetMemoryInfo(handle).used / 2**20)

    def __enter__(self) -> Sampler:
        self._cpu_start, self._wall_start = self._cpu_seconds(), time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.server_cores = (self._cpu_seconds() - self._cpu_start) / max(time.perf_counter() - self._wall_start, 1e-9)

    def summary(self) -> dict[str, Any]:
        return {
            "gpu_utilization_mean": round(sum(self.gpu) / len(self.gpu), 3) if self.gpu else None,
            "gpu_utilization_max": round(max(self.gpu), 3) if self.gpu else None,
            "gpu_memory_used_mib_max": round(max(self.memory_mib)) if self.memory_mib else None,
            "gpu_samples": len(self.gpu),
            "nvml": self.nvml_error or "ok",
            "server_cpu_cores_used": round(self.server_cores, 2),
        }


def load_level(args: argparse.Namespace, port: int, rate: float, seconds: float, body_path: Path, content_type: str,
               work: Path, tag: str, seed: int) -> list[dict[str, Any]]:
    """``rate`` cases/s for ``seconds`` from --clients processes; every request's record."""
    per_client = rate / args.clients
    threads = max(8, min(256, int(per_client * 1.0) + 16))  # enough senders that none is late while latency is ≤ 1 s
    start_at = time.time() + 1.0 + 0.1 * args.clients  # interpreters start first, then all begin together
    procs, outs = [], []
    for i in range(args.clients):
        out = work / f"{tag}-{i}.json"
        outs.append(out)
        procs.append(subprocess.Popen([
            sys.executable, __file__, "client", "--port", str(port), "--rate", str(per_client), "--seconds", str(seconds),
            "--body", str(body_path), "--content-type", content_type, "--seed", str(seed * 100 + i),
            "--threads", str(threads), "--arrivals", args.arrivals, "--start-at", str(start_at), "--results", str(out),
        ]))
    for proc in procs:
        proc.wait(timeout=seconds + 120)
    records: list[dict[str, Any]] = []
    for out in outs:
        if out.is_file():
            records += json.loads(out.read_text())
    return records


def summarise(records: list[dict[str, Any]], rate: float, seconds: float) -> dict[str, Any]:
    from kiln.serve.timing import parse_server_timing

    ok = [r for r in records if r.get("status") == 200]
    latencies = [r["latency_ms"] for r in ok]
    errors: dict[str, int] = {}
    for r in records:
        if r.get("status") != 200:
            key = f"{r.get('status')}: {str(r.get('error', ''))[:80]}"
            errors[key] = errors.get(key, 0) + 1
    stages: dict[str, list[float]] = {}
    unaccounted: list[float] = []
    for r in ok:
        parsed = parse_server_timing(r.get("timing", ""))
        for name, ms in parsed.items():
            stages.setdefault(name, []).append(ms)
        unaccounted.append(r["latency_ms"] - sum(parsed.values()))
    breakdown = {
        name: {"mean_ms": round(sum(v) / len(v), 3), "p50_ms": percentile(v, 50), "p95_ms": percentile(v, 95)}
        for name, v in stages.items()
    }
    if unaccounted:
        # HTTP in and out of the server (client and server socket work, the request's wait for the
        # event loop before the route runs, response serialisation): client latency minus the stages
        breakdown["outside_stages"] = {"mean_ms": round(sum(unaccounted) / len(unaccounted), 3),
                                       "p50_ms": percentile(unaccounted, 50), "p95_ms": percentile(unaccounted, 95)}
    return {
        "offered_cases_per_s": rate,
        "seconds": seconds,
        "sent": len(records),
        "ok": len(ok),
        "errors": errors,
        "achieved_cases_per_s": round(len(ok) / seconds, 2),  # Poisson arrivals: the offered count varies a little
        "p50_ms": percentile(latencies, 50),
        "p95_ms": percentile(latencies, 95),
        "p99_ms": percentile(latencies, 99),
        "max_ms": round(max(latencies), 3) if latencies else None,
        "breakdown": breakdown,
    }


# --- preparing the model, the repository and the store -------------------------------------------------
def build_repository(args: argparse.Namespace, home: Path, repo: Path) -> dict[str, Any]:
    from kiln.apps.authenticity.engine import build_auth_engine
    from kiln.engine.spec import BatchProfile, Precision

    started = time.perf_counter()
    checkpoint, data = prepare_checkpoint(home, args.checkpoint, args.data, device=args.device, tiny=args.smoke)
    trained_s = time.perf_counter() - started
    precision = Precision.FP16 if args.device == "cuda" else Precision.FP32
    options: dict[str, Any] = {"input_format": "uint8", "compile": args.compile}
    started = time.perf_counter()
    outcome = build_auth_engine(
        checkpoint, data, repo / "authenticity" / "1", precision=precision, backend="torch",
        batch=BatchProfile(min=1, opt=6, max=max(BUCKETS), buckets=BUCKETS), validate=False, device=args.device,
        options=options, cache_dir=home / "engines",
    )
    built_s = time.perf_counter() - started
    (repo / "authenticity" / "config.json").write_text(json.dumps({
        "max_batch_size": max(BUCKETS),
        "max_queue_delay_us": args.queue_delay_us,
        "preferred_batch_sizes": list(BUCKETS),
        "max_queue_size": 2048,
        "timeout_s": 30,
        "instances": args.instances,
    }, indent=2))
    manifest = outcome.manifest
    return {
        "checkpoint": str(checkpoint),
        "model": ("given checkpoint" if args.checkpoint else
                  "trained in the script on synthetic data (" + ("tiny test recipe" if args.smoke else "1 epoch") +
                  "): timing does not depend on accuracy"),
        "prepare_model_s": round(trained_s, 1),
        "build_engine_s": round(built_s, 1),
        "engine": {
            "backend": manifest.backend, "precision": manifest.precision.value, "device": manifest.device,
            "input_format": manifest.preprocessing.input_format, "input_size": list(manifest.preprocessing.input_size),
            "compile": manifest.build_options.get("compile"), "buckets": list(BUCKETS),
            "backbone": manifest.extra.get("backbone"), "width": manifest.extra.get("width"),
        },
    }


def add_references(db_url: str, engine_dir: Path, files: list[tuple[str, bytes, str]], per_view: int) -> int:
    """``per_view`` references per view of the benchmark's brand/model, written straight to the store."""
    import uuid

    import numpy as np

    from kiln.apps.authenticity.calibration import AuthCalibration
    from kiln.apps.authenticity.heatmaps import thumbnail_jpeg
    from kiln.engine.manifest import EngineManifest
    from kiln.serve.store import ReferenceRecord, open_store

    manifest = EngineManifest.read(engine_dir)
    calibration = AuthCalibration.from_extra(manifest.extra, where=str(engine_dir))
    rng = np.random.default_rng(0)
    store = open_store(db_url)
    records = []
    for name, data, view in files:
        preview = thumbnail_jpeg(data)
        for _ in range(per_view):
            vector = rng.standard_normal(calibration.embed_dim).astype(np.float32)
            vector /= np.linalg.norm(vector)
            records.append(ReferenceRecord(
                id=uuid.uuid4().hex, created_at=datetime.now(UTC), brand=BRAND, model=MODEL, view=view,
                sha256=uuid.uuid4().hex * 2, embedding_space=manifest.source_sha256, embedding=vector.tobytes(),
                preview=preview, note=f"benchmark reference ({name})",
            ))
    store.add_references(records)
    return len(records)


def start_server(args: argparse.Namespace, repo: Path, port: int, db_url: str, home: Path, log: Any,
                 decode: str) -> subprocess.Popen[bytes]:
    # kiln's sources first, then whatever the caller's path holds (wheels installed with --target)
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "KILN_HOME": str(home), "KILN_DECODE_DEVICE": decode}
    return subprocess.Popen(
        [sys.executable, "-m", "kiln", "serve", "--repo", str(repo), "--http-port", str(port), "--grpc-port", "0",
         "--apps", "authenticity", "--no-access-log", "--no-pages", "--log-level", "info", "--db", db_url,
         "--max-inflight", "1024", "--workers", str(args.workers), "--loop", args.loop,
         *(["--shared-engines"] if args.shared_engines else [])],
        stdout=log, stderr=log, env=env,
    )


def post_case(port: int, body: bytes, content_type: str) -> tuple[dict[str, Any], dict[str, float], float]:
    from kiln.serve.timing import parse_server_timing

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        start = time.perf_counter()
        conn.request("POST", "/v1/authenticate", body=body, headers={"Content-Type": content_type})
        response = conn.getresponse()
        payload = response.read()
        elapsed = (time.perf_counter() - start) * 1e3
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
        return json.loads(payload), parse_server_timing(response.getheader("Server-Timing") or ""), elapsed
    finally:
        conn.close()


def get_ms(port: int, path: str) -> tuple[float, int]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        data = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: HTTP {response.status}: {data[:200]!r}")
        return (time.perf_counter() - start) * 1e3, len(data)
    finally:
        conn.close()


def measure_server(args: argparse.Namespace, repo: Path, home: Path, work: Path, body_path: Path, body: bytes,
                   content_type: str, decode: str, sweep: bool, result: dict[str, Any], key: str) -> None:
    """Start the server with photos decoded per ``decode``, measure, stop; results under ``result[key]``."""
    port = free_port()
    db_url = f"sqlite:///{home / 'bench.db'}"
    section: dict[str, Any] = {"decode_device_setting": decode}
    result[key] = section
    log_path = work / f"server-{key}.log"
    with log_path.open("wb") as log:
        started = time.perf_counter()
        server = start_server(args, repo, port, db_url, home, log, decode)
        try:
            wait_ready(f"http://127.0.0.1:{port}", 600, workers=args.workers, process=server)
            section["server_ready_s"] = round(time.perf_counter() - started, 1)
            # warm-up: first cases initialise nvJPEG, cuDNN and the allocator; keep the first response as a sample
            sample, timing, first_ms = post_case(port, body, content_type)
            for _ in range(args.warmup_cases):
                post_case(port, body, content_type)
            section["first_case_ms"] = round(first_ms, 1)
            section["sample_case"] = {
                "verdict": sample["verdict"], "usable_photos": sum(1 for i in sample["images"] if i["quality"]["ok"]),
                "photos": len(sample["images"]), "reference_matches": len(sample["references"]),
                "engine": sample["engine"], "server_timing_ms": timing,
            }
            load_level(args, port, args.rate, min(2.0, args.seconds), body_path, content_type, work, f"{key}-warm", 7)
            print(f"[{key}] server ready in {section['server_ready_s']} s; sample case: {json.dumps(section['sample_case'])}",
                  flush=True)
            with Sampler(server.pid) as sampler:
                records = load_level(args, port, args.rate, args.seconds, body_path, content_type, work, f"{key}-target", 1)
            target = summarise(records, args.rate, args.seconds) | sampler.summary()
            section["target_rate"] = target
            print(f"[{key}] {args.rate:g} cases/s: p50 {target['p50_ms']} ms, p95 {target['p95_ms']} ms, p99 {target['p99_ms']} ms, "
                  f"errors {sum(target['errors'].values())}, GPU {target['gpu_utilization_mean']}", flush=True)
            if sweep:
                section["sweep"] = run_sweep(args, port, body_path, content_type, work, key, server.pid)
                passing = [r for r in section["sweep"] if r["within_target"]]
                section["max_cases_per_s_within_p95"] = max((r["offered_cases_per_s"] for r in passing), default=None)
                heatmaps(args, port, body, content_type, section)
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
            section["server_log_tail"] = log_path.read_text(errors="replace")[-3000:]
            if server.returncode not in (0, -signal.SIGTERM):
                print(section["server_log_tail"], file=sys.stderr)


def run_sweep(args: argparse.Namespace, port: int, body_path: Path, content_type: str, work: Path, key: str,
              pid: int) -> list[dict[str, Any]]:
    """Rising rates until p95 exceeds the target (or errors appear); one bisection step between the last
    passing and the first failing rate."""
    rows: list[dict[str, Any]] = []

    def level(rate: float, seed: int) -> dict[str, Any]:
        with Sampler(pid) as sampler:
            records = load_level(args, port, rate, args.sweep_seconds, body_path, content_type, work, f"{key}-sweep-{rate:g}", seed)
        row = summarise(records, rate, args.sweep_seconds) | sampler.summary()
        # open loop: a server that cannot keep up shows it in the latency; every request sent must succeed
        row["within_target"] = bool(row["p95_ms"] is not None and row["p95_ms"] <= args.p95_ms and not row["errors"]
                                    and row["ok"] == row["sent"])
        if not args.sweep_breakdown:
            row.pop("breakdown", None)
        print(f"[{key}] sweep {rate:g} cases/s: achieved {row['achieved_cases_per_s']}, p95 {row['p95_ms']} ms, "
              f"errors {sum(row['errors'].values())}, GPU {row['gpu_utilization_mean']}, server cores {row['server_cpu_cores_used']}"
              f" -> {'ok' if row['within_target'] else 'over'}", flush=True)
        return row

    rates = [float(r) for r in args.sweep.split(",") if r.strip()]
    last_ok: float | None = None
    for index, rate in enumerate(rates):
        row = level(rate, 10 + index)
        rows.append(row)
        if row["within_target"]:
            last_ok = rate
        else:
            if last_ok is not None and rate - last_ok > 0.1 * last_ok:
                rows.append(level(round((last_ok + rate) / 2), 99))
            break
    return rows


def heatmaps(args: argparse.Namespace, port: int, body: bytes, content_type: str, section: dict[str, Any]) -> None:
    """Heatmap PNG and overlay JPEG of fresh cases (rendered on request, then served from the store's photo)."""
    png, overlay = [], []
    for _ in range(args.heatmap_cases):
        case, _, _ = post_case(port, body, content_type)
        for image in case["images"][:2]:
            png.append(get_ms(port, image["heatmap_url"])[0])
            overlay.append(get_ms(port, image["overlay_url"])[0])
    section["on_request"] = {
        "what": "per case the engine's heatmap grid is stored with the case; PNG heatmaps and overlays are rendered "
                "when their URL is requested (measured here, one request at a time, server otherwise idle)",
        "heatmap_png_p50_ms": percentile(png, 50), "heatmap_png_p95_ms": percentile(png, 95),
        "overlay_jpg_p50_ms": percentile(overlay, 50), "overlay_jpg_p95_ms": percentile(overlay, 95),
        "requests": len(png),
    }


# --- main ----------------------------------------------------------------------------------------------
def versions() -> dict[str, Any]:
    import torch

    from kiln.engine.hardware import fingerprint

    info: dict[str, Any] = {"hardware": fingerprint(), "torch": torch.__version__, "cuda": torch.version.cuda}
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        info["torchvision"] = None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def print_table(result: dict[str, Any], args: argparse.Namespace) -> None:
    print("\n| run | cases/s offered | achieved | p50 ms | p95 ms | p99 ms | errors | GPU util | server cores |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in ("main", "cpu_decode"):
        section = result.get(key)
        if not section:
            continue
        rows = [("target", section.get("target_rate"))] + [("sweep", r) for r in section.get("sweep", [])]
        for label, r in rows:
            if r:
                print(f"| {key} {label} | {r['offered_cases_per_s']:g} | {r['achieved_cases_per_s']} | {r['p50_ms']} | {r['p95_ms']} | "
                      f"{r['p99_ms']} | {sum(r['errors'].values())} | {r['gpu_utilization_mean']} | {r['server_cpu_cores_used']} |")
    gpu = result.get("main", {})
    target = gpu.get("target_rate")
    if target:
        print(f"\nwhere a case's time goes at {args.rate:g} cases/s (server stages, ms):")
        print("| stage | mean | p50 | p95 |\n|---|---:|---:|---:|")
        for name, s in target["breakdown"].items():
            print(f"| {name} | {s['mean_ms']} | {s['p50_ms']} | {s['p95_ms']} |")
        ok = target["p95_ms"] is not None and target["p95_ms"] <= args.target_p95_ms and not target["errors"]
        print(f"\ntarget: p95 ≤ {args.target_p95_ms:g} ms at {args.rate:g} cases/s → p95 {target['p95_ms']} ms: {'met' if ok else 'NOT met'}")
    if "max_cases_per_s_within_p95" in gpu:
        print(f"max cases/s with p95 ≤ {args.p95_ms:g} ms: {gpu['max_cases_per_s_within_p95']}")
    if "on_request" in gpu:
        o = gpu["on_request"]
        print(f"on request: heatmap PNG p50 {o['heatmap_png_p50_ms']} ms, overlay JPEG p50 {o['overlay_jpg_p50_ms']} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    cli = sub.add_parser("client")
    cli.add_argument("--port", type=int, required=True)
    cli.add_argument("--rate", type=float, required=True)
    cli.add_argument("--seconds", type=float, required=True)
    cli.add_argument("--body", required=True)
    cli.add_argument("--content-type", required=True)
    cli.add_argument("--seed", type=int, default=0)
    cli.add_argument("--threads", type=int, default=32)
    cli.add_argument("--arrivals", default="poisson")
    cli.add_argument("--start-at", type=float, default=0.0)
    cli.add_argument("--results", required=True)
    parser.add_argument("--out", type=Path, required=False, help="JSON results")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: check the script without a GPU")
    parser.add_argument("--smoke", action="store_true", help="tiny model, small photos, short runs (with --device cpu)")
    parser.add_argument("--checkpoint", type=Path, help="a trained auth checkpoint (with --data, its dataset)")
    parser.add_argument("--data", type=Path)
    parser.add_argument("--compile", default="none",
                        help="torch engine compile mode: none (eager fp16, builds in seconds) or reduce-overhead "
                             "(inductor + CUDA graphs; about a minute to build and to load)")
    parser.add_argument("--instances", type=int, default=2, help="engine instances in the server")
    parser.add_argument("--workers", type=int, default=1, help="kiln serve --workers (server processes sharing the port)")
    parser.add_argument("--queue-delay-us", type=int, default=200)
    parser.add_argument("--repeat-photos", action="store_true",
                        help="send the same photo bytes in every case (default: each request's photos differ by a JPEG comment)")
    parser.add_argument("--shared-engines", action="store_true", help="kiln serve --shared-engines: one engine host for all workers")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio", help="kiln serve --loop: the servers' event loop")
    parser.add_argument("--photo-size", type=int, default=1024)
    parser.add_argument("--references", type=int, default=20, help="references per view in the store")
    parser.add_argument("--rate", type=float, default=100.0, help="target rate, cases/s")
    parser.add_argument("--target-p95-ms", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=15.0, help="measuring time at the target rate")
    parser.add_argument("--sweep", default="150,200,300,400,600", help="rates tried in order (cases/s)")
    parser.add_argument("--sweep-seconds", type=float, default=8.0)
    parser.add_argument("--sweep-breakdown", action="store_true", help="keep the stage breakdown of every sweep level")
    parser.add_argument("--p95-ms", type=float, default=80.0, help="p95 bound of the sweep")
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--arrivals", choices=["poisson", "uniform"], default="poisson")
    parser.add_argument("--warmup-cases", type=int, default=20)
    parser.add_argument("--heatmap-cases", type=int, default=10)
    parser.add_argument("--decode", choices=["cuda", "cpu", "auto"], default=None,
                        help="KILN_DECODE_DEVICE of the main run (default: cuda with --device cuda, else auto)")
    parser.add_argument("--compare-cpu-decode", action="store_true",
                        help="also measure the target rate with photos decoded by Pillow on the CPU (same engine)")
    args = parser.parse_args()
    if args.command == "client":
        client_main(args)
        return
    if args.out is None:
        parser.error("--out is required")
    if args.decode == "cuda" and args.device == "cpu":
        parser.error("--decode cuda needs --device cuda")
    if args.decode in ("cpu", "auto") and args.compare_cpu_decode:
        parser.error(f"--decode {args.decode} already decodes on the CPU: --compare-cpu-decode would measure it twice")
    if args.smoke:
        args.photo_size, args.rate, args.seconds, args.sweep, args.sweep_seconds = 256, 4.0, 3.0, "8", 2.0
        args.clients, args.warmup_cases, args.heatmap_cases, args.references = 2, 2, 2, 3
        args.target_p95_ms, args.p95_ms = 2000.0, 4000.0
    preflight = require_modules(SERVER_MODULES, {"pynvml": "nvidia-ml-py"} if args.device == "cuda" else None)
    # a time limit's SIGTERM still writes what was measured (the finally below)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit(143)))

    from kiln.apps.authenticity.model import MODEL_NAME  # noqa: F401  (registers kiln:auth_multiview)

    bench_home = Path(os.environ.get("KILN_HOME", Path.home() / ".kiln")) / "bench" / "gpu-authenticity"
    bench_home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="kiln-gpu-auth-"))
    repo, home = work / "repo", work / "home"
    home.mkdir()
    result: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]]),
        "versions": versions(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "command"},
        "preflight": preflight,
        "store_environment": {k: os.environ[k] for k in ("KILN_PHOTO_FILES", "KILN_STAGE_PHOTOS") if k in os.environ},
        "request": {},
        "load": "open loop from separate client processes (Poisson arrivals unless --arrivals uniform); latency "
                "from each request's scheduled send time to its full response; keep-alive connections",
    }
    try:
        result["build"] = build_repository(args, bench_home, repo)
        print(f"model and engine ready: {json.dumps(result['build'])}", flush=True)
        files = make_case(args.photo_size)
        uploads = files if args.repeat_photos else [(name, with_unique_slot(data), view) for name, data, view in files]
        body, content_type = multipart(uploads, BRAND, MODEL)
        body_path = work / "case.body"
        body_path.write_bytes(body)
        result["request"] = {"photos": len(files), "photo_size": args.photo_size, "jpeg_quality": 90,
                             "photos_unique_per_request": not args.repeat_photos,
                             "photo_bytes": [len(f[1]) for f in files], "body_bytes": len(body)}
        result["references"] = add_references(f"sqlite:///{home / 'bench.db'}", repo / "authenticity" / "1", files,
                                              args.references)
        decode = args.decode or ("cuda" if args.device == "cuda" else "auto")
        # "main": photos decoded where the engine runs (nvJPEG on the GPU) unless --decode says otherwise;
        # "cpu_decode": Pillow, same engine
        measure_server(args, repo, home, work, body_path, body, content_type, decode, True, result, "main")
        if args.compare_cpu_decode:
            measure_server(args, repo, home, work, body_path, body, content_type, "cpu", False, result, "cpu_decode")
    finally:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}", flush=True)
    print_table(result, args)


if __name__ == "__main__":
    main()
