"""Where the decode stage of a 6-photo authentication case spends its time on the GPU path (issue 9 acceptance 5).

Times, on one thread, the steps of ``gpu_imaging.decode_and_measure`` for the benchmark's case (6 JPEGs of
1024×1024, as gpu_authenticity.py sends them): the header checks (Pillow: format, size, EXIF orientation), the
copies into tensors, the batched nvJPEG decode, the resize to the model's size, the gate's metrics with the copy
back, the SHA-256 of the photos; then the whole function on 1 and on 4 threads at once (a server process's
cases overlap). Wall-clock per call after a warm-up, p50/p95 over --iterations.

    python benchmarks/gpu_decode_profile.py --out /tmp/decode.json            # on a GPU machine
    python benchmarks/gpu_decode_profile.py --device cpu --iterations 5 --out /tmp/decode.json   # a check here
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def timed(fn: Callable[[], Any], iterations: int, sync: Callable[[], None]) -> dict[str, float]:
    for _ in range(5):
        fn()
    sync()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"p50_ms": round(samples[len(samples) // 2], 3), "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--photo-size", type=int, default=1024)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

    from authenticity import make_case

    from kiln.apps.authenticity import gpu_imaging
    from kiln.apps.authenticity.gpu_quality import measure_batch
    from kiln.apps.authenticity.imaging import read_header
    from kiln.engine.gpu_images import orient
    from kiln.engine.spec import Preprocessing

    pre = Preprocessing(input_size=(3, 160, 160), input_format="uint8")
    blobs = [data for _, data, _ in make_case(args.photo_size)]
    names = [f"images[{i}]" for i in range(len(blobs))]
    device = args.device
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs]
    decoded = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    headers = [read_header(b, n, 100_000_000) for b, n in zip(blobs, names, strict=True)]

    def model_size() -> Any:
        return torch.stack([gpu_imaging._model_size(orient(image, h.orientation), pre)
                            for image, h in zip(decoded, headers, strict=True)])

    stacked = model_size()
    steps: dict[str, Callable[[], Any]] = {
        "headers (Pillow: format, size, EXIF)": lambda: [read_header(b, n, 100_000_000)
                                                         for b, n in zip(blobs, names, strict=True)],
        "bytes → tensors (bytearray copies)": lambda: [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs],
        "nvJPEG batched decode": lambda: decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device),
        "orient + resize to the model size, stack": model_size,
        "gate metrics + copy back": lambda: (measure_batch(stacked).cpu().numpy(), stacked.cpu().numpy()),
        "SHA-256 of the photos": lambda: [hashlib.sha256(b).hexdigest() for b in blobs],
        "decode_and_measure (all of it; headers from the checks)": lambda: gpu_imaging.decode_and_measure(
            blobs, names, pre, device, headers=list(headers)),
    }
    rows = {name: timed(fn, args.iterations, sync) for name, fn in steps.items()}

    def concurrent(threads: int) -> dict[str, float]:
        with ThreadPoolExecutor(threads) as pool:
            for ready in [pool.submit(gpu_imaging.decode_and_measure, blobs, names, pre, device) for _ in range(threads)]:
                ready.result()
            samples: list[float] = []

            def one() -> None:
                start = time.perf_counter()
                gpu_imaging.decode_and_measure(blobs, names, pre, device, headers=list(headers))
                samples.append((time.perf_counter() - start) * 1000)

            for future in [pool.submit(one) for _ in range(args.iterations)]:
                future.result()
        samples.sort()
        return {"p50_ms": round(samples[len(samples) // 2], 3), "p95_ms": round(samples[int(0.95 * (len(samples) - 1))], 3)}

    rows["decode_and_measure, 4 threads at once"] = concurrent(4)
    result = {"device": torch.cuda.get_device_name() if device.startswith("cuda") else device,
              "torch": torch.__version__, "photos": len(blobs), "photo_bytes": [len(b) for b in blobs], "steps": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"| step ({result['device']}, {len(blobs)} photos of {args.photo_size}²) | p50 ms | p95 ms |\n|---|---:|---:|")
    for name, row in rows.items():
        print(f"| {name} | {row['p50_ms']} | {row['p95_ms']} |")


if __name__ == "__main__":
    main()
