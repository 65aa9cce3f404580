"""A case's photo files: one file per photo, each synced (the layout before 2026-12-06; baseline) vs one pack per
case, synced once (``PhotoFiles.put``, what ``Store.save_case`` writes with ``KILN_PHOTO_FILES=1``).

Each of --processes processes writes cases (6 photos of the sizes a 1024×1024 JPEG case has, ~950 KB, random
bytes) at its share of --rate cases/s, open loop (a write that starts late counts its lateness), from a pool of
threads as the server's ``asyncio.to_thread`` does; latency from each case's scheduled time until its photos are
synced and renamed into place. Both layouts run in the same call, one after the other, on fresh folders under --dir
(default: a temporary folder, which is where the disk under test is).

    python benchmarks/photo_writes.py --out docs/benchmarks/photo_writes.md
    python benchmarks/photo_writes.py --seconds 2 --rate 40 --out /tmp/photo_writes.md   # a quick check
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from store_writes import PHOTO_BYTES, machine_line, open_loop, percentile  # noqa: E402  the same case and load

LAYOUTS = {"per_photo": "one file per photo, each synced (before; baseline)",
           "pack": "one pack per case, synced once (PhotoFiles.put)"}


def _per_photo(root: Path, photos: list[bytes]) -> None:
    """The layout before packs: each photo under its SHA-256, written to a temporary name, synced, renamed."""
    for data in photos:
        name = hashlib.sha256(data).hexdigest()
        target = root / name[:2] / name
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{name}.{uuid.uuid4().hex}.part")
        with open(partial, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)


def _writer(root: str, layout: str, rate: float, seconds: float, start_at: float, seed: int, threads: int,
            out: Any) -> None:
    import random

    from kiln.serve.store.photo_files import PhotoFiles

    files = PhotoFiles(Path(root))
    rng = random.Random(seed)
    cases = [[rng.randbytes(size) for size in PHOTO_BYTES] for _ in range(int(rate * seconds))]
    latencies: list[float] = []

    def write(photos: list[bytes], scheduled: float) -> None:
        if layout == "pack":
            files.put(photos)
        else:
            _per_photo(Path(root), photos)
        latencies.append((time.perf_counter() - scheduled) * 1000)

    open_loop(cases, rate, start_at, rng.random() / rate, threads, write)
    out.put(latencies)


def run(layout: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    root = work / layout
    root.mkdir()
    context = mp.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0 + 0.01 * args.rate * args.seconds / args.processes
    processes = [context.Process(target=_writer, args=(str(root), layout, args.rate / args.processes, args.seconds,
                                                       start_at, index, args.threads, results))
                 for index in range(args.processes)]
    for process in processes:
        process.start()
    latencies = [v for _ in processes for v in results.get(timeout=args.seconds + 300)]
    for process in processes:
        process.join()
    files = [f for f in root.rglob("*") if f.is_file()]
    result = {"layout": layout, "cases": len(latencies), "files": len(files),
              "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
              "p99_ms": percentile(latencies, 99), "max_ms": round(max(latencies), 2) if latencies else None,
              "mb": round(sum(f.stat().st_size for f in files) / 1e6, 1)}
    shutil.rmtree(root, ignore_errors=True)  # the next layout does not run on a fuller disk
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--rate", type=float, default=100.0, help="cases/s over all processes")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=8, help="writing threads per process")
    parser.add_argument("--dir", type=Path, default=None, help="where the files go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, required=True, help="Markdown report (a .json beside it holds the figures)")
    args = parser.parse_args()
    if args.processes < 1 or args.threads < 1 or args.rate <= 0 or args.seconds <= 0:
        parser.error("--processes, --threads, --rate and --seconds must be positive")
    work = Path(tempfile.mkdtemp(prefix="kiln-photos-", dir=args.dir))
    rows = [run(layout, args, work) for layout in LAYOUTS]
    base, pack = rows
    ratio = {k: round(base[k] / pack[k], 2) if base[k] and pack[k] else None for k in ("p50_ms", "p95_ms", "p99_ms")}
    command = "python " + " ".join([os.path.relpath(__file__, ROOT), *sys.argv[1:]])
    machine = machine_line()
    lines = [
        "# A case's photo files: one file per photo vs one pack per case",
        "",
        f"- command: `{command}`",
        f"- machine: {machine}; files in {work}",
        f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}",
        f"- load: {args.processes} processes × {args.threads} threads, {args.rate:g} cases/s in all for {args.seconds:g} s, "
        f"open loop; a case is 6 photos ({sum(PHOTO_BYTES) / 1e3:.0f} KB); latency from the scheduled time until the "
        "photos are synced and in place",
        "",
        "| layout | cases | files | p50 ms | p95 ms | p99 ms | max ms | written |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {LAYOUTS[row['layout']]} | {row['cases']} | {row['files']} | {row['p50_ms']} | {row['p95_ms']} | "
                     f"{row['p99_ms']} | {row['max_ms']} | {row['mb']} MB |")
    lines += ["", f"One file per photo ÷ one pack: p50 {ratio['p50_ms']}×, p95 {ratio['p95_ms']}×, p99 {ratio['p99_ms']}×.", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine, "rows": rows,
                                                         "ratio": ratio}, indent=2))
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
