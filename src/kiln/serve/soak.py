"""``kiln bench soak``: find the maximum throughput of a mixed workload, hold 80 % of it for a bounded
time, then overload the server at 3× and watch it recover.

The workload mixes every entry point the server has (discovered from ``/openapi.json``): OIP binary and
JSON inference, model metadata, and when the apps are mounted a case upload, the case list and the
packaging styles. The soak reports errors, p99 of the first and last window (a minute, or a fifth of
a short run), and the server's resident memory at the start and end (``--pid``, or the server it
started itself). Overload reports how fast excess requests are refused (429/503), whether accepted
requests met their timeout, and whether the server answers normally once the load drops.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from kiln.errors import KilnError

REJECTED = (429, 503)


@dataclass
class Call:
    """One kind of request of the mix."""

    name: str
    method: str
    path: str
    weight: float
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    form: Callable[[], Any] | None = None  # multipart bodies are rebuilt per request (aiohttp consumes them)


@dataclass
class Sample:
    at: float  # seconds since the phase started (scheduled start)
    call: str
    status: int  # 0: no answer (connection error, client timeout)
    latency_ms: float  # from the scheduled start (includes any lag of the load generator)
    service_ms: float  # from the moment the request was sent
    reason: str = ""  # for refusals (429/503): the start of the server's error message, which names the limit
    opened_connection: bool = False  # the client opened a new connection for this request (none was free in the pool)


@dataclass
class PhaseResult:
    name: str
    rate: float | None
    duration_s: float
    samples: list[Sample]

    def latencies(self, window: tuple[float, float] | None = None, ok_only: bool = True) -> list[float]:
        return [s.latency_ms for s in self.samples
                if (not ok_only or 200 <= s.status < 300) and (window is None or window[0] <= s.at < window[1])]

    def summary(self) -> dict[str, Any]:
        statuses = Counter(s.status for s in self.samples)
        ok = self.latencies()
        return {
            "phase": self.name, "rate": self.rate, "duration_s": round(self.duration_s, 1), "requests": len(self.samples),
            "throughput_rps": round(len(self.samples) / self.duration_s, 2) if self.duration_s else 0.0,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "errors": sum(v for k, v in statuses.items() if not 200 <= k < 300),
            "refusal_reasons": dict(Counter(s.reason for s in self.samples if s.status in REJECTED).most_common(5)),
            "connections_opened": sum(s.opened_connection for s in self.samples),
            "errors_at_s": _first_last([s.at for s in self.samples if not 200 <= s.status < 300]),
            "p50_ms": _pct(ok, 50), "p99_ms": _pct(ok, 99),
            "by_call": {name: {"requests": n, "p99_ms": _pct([s.latency_ms for s in self.samples if s.call == name and 200 <= s.status < 300], 99)}
                        for name, n in sorted(Counter(s.call for s in self.samples).items())},
        }


def _first_last(times: list[float]) -> list[float] | None:
    """When the first and the last of some samples happened (seconds since the phase started), or None."""
    return [round(min(times), 2), round(max(times), 2)] if times else None


def _pct(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values else None


def _photo(size: int = 96, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


async def discover(url: str, model: str | None, headers: dict[str, str], timeout_us: int,
                   shapes: dict[str, list[int]] | None = None) -> list[Call]:
    """The mix for this server: inference on ``model`` (or the first ready model with fixed shapes) and
    the app routes it has."""
    import httpx

    from kiln.serve.loadgen import http_payload, make_inputs

    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as client:
        try:
            paths = set((await client.get("/openapi.json")).json().get("paths", {}))
            index = (await client.post("/v2/repository/index", json={"ready": True})).json()
        except (httpx.HTTPError, ValueError) as exc:
            raise KilnError(f"cannot read {url}/openapi.json and the repository index: {exc}", hint="is the server running?") from exc
        if not isinstance(index, list):
            raise KilnError(f"{url}: the repository index answered {index!r}", hint="an admin key may be needed: --key")
        candidates = [model] if model else [row["name"] for row in index]
        chosen: tuple[str, dict[str, np.ndarray]] | None = None
        for name in candidates:
            meta = (await client.get(f"/v2/models/{name}")).json()
            try:
                chosen = (name, make_inputs(meta, 1, shapes))
                break
            except (KilnError, KeyError):
                continue
    if chosen is None:
        raise KilnError("no ready model with fixed input shapes to load", hint="name one with --model")
    name, inputs = chosen
    body, binary_headers = http_payload(inputs)
    header_len = int(binary_headers["Inference-Header-Content-Length"])
    header = json.loads(body[:header_len])
    header["parameters"]["timeout"] = timeout_us
    head = json.dumps(header).encode()
    binary_body = head + body[header_len:]
    binary_headers = {**binary_headers, "Inference-Header-Content-Length": str(len(head))}
    json_body = json.dumps({"inputs": [{"name": k, "shape": list(v.shape), "datatype": h["datatype"], "data": v.ravel().tolist()}
                                       for (k, v), h in zip(inputs.items(), header["inputs"], strict=True)],
                            "parameters": {"timeout": timeout_us}}).encode()
    calls = [
        Call("infer_binary", "POST", f"/v2/models/{name}/infer", 6, binary_body, binary_headers),
        Call("infer_json", "POST", f"/v2/models/{name}/infer", 3, json_body, {"Content-Type": "application/json"}),
        Call("model_metadata", "GET", f"/v2/models/{name}", 1),
    ]
    if "/v1/authenticate" in paths:
        import aiohttp

        photo = _photo()

        def form() -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("images", photo, filename="logo.jpg", content_type="image/jpeg")
            data.add_field("views", "logo")
            data.add_field("brand", "Acme")
            data.add_field("model", "Tote")
            return data

        calls.append(Call("authenticate", "POST", "/v1/authenticate", 1, form=form))
        calls.append(Call("list_cases", "GET", "/v1/cases?limit=5", 1))
    if "/v1/packaging/styles" in paths:
        calls.append(Call("packaging_styles", "GET", "/v1/packaging/styles", 1))
    return calls


class _PoolWait(SimpleNamespace):
    """aiohttp trace context: notes when a request that waited for a free pooled connection got one."""

    def __init__(self, trace_request_ctx: dict[str, float] | None = None) -> None:
        super().__init__(marks=trace_request_ctx if trace_request_ctx is not None else {})

    @staticmethod
    async def dequeued(session: Any, context: SimpleNamespace, params: Any) -> None:
        context.marks["dequeued"] = time.perf_counter()

    @staticmethod
    async def connected(session: Any, context: SimpleNamespace, params: Any) -> None:
        context.marks["connected"] = time.perf_counter()


def _error_message(body: bytes) -> str:
    try:
        message = json.loads(body).get("error", "")
    except (ValueError, AttributeError):
        return ""
    return message if isinstance(message, str) else ""


def _pool_size(wanted: int = 2048) -> int:
    """Connections the load generator may open: ``wanted``, within the open-file limit (raised to its maximum)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else max(soft, 65536), hard))
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return 512
    return max(64, min(wanted, soft - 128))


