"""An authentication case's multipart body read by ``read_case_form``: kiln's fast path (serve/multipart.py) against
starlette's parser (python-multipart), in one run, on the same bodies.

Bodies as httpx builds them: --photos photos of --photo-kb KB of random bytes each (a 1024×1024 JPEG is ~350 KB) and
the case's text fields. The fast path is taken when the request declares its length; without a Content-Length
header the same function uses starlette's parser, so the two rows differ only in the parser.

    python benchmarks/multipart_parse.py --out docs/benchmarks/multipart_parse.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from serving import machine  # noqa: E402


def _body(photos: int, photo_kb: int) -> tuple[bytes, str]:
    import httpx

    files = [("images", (f"photo{i}.jpg", os.urandom(photo_kb * 1024), "image/jpeg")) for i in range(photos)]
    data = {"views": "front,back,logo,label,stitching,hardware", "brand": "Hermès", "model": "Birkin 30"}
    request = httpx.Request("POST", "http://127.0.0.1/", files=files, data=data)
    return request.read(), request.headers["content-type"]


async def _read_ms(body: bytes, content_type: str, declare_length: bool) -> float:
    from starlette.requests import Request

    from kiln.apps.authenticity.pipeline import UploadLimits
    from kiln.apps.authenticity.routes import read_case_form

    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]  # as uvicorn hands a body over
    it = iter(chunks)

    async def receive() -> dict[str, object]:
        chunk = next(it, b"")
        return {"type": "http.request", "body": chunk, "more_body": bool(chunk)}

    headers = [(b"content-type", content_type.encode())]
    if declare_length:
        headers.append((b"content-length", str(len(body)).encode()))
    request = Request({"type": "http", "method": "POST", "headers": headers}, receive)
    start = time.perf_counter()
    uploads, _, _ = await read_case_form(request, UploadLimits())
    elapsed = (time.perf_counter() - start) * 1e3
    assert len(uploads) == body.count(b'name="images"')
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--photo-kb", type=int, default=350)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    body, content_type = _body(args.photos, args.photo_kb)
    rows = {}

    async def measure() -> None:
        for _ in range(20):  # warm-up, both paths
            await _read_ms(body, content_type, True)
            await _read_ms(body, content_type, False)
        times: dict[str, list[float]] = {"starlette": [], "fast": []}
        for _ in range(args.repeats):  # interleaved, so that both see the same machine
            times["starlette"].append(await _read_ms(body, content_type, False))
            times["fast"].append(await _read_ms(body, content_type, True))
        for name, values in times.items():
            values.sort()
            rows[name] = {"p50_ms": round(statistics.median(values), 3),
                          "p95_ms": round(values[int(0.95 * (len(values) - 1))], 3),
                          "mean_ms": round(statistics.fmean(values), 3)}

    asyncio.run(measure())
    ratio = round(rows["starlette"]["p50_ms"] / rows["fast"]["p50_ms"], 2)
    command = "python benchmarks/multipart_parse.py " + " ".join(sys.argv[1:])
    lines = [
        "# Reading an authentication case's multipart body (`read_case_form`)",
        "",
        f"- command: `{command}`",
        f"- machine: {machine()}; Python {platform.python_version()}",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- body: {args.photos} photos of {args.photo_kb} KB and 3 text fields, {len(body):,} bytes as httpx builds it,"
        f" handed over in 64 KB chunks; {args.repeats} reads per parser, interleaved",
        "",
        "| parser | p50 ms | p95 ms | mean ms |",
        "|---|---:|---:|---:|",
        *(f"| {name} | {r['p50_ms']} | {r['p95_ms']} | {r['mean_ms']} |" for name, r in
          (("starlette (python-multipart), no Content-Length", rows["starlette"]),
           ("kiln fast path (serve/multipart.py)", rows["fast"]))),
        "",
        f"Fast path: **{ratio}×** starlette's parser at p50, same bodies, same run.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "machine": machine(), "rows": rows,
                                                         "ratio_p50": ratio}, indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
