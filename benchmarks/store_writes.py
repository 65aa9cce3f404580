"""Case writes to a SQLite store: WAL checkpoints inside commits (SQLite's default) vs in kiln's background thread,
and the photos inside the database vs as files beside it.

Each of --processes processes saves authentication cases (6 photos of the sizes a 1024×1024 JPEG
case has, ~950 KB, with its result document) through ``Store.save_case`` at its share of --rate
cases/s, open loop (a fixed schedule: a save that starts late counts its lateness), from a pool of
threads as the server's ``asyncio.to_thread`` does. Run on a fresh database per mode: SQLite's
automatic checkpoints with the photos in the database (``Store(background_checkpoints=False,
photo_files=False)``: the commit that takes the log over ~4 MB copies it back before returning);
kiln's ``WalCheckpointer`` with the photos in the database (kiln's default); and ``WalCheckpointer``
with the photos as files beside the database (``serve/store/photo_files.py``, opt-in). Latency is from each
case's scheduled time to its commit.

    python benchmarks/store_writes.py --out docs/benchmarks/store.md
    python benchmarks/store_writes.py --seconds 2 --rate 40 --out /tmp/store.md   # a quick check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

PHOTO_BYTES = (188_724, 135_804, 224_277, 181_072, 120_767, 98_809)  # the 6 JPEGs of gpu_authenticity.py's case
VIEWS = ("logo", "stitching", "hardware", "date_code", "lining", "overall")
MODES = {"inline": "in the commit that crosses the threshold (SQLite's default; baseline); photos in the database",
         "background": "in kiln's background thread (WalCheckpointer); photos in the database",
         "files": "in kiln's background thread; photos as files beside the database (KILN_PHOTO_FILES=1)"}


def _case(rng: Any) -> Any:
    from kiln.serve.store.models import CaseImageRecord, CaseRecord

    case_id = uuid.uuid4().hex
    case = CaseRecord(id=case_id, brand="aurelle", model="celeste", verdict="authentic", confidence=0.97, engine="auth@1",
                      result={"case_id": case_id, "verdict": "authentic", "images": [{"view": v} for v in VIEWS]})
    case.images = [
        CaseImageRecord(position=i, view=view, sha256=hashlib.sha256(data).hexdigest(), content_type="image/jpeg",
                        width=1024, height=1024, quality={"ok": True, "reasons": []}, score=0.1,
                        heatmap=[[0.5] * 10 for _ in range(10)], data=data)
        for i, (view, data) in enumerate(zip(VIEWS, [rng.randbytes(size) for size in PHOTO_BYTES], strict=True))
    ]
    return case


def _writer(url: str, mode: str, rate: float, seconds: float, start_at: float, seed: int, threads: int, out: Any) -> None:
    import random

    from kiln.serve.store.database import Store, make_engine

    store = Store(make_engine(url), background_checkpoints=mode != "inline", photo_files=mode == "files")
    rng = random.Random(seed)
    cases = [_case(rng) for _ in range(int(rate * seconds))]
    latencies: list[float] = []
    errors = 0

    def save(case: Any, scheduled: float) -> None:
        nonlocal errors
        try:
            store.save_case(case)
            latencies.append((time.perf_counter() - scheduled) * 1000)
        except Exception:  # counted and reported
            errors += 1

    open_loop(cases, rate, start_at, rng.random() / rate, threads, save)
    store.close()
    out.put({"latencies": latencies, "errors": errors})


def open_loop(items: list[Any], rate: float, start_at: float, offset: float, threads: int,
              work: Callable[[Any, float], None]) -> None:
    """Hands ``items`` to ``work(item, scheduled)`` on a pool of ``threads`` at ``rate`` per second from the
    wall-clock time ``start_at`` (one start for every process) plus ``offset`` (so that processes do not work
    in lockstep), on a fixed schedule: an item that starts late counts its lateness."""
    with ThreadPoolExecutor(threads) as pool:
        begin = time.perf_counter() + max(0.0, start_at - time.time())
        for index, item in enumerate(items):
            scheduled = begin + offset + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(work, item, scheduled)


def machine_line() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))], 2)


def run(mode: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from kiln.serve.store.database import open_store

    path = work / f"{mode}.db"
    url = f"sqlite:///{path}"
    open_store(url).close()
    context = mp.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0 + 0.02 * args.rate * args.seconds / args.processes  # every process has its cases by then
    processes = [
        context.Process(target=_writer, args=(url, mode, args.rate / args.processes, args.seconds, start_at, index,
                                              args.threads, results))
        for index in range(args.processes)
    ]
    for process in processes:
        process.start()
    parts = [results.get(timeout=args.seconds + 300) for _ in processes]
    for process in processes:
        process.join()
    latencies = [v for part in parts for v in part["latencies"]]
    wal = Path(str(path) + "-wal")
    photos = Path(str(path) + ".photos")
    photos_mb = round(sum(f.stat().st_size for f in photos.rglob("*") if f.is_file()) / 1e6, 1) if photos.exists() else 0.0
    result = {
        "mode": mode, "saved": len(latencies), "errors": sum(p["errors"] for p in parts),
        "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95), "p99_ms": percentile(latencies, 99),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "database_mb": round(path.stat().st_size / 1e6, 1), "photo_files_mb": photos_mb,
        "wal_mb_after_close": round(wal.stat().st_size / 1e6, 1) if wal.exists() else 0.0,
    }
    # Each mode writes ~1 GB: remove it, so that the next mode does not run on a fuller tmpfs or page cache.
    shutil.rmtree(photos, ignore_errors=True)
    for leftover in (path, wal, Path(str(path) + "-shm")):
        leftover.unlink(missing_ok=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0, help="cases/s over all processes")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=8, help="saving threads per process")
    parser.add_argument("--dir", type=Path, default=None, help="where the databases go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, required=True, help="Markdown report (a .json beside it holds the figures)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kiln-store-", dir=args.dir))
    rows = [run(mode, args, work) for mode in MODES]
    base, background, files = rows

    def ratios(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float | None]:
        return {k: round(a[k] / b[k], 2) if a[k] and b[k] else None for k in ("p50_ms", "p95_ms", "p99_ms")}

    ratio = ratios(base, files)
    ratio_background = ratios(background, files)
    command = "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    machine = machine_line()
    lines = [
        "# Case writes to a SQLite store: where the WAL checkpoints run, where the photos go",
        "",
        f"- command: `{command}`",
        f"- machine: {machine}; databases in {work}",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- load: {args.processes} processes × {args.threads} threads, {args.rate:g} cases/s in all for {args.seconds:g} s, "
        f"open loop; a case is 6 photos ({sum(PHOTO_BYTES) / 1e3:.0f} KB) and its result document; latency from the "
        "scheduled time to the commit",
        "",
        "| checkpoints run; photos | cases saved | errors | p50 ms | p95 ms | p99 ms | max ms | mean ms | database | photo files |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {MODES[row['mode']]} | {row['saved']} | {row['errors']} | {row['p50_ms']} | {row['p95_ms']} | "
                     f"{row['p99_ms']} | {row['max_ms']} | {row['mean_ms']} | {row['database_mb']} MB | {row['photo_files_mb']} MB |")
    lines += ["", f"Baseline ÷ photo files: p50 {ratio['p50_ms']}×, p95 {ratio['p95_ms']}×, p99 {ratio['p99_ms']}×; "
              f"photos in the database ÷ as files (both with background checkpoints): p50 {ratio_background['p50_ms']}×, "
              f"p95 {ratio_background['p95_ms']}×, p99 {ratio_background['p99_ms']}×.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine, "rows": rows, "ratio": ratio,
                                                              "ratio_background_over_files": ratio_background}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