class Driver:
    """Sends the mix over one aiohttp session and records every answer."""

    def __init__(self, url: str, calls: list[Call], headers: dict[str, str], seed: int = 0, client_timeout_s: float = 60) -> None:
        self.url = url.rstrip("/")
        self.calls = calls
        self.weights = [c.weight for c in calls]
        self.rng = random.Random(seed)
        self.headers = headers
        self.client_timeout_s = client_timeout_s
        self.session = self._session()

    def _session(self) -> Any:
        import aiohttp

        # A large pool, so that a request seldom waits for a free connection (that wait is the client's, and
        # ``one`` leaves it out of the service time); idle connections are dropped before the server's
        # keep-alive (5 s) closes them under the client.
        trace = aiohttp.TraceConfig(trace_config_ctx_factory=_PoolWait)
        trace.on_connection_queued_end.append(_PoolWait.dequeued)
        trace.on_connection_create_end.append(_PoolWait.connected)
        return aiohttp.ClientSession(headers=self.headers, trace_configs=[trace],
                                     connector=aiohttp.TCPConnector(limit=_pool_size(), keepalive_timeout=2.0),
                                     timeout=aiohttp.ClientTimeout(total=self.client_timeout_s))

    async def fresh(self) -> None:
        """New connections for the next phase (those of an overload may have been closed by the server)."""
        await self.session.close()
        self.session = self._session()

    def pick(self) -> Call:
        return self.rng.choices(self.calls, self.weights)[0]

    async def one(self, call: Call, scheduled: float, origin: float, samples: list[Sample]) -> None:
        import aiohttp

        status = 0
        reason = ""
        sent = time.perf_counter()
        pool: dict[str, float] = {}
        try:
            data = call.form() if call.form is not None else call.body
            async with self.session.request(call.method, self.url + call.path, data=data, headers=call.headers,
                                            trace_request_ctx=pool) as response:
                body = await response.read()
                status = response.status
                if status in REJECTED:
                    reason = _error_message(body)[:70]
        except (TimeoutError, aiohttp.ClientError):
            status = 0
        done = time.perf_counter()
        sent = max(sent, pool.get("dequeued", sent))  # a wait for a free connection is the client's, not the server's
        samples.append(Sample(scheduled - origin, call.name, status, (done - scheduled) * 1e3, (done - sent) * 1e3, reason,
                              "connected" in pool))

    async def closed(self, concurrency: int, duration_s: float) -> PhaseResult:
        samples: list[Sample] = []
        origin = time.perf_counter()
        end = origin + duration_s

        async def client() -> None:
            while (now := time.perf_counter()) < end:
                await self.one(self.pick(), now, origin, samples)

        await asyncio.gather(*(client() for _ in range(concurrency)))
        return PhaseResult(f"closed-{concurrency}", None, time.perf_counter() - origin, samples)

    async def open(self, name: str, rate: float, duration_s: float, *, tick: Callable[[float], None] | None = None) -> PhaseResult:
        """Requests start at ``rate`` per second whatever the server does (latency from the scheduled start)."""
        samples: list[Sample] = []
        tasks: set[asyncio.Task[None]] = set()
        origin = time.perf_counter()
        count = int(rate * duration_s)
        next_tick = 1.0
        for i in range(count):
            scheduled = origin + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if tick is not None and scheduled - origin >= next_tick:
                tick(scheduled - origin)
                next_tick += 1.0
            task = asyncio.create_task(self.one(self.pick(), scheduled, origin, samples))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)
        return PhaseResult(name, rate, max(duration_s, time.perf_counter() - origin), samples)

    async def close(self) -> None:
        await self.session.close()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time the process has used so far (``/proc/PID/stat``), or None where unreadable."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    import os

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float | None:
    """CPU time all processors have spent busy since boot (``/proc/stat``), or None where unreadable."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    import os

    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@dataclass
class Usage:
    """One sample a second during the soak: the server's RSS and CPU, this process's CPU, the machine's."""

    at: float
    rss: int | None
    server_cpu_s: float | None
    loadgen_cpu_s: float
    machine_cpu_s: float | None


