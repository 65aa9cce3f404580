"""Fingerprint of the packaging app's outputs over ~80 varied briefs, to prove a speed-up changed nothing.

Runs English and Chinese briefs, with and without reference images (data URLs of several sizes and
formats, and uploaded image ids), brand colours (locked and not), panel shapes, counts and seeds
through ``PackagingService.recommend``; records every response as canonical JSON and the SHA-256
of rendered assets (all assets of the first direction, the cheap ones of every direction).

    PYTHONPATH=src python benchmarks/packaging_outputs.py --write /tmp/before.json
    # ... change the code ...
    PYTHONPATH=src python benchmarks/packaging_outputs.py --compare /tmp/before.json

Both runs must use the same engine repository (``--repo``), since the engines are rebuilt otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CHEAP_ASSETS = ("mockup.svg", "palette.json", "palette.css", "palette.svg", "palette.ase")
# fpdf stamps the time into every PDF (and derives the file /ID from it)
_PDF_STAMPS = re.compile(rb"/CreationDate \(D:[0-9Z+'-]*\)|/ID \[<[0-9A-F]*><[0-9A-F]*>\]")


def _image(kind: str, size: tuple[int, int], seed: int, fmt: str) -> bytes:
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))
    image = small.resize(size, Image.Resampling.BICUBIC if kind == "smooth" else Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _data_url(data: bytes, fmt: str) -> str:
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(data).decode()


def briefs(uploaded: list[str]) -> list[dict[str, Any]]:
    """About 80 briefs: every combination worth covering, deterministic."""
    images = [
        _data_url(_image("smooth", (4000, 3000), 0, "JPEG"), "JPEG"),
        _data_url(_image("blocks", (1200, 1800), 1, "JPEG"), "JPEG"),
        _data_url(_image("smooth", (300, 200), 2, "PNG"), "PNG"),
        _data_url(_image("blocks", (640, 640), 3, "WEBP"), "WEBP"),
    ]
    texts: list[dict[str, Any]] = [
        {"product": "beverage", "audience": "Gen-Z women", "keywords": "fresh, summer limited"},
        {"keywords": "清新 夏日限定 饮料 年轻女性"},
        {"keywords": "luxury, black gold, perfume"},
        {"keywords": "国潮 中秋", "product": "mooncake"},
        {"keywords": "playful snack", "name": "Crunchy Bits", "tagline": "Snack happy", "claims": ["No sugar", "Vegan"]},
        {"keywords": ["organic", "natural", "tea"], "product": "tea"},
        {"keywords": "极简 护肤 高端", "name": "山水", "claims": ["天然成分"]},
        {"keywords": "retro, bold, coffee", "audience": "office workers"},
        {"keywords": "可爱 儿童 零食 mixed words", "tagline": "好吃"},
        {"keywords": "minimal skincare, clean, calm", "product": "serum"},
    ]
    colours: list[list[dict[str, Any]]] = [
        [],
        [{"hex": "#1A7F5A"}],
        [{"hex": "#D4AF37", "locked": True}],
        [{"hex": "#000000", "locked": True}, {"hex": "#FFCC00", "locked": True}],
        [{"hex": "#E63946"}, {"hex": "#457B9D", "locked": True}],
    ]
    panels = [{"width_mm": 100, "height_mm": 150}, {"width_mm": 200, "height_mm": 120}, {"width_mm": 80, "height_mm": 80}]
    out: list[dict[str, Any]] = []
    for index in range(80):
        brief: dict[str, Any] = dict(texts[index % len(texts)])
        brief["brand_colors"] = colours[(index // 2) % len(colours)]
        brief["panel"] = panels[(index // 3) % len(panels)]
        brief["count"] = (4, 2, 8, 1, 4)[(index // 5) % 5]
        brief["seed"] = index // 10
        choice = index % 4
        if choice == 1:
            brief["reference_images"] = [images[(index // 4) % len(images)]]
        elif choice == 2 and uploaded:
            brief["reference_images"] = [uploaded[(index // 4) % len(uploaded)]]
        elif choice == 3 and index % 8 == 3:
            brief["reference_images"] = [images[(index // 8) % len(images)], images[(index // 8 + 1) % len(images)]]
        out.append(brief)
    return out


def fingerprint(service: Any, *, render_all: bool = True) -> dict[str, Any]:
    from kiln.apps.packaging.brief import BriefIn
    from kiln.apps.packaging.pipeline import ASSETS

    uploaded = [service.add_image(_image("smooth", (2000, 1500), 10, "JPEG"), "a.jpg")["id"],
                service.add_image(_image("blocks", (500, 900), 11, "PNG"), "b.png")["id"]]
    loop = asyncio.new_event_loop()
    records: list[dict[str, Any]] = []
    for brief in briefs(uploaded):
        response, _ = loop.run_until_complete(service.recommend(BriefIn(**brief)))
        assets: dict[str, str] = {}
        for index in range(len(response["directions"])):
            names = ASSETS if (index == 0 and render_all) else CHEAP_ASSETS
            for name in names:
                data, _ = service.asset(response["id"], index, name)
                if name.endswith(".pdf"):
                    data = _PDF_STAMPS.sub(b"", data)
                assets[f"{index}/{name}"] = hashlib.sha256(data).hexdigest()
        records.append({"response": json.dumps(response, sort_keys=True, ensure_ascii=False), "assets": assets})
    loop.close()
    return {"records": records}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--write", type=Path)
    group.add_argument("--compare", type=Path)
    parser.add_argument("--repo", type=Path, default=Path("/tmp/kiln-bench-packaging"))
    args = parser.parse_args()

    from kiln.apps.packaging.engines import ENCODER_MODEL, SCORER_MODEL, build_engines
    from kiln.apps.packaging.pipeline import PackagingService
    from kiln.serve.context import DirectInference

    if not (args.repo / ENCODER_MODEL / "1").exists():
        build_engines(args.repo)
    inference = DirectInference.from_dirs({m: args.repo / m / "1" for m in (ENCODER_MODEL, SCORER_MODEL)})
    service = PackagingService(inference)
    asyncio.run(service.startup())
    result = fingerprint(service)
    if args.write:
        args.write.write_text(json.dumps(result, ensure_ascii=False))
        print(f"wrote {len(result['records'])} briefs to {args.write}")
        return
    expected = json.loads(args.compare.read_text())["records"]
    differences = 0
    for index, (want, got) in enumerate(zip(expected, result["records"], strict=True)):
        if want["response"] != got["response"]:
            differences += 1
            print(f"brief {index}: response differs")
        for name, digest in want["assets"].items():
            if got["assets"].get(name) != digest:
                differences += 1
                print(f"brief {index}: asset {name} differs")
    print(f"{len(expected)} briefs compared: " + ("identical" if not differences else f"{differences} differences"))
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    main()
