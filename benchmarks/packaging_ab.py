"""A/B latency of ``PackagingService.recommend`` between two source trees, interleaved on one machine.

Each round starts one process per tree (A, then B) that measures recommend with the 12-megapixel
JPEG data URL of packaging_bench.py (4 directions, distinct keywords per call, so neither the
result cache nor the brief-embedding cache answers) and without an image; rounds alternate so
that other load on the machine falls on both trees alike. Prints p50/p95 per tree and per stage.

    git archive HEAD~3 src | tar -x -C /tmp/before
    PYTHONPATH=src python benchmarks/packaging_ab.py --a /tmp/before/src --b src --rounds 3 --iterations 20
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

CHILD = r"""
import asyncio, base64, gc, json, sys, time
sys.path.insert(0, {bench!r})
from packaging_bench import twelve_megapixel_jpeg
from kiln.apps.packaging.brief import BriefIn
from kiln.apps.packaging.engines import ENCODER_MODEL, SCORER_MODEL, build_engines
from kiln.apps.packaging.pipeline import PackagingService
from kiln.engine.loader import load_engine
from kiln.serve.context import DirectInference
from pathlib import Path
repo = Path({repo!r})
if not (repo / ENCODER_MODEL / "1").exists():
    build_engines(repo)
options = {{"spin": False}} if {no_spin!r} else {{}}
service = PackagingService(DirectInference({{m: load_engine(repo / m / "1", **options) for m in (ENCODER_MODEL, SCORER_MODEL)}}))
asyncio.run(service.startup())
url = "data:image/jpeg;base64," + base64.b64encode(twelve_megapixel_jpeg()).decode()
loop = asyncio.new_event_loop()
counter = iter(range(10**9))
out = {{"image": [], "plain": [], "image_cpu": [], "stages": {{}}}}
def call(kind, record):
    refs = [url] if kind == "image" else []
    brief = BriefIn(keywords=f"natural tea {{next(counter)}} {{{tag!r}}}", reference_images=refs, count=4)
    start, cpu = time.perf_counter(), time.process_time()
    _, timings = loop.run_until_complete(service.recommend(brief))
    ms = (time.perf_counter() - start) * 1e3
    if record:
        out[kind].append(ms)
        if kind == "image":
            out["image_cpu"].append((time.process_time() - cpu) * 1e3)
        if kind == "image":
            for name, value in timings.items():
                out["stages"].setdefault(name, []).append(value)
for _ in range(3):
    call("image", False); call("plain", False)
for _ in range({iterations}):
    call("image", True)
for _ in range({iterations}):
    call("plain", True)
print("RESULT " + json.dumps(out))
"""


def _run(src: Path, tag: str, repo: Path, iterations: int, no_spin: bool) -> dict[str, list]:  # type: ignore[type-arg]
    code = CHILD.format(bench=str(HERE), repo=str(repo), iterations=iterations, tag=tag, no_spin=no_spin)
    env = dict(os.environ, PYTHONPATH=str(src.resolve()))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])  # type: ignore[no-any-return]


def _row(samples: list[float]) -> str:
    return f"{statistics.median(samples):7.1f} {float(np.percentile(samples, 95)):7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", type=Path, required=True, help="source tree A (a src folder)")
    parser.add_argument("--b", type=Path, required=True, help="source tree B")
    parser.add_argument("--repo", type=Path, default=Path("/tmp/kiln-bench-packaging"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=20, help="calls per kind per round")
    parser.add_argument("--no-spin", action="store_true", help="ONNX Runtime threads sleep between calls (for small, shared machines)")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    merged: dict[str, dict[str, list]] = {}  # type: ignore[type-arg]
    for round_ in range(args.rounds):
        for name, src in (("A", args.a), ("B", args.b)):
            result = _run(src, f"{name}{round_}", args.repo, args.iterations, args.no_spin)
            into = merged.setdefault(name, {"image": [], "plain": [], "image_cpu": [], "stages": {}})
            into["image"] += result["image"]
            into["image_cpu"] += result["image_cpu"]
            into["plain"] += result["plain"]
            for stage, values in result["stages"].items():
                into["stages"].setdefault(stage, []).extend(values)
            print(f"round {round_ + 1} {name}: image p50 {statistics.median(result['image']):.1f} ms", flush=True)
    print(f"\nload average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}; "
          f"{args.rounds} rounds x {args.iterations} calls per tree and kind" + ("; ONNX Runtime spinning off" if args.no_spin else "") + "\n")
    print(f"{'measurement (ms)':44s} {'A p50':>7s} {'A p95':>7s} {'B p50':>7s} {'B p95':>7s}")
    a, b = merged["A"], merged["B"]
    print(f"{'recommend, one 12 MP JPEG data URL':44s} {_row(a['image'])} {_row(b['image'])}")
    print(f"{'  CPU time of the process (all threads)':44s} {_row(a['image_cpu'])} {_row(b['image_cpu'])}")
    print(f"{'recommend, no image':44s} {_row(a['plain'])} {_row(b['plain'])}")
    for stage in dict.fromkeys([*a["stages"], *b["stages"]]):
        left = _row(a["stages"][stage]) if stage in a["stages"] else f"{'-':>7s} {'-':>7s}"
        right = _row(b["stages"][stage]) if stage in b["stages"] else f"{'-':>7s} {'-':>7s}"
        print(f"{'  stage ' + stage + ' (image)':44s} {left} {right}")


if __name__ == "__main__":
    main()