def _usage(elapsed: float, pid: int | None) -> Usage:
    return Usage(elapsed, rss_bytes(pid) if pid is not None else None, cpu_seconds(pid) if pid is not None else None,
                 time.process_time(), machine_cpu_seconds())


def _record_usage(into: list[Usage], pid: int | None, elapsed: float) -> None:
    into.append(_usage(elapsed, pid))


def _rate(points: list[tuple[float, float | None]]) -> float | None:
    known = [(t, v) for t, v in points if v is not None]
    if len(known) < 2 or known[-1][0] <= known[0][0]:
        return None
    return (known[-1][1] - known[0][1]) / (known[-1][0] - known[0][0])


def timeline(phase: PhaseResult, bucket_s: float, usage: list[Usage]) -> list[dict[str, Any]]:
    """Per bucket of the phase: requests, errors and their reasons, p50/p99, the server's RSS, and CPU (the
    server's, per request too, the load generator's, and the rest of the machine's: other jobs), so that
    a change during a long run shows when it began and whether the server or a neighbour caused it. A
    bucket in which no request started is a row too (0 requests): a load generator that stalled, or a
    gap in the schedule, shows where it happened instead of vanishing from the table."""
    rows = []
    # Up to the bucket of the last scheduled request: the phase's elapsed time also covers waiting for
    # the last answers, and a bucket after the schedule ended is not a stall.
    last = max((s.at for s in phase.samples), default=-1.0)
    count = min(math.ceil(phase.duration_s / bucket_s), math.floor(last / bucket_s) + 1) if last >= 0 else 0
    for index in range(count):
        start, end = index * bucket_s, (index + 1) * bucket_s
        inside = [s for s in phase.samples if start <= s.at < end]
        ok = [s.latency_ms for s in inside if 200 <= s.status < 300]
        row: dict[str, Any] = {"from_s": round(start, 1), "requests": len(inside),
                               "errors": sum(1 for s in inside if not 200 <= s.status < 300),
                               "refusal_reasons": dict(Counter(s.reason for s in inside if s.status in REJECTED).most_common(3)),
                               "p50_ms": _pct(ok, 50), "p99_ms": _pct(ok, 99),
                               "p99_service_ms": _pct([s.service_ms for s in inside if 200 <= s.status < 300], 99),
                               "connections_opened": sum(s.opened_connection for s in inside)}
        points = [u for u in usage if start <= u.at <= end]
        rss = [u.rss for u in points if u.rss is not None]
        if rss:
            row["rss_mb"] = round(rss[-1] / 2**20, 1)
        server = _rate([(u.at, u.server_cpu_s) for u in points])
        loadgen = _rate([(u.at, u.loadgen_cpu_s) for u in points])
        machine = _rate([(u.at, u.machine_cpu_s) for u in points])
        if server is not None:
            row["server_cpu_pct"] = round(100 * server, 1)
            if inside:
                row["server_cpu_ms_per_request"] = round(1e3 * server * (min(end, phase.duration_s) - start) / len(inside), 2)
        if loadgen is not None:
            row["loadgen_cpu_pct"] = round(100 * loadgen, 1)
        if machine is not None and server is not None and loadgen is not None:
            row["others_cpu_pct"] = round(100 * max(0.0, machine - server - loadgen), 1)
        rows.append(row)
    return rows


def rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@dataclass
class SoakSettings:
    url: str
    duration_s: float = 600.0
    model: str | None = None
    key: str | None = None
    pid: int | None = None
    probe_s: float = 8.0
    overload_s: float = 20.0
    recovery_s: float = 15.0
    timeout_us: int = 2_000_000  # per-request timeout sent to the server (OIP "timeout" parameter)
    levels: tuple[int, ...] = (1, 4, 16, 48)
    calibration_steps: int = 6
    calibration_s: float = 30.0  # each open-loop check: long enough for a queue that slowly builds to show
    shapes: dict[str, list[int]] | None = None  # input shapes for models with dynamic dimensions
    load_factor: float = 0.8
    overload_factor: float = 3.0


async def run_soak(settings: SoakSettings, report: Callable[[str], None] = print) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {settings.key}"} if settings.key else {}
    calls = await discover(settings.url, settings.model, headers, settings.timeout_us, settings.shapes)
    report("mix: " + ", ".join(f"{c.name}×{c.weight:g}" for c in calls))
    driver = Driver(settings.url, calls, headers)
    result: dict[str, Any] = {"url": settings.url, "mix": {c.name: c.weight for c in calls}}
    try:
        # 1. maximum throughput: closed loop at rising concurrency, best answered-OK rate
        probes = []
        for level in settings.levels:
            phase = await driver.closed(level, settings.probe_s)
            ok = len(phase.latencies())
            probes.append({"concurrency": level, "ok_rps": round(ok / phase.duration_s, 2), "errors": phase.summary()["errors"]})
            report(f"probe concurrency {level}: {ok / phase.duration_s:.1f} ok req/s, {probes[-1]['errors']} errors")
        # the best level the server handled without refusing (a level with refusals is past the maximum)
        max_rps = max((p["ok_rps"] for p in probes if not p["errors"]), default=max(p["ok_rps"] for p in probes))
        if max_rps <= 0:
            raise KilnError("no request succeeded while probing the maximum throughput", hint="check the server and --key")
        result["probe_max_rps"] = max_rps
        result["probes"] = probes
        # the maximum the server sustains in open loop (a closed-loop probe overstates what an open-loop arrival
        # stream of the same mix can keep up with): from the probe's best, step down by 15 % until a rate runs
        # clean for calibration_s (no refusal, p99 under a quarter of the timeout). That rate is the maximum,
        # and the soak holds load_factor (80 %) of it
        calibration = []
        for _ in range(settings.calibration_steps):
            checked: list[Usage] = []
            check = await driver.open("calibrate", max_rps, settings.calibration_s,
                                      tick=functools.partial(_record_usage, checked, settings.pid))
            summary = check.summary()
            clean = summary["errors"] == 0 and (summary["p99_ms"] or 0) < settings.timeout_us / 4e3
            cpu = {k: v for k, v in (timeline(check, check.duration_s + 1, checked) or [{}])[0].items() if "cpu" in k}
            calibration.append({"rate": round(max_rps, 2), "errors": summary["errors"],
                                "p99_ms": summary["p99_ms"], "clean": clean, **cpu})
            report(f"calibrate at {max_rps:.1f} req/s for {settings.calibration_s:g} s: "
                   f"{summary['errors']} errors, p99 {summary['p99_ms']} ms"
                   + (f", other jobs' CPU {cpu['others_cpu_pct']} %" if "others_cpu_pct" in cpu else "") + ("" if clean else " → lower"))
            if clean:
                break
            max_rps *= 0.85
            await asyncio.sleep(2.0)  # let the refused phase's backlog drain before the next check
        result["calibration"] = calibration
        result["max_throughput_rps"] = round(max_rps, 2)
        await asyncio.sleep(5.0)  # the last check ran at the maximum: let its queues drain before the soak starts
        # 2. soak at 80 % with memory samples
        rate = settings.load_factor * max_rps
        rss: list[tuple[float, int]] = []
        usage: list[Usage] = []

        def tick(elapsed: float) -> None:
            usage.append(sample := _usage(elapsed, settings.pid))
            if sample.rss is not None:
                rss.append((elapsed, sample.rss))
            if int(elapsed) % 30 == 0:
                report(f"soak {elapsed:5.0f}/{settings.duration_s:.0f} s at {rate:.1f} req/s")

        soak = await driver.open("soak", rate, settings.duration_s, tick=tick)
        window = 60.0 if settings.duration_s >= 180 else settings.duration_s / 5
        first = soak.latencies((0, window))
        last = soak.latencies((settings.duration_s - window, settings.duration_s + 1))
        summary = soak.summary()
        summary.update({"window_s": window, "p99_first_ms": _pct(first, 99), "p99_last_ms": _pct(last, 99)})
        if rss:
            start = [v for t, v in rss if t <= window] or [rss[0][1]]
            end = [v for t, v in rss if t >= settings.duration_s - window] or [rss[-1][1]]
            summary["rss_start_mb"] = round(float(np.median(start)) / 2**20, 1)
            summary["rss_end_mb"] = round(float(np.median(end)) / 2**20, 1)
            summary["rss_growth_pct"] = round(100 * (float(np.median(end)) / float(np.median(start)) - 1), 2)
        summary["timeline"] = timeline(soak, min(60.0, max(5.0, settings.duration_s / 10)), usage)
        whole = timeline(soak, soak.duration_s + 1, usage)
        summary.update({k: v for k, v in (whole[0] if whole else {}).items() if "cpu" in k})
        result["soak"] = summary
        report(f"soak: {summary['requests']} requests, {summary['errors']} errors, p99 first {summary['p99_first_ms']} ms, "
               f"last {summary['p99_last_ms']} ms" + (f", RSS {summary['rss_start_mb']} → {summary['rss_end_mb']} MB" if rss else ""))
        for row in summary["timeline"]:
            p99 = "–" if row["p99_ms"] is None else f"{row['p99_ms']} ms"
            report(f"  from {row['from_s']:5.0f} s: {row['requests']} requests, {row['errors']} errors, p99 {p99}, "
                   f"{row['connections_opened']} new connections"
                   + (f", CPU ms/request {row['server_cpu_ms_per_request']}" if "server_cpu_ms_per_request" in row else "")
                   + (f", others {row['others_cpu_pct']} %" if "others_cpu_pct" in row else ""))
        # 3. overload at 3×, then recovery at half the maximum
        over = await driver.open("overload", settings.overload_factor * max_rps, settings.overload_s)
        rejected = [s.latency_ms for s in over.samples if s.status in REJECTED]
        rejected_service = [s.service_ms for s in over.samples if s.status in REJECTED]
        accepted = [s.latency_ms for s in over.samples if 200 <= s.status < 300]
        timeout_ms = settings.timeout_us / 1e3
        # accepted requests of the OIP mix carry the timeout; the others have the server's own
        late = [s for s in over.samples if 200 <= s.status < 300 and s.call.startswith("infer") and s.latency_ms > timeout_ms + 1000]
        # the same counted from send: the server's timeout starts when the request reaches it, and a load
        # generator that shares the server's CPU starts requests after their scheduled time
        late_sent = [s for s in over.samples if 200 <= s.status < 300 and s.call.startswith("infer") and s.service_ms > timeout_ms + 1000]
        overload = over.summary()
        overload.update({
            "rejected": len(rejected), "rejection_p99_ms": _pct(rejected, 99), "rejection_p50_ms": _pct(rejected, 50),
            "rejection_service_p99_ms": _pct(rejected_service, 99),
            "accepted": len(accepted), "accepted_p99_ms": _pct(accepted, 99), "timeout_ms": timeout_ms,
            "accepted_inference_over_timeout": len(late), "accepted_inference_over_timeout_from_send": len(late_sent),
            "accepted_service_p99_ms": _pct([s.service_ms for s in over.samples if 200 <= s.status < 300], 99),
            "send_lag_p99_ms": _pct([s.latency_ms - s.service_ms for s in over.samples], 99),
            "other_failures": sum(1 for s in over.samples if not 200 <= s.status < 300 and s.status not in (*REJECTED, 504)),
            "deadline_exceeded": sum(1 for s in over.samples if s.status == 504),
        })
        result["overload"] = overload
        report(f"overload at {settings.overload_factor * max_rps:.1f} req/s: {overload['accepted']} accepted (p99 {overload['accepted_p99_ms']} ms), "
               f"{overload['rejected']} rejected (p99 {overload['rejection_p99_ms']} ms from schedule, "
               f"{overload['rejection_service_p99_ms']} ms from send), {overload['deadline_exceeded']} timed out")
        await asyncio.sleep(2.0)
        await driver.fresh()
        recovery = (await driver.open("recovery", 0.5 * max_rps, settings.recovery_s)).summary()
        result["recovery"] = recovery
        report(f"recovery at {0.5 * max_rps:.1f} req/s: {recovery['errors']} errors, p99 {recovery['p99_ms']} ms")
    finally:
        await driver.close()
    return result


def verdict(result: dict[str, Any]) -> list[str]:
    """What failed the issue's acceptance: zero errors, RSS growth < 10 %, overload handled, recovery."""
    problems = []
    soak = result["soak"]
    if soak["errors"]:
        problems.append(f"soak had {soak['errors']} errors: {soak['statuses']}, between {soak['errors_at_s']} s")
    if soak.get("rss_growth_pct") is not None and soak["rss_growth_pct"] >= 10:
        problems.append(f"resident memory grew {soak['rss_growth_pct']} %")
    over = result["overload"]
    if over["other_failures"]:
        problems.append(f"overload: {over['other_failures']} answers other than 2xx/429/503/504")
    if over["accepted_inference_over_timeout"]:
        problems.append(f"overload: {over['accepted_inference_over_timeout']} accepted requests exceeded their timeout")
    if result["recovery"]["errors"]:
        problems.append(f"recovery: {result['recovery']['errors']} errors after the overload")
    return problems


def p99_stable(result: dict[str, Any], factor: float = 2.0) -> bool:
    first, last = result["soak"]["p99_first_ms"], result["soak"]["p99_last_ms"]
    return bool(first and last and last <= factor * first + 5 and not math.isnan(last))
