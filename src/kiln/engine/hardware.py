"""Hardware and runtime fingerprint: what an engine was built on and what this machine has.

Imports of torch and onnxruntime are lazy and optional: the fingerprint says "absent" instead.
"""

from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from typing import Any

# ISA features that change which CPU kernels a runtime picks (and so what an engine was tuned for).
CPU_ISA_FLAGS = (
    "sse4_2", "avx", "avx2", "fma", "f16c",
    "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
    "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
)


def _cpuinfo() -> dict[str, str]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    break  # first processor block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_info() -> dict[str, Any]:
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    return {
        "model": info.get("model name") or platform.processor() or "unknown",
        "arch": platform.machine(),
        "cores": os.cpu_count() or 1,
        "isa": [flag for flag in CPU_ISA_FLAGS if flag in flags],
    }


def int8_dot_products_saturate(isa: list[str] | None = None) -> bool:
    """Whether this x86 CPU multiplies uint8×int8 through 16-bit sums that saturate (AVX2/AVX-512
    without VNNI: ``vpmaddubsw``), so INT8 engines need 7-bit weights (onnxruntime's ``reduce_range``);
    False on VNNI/AMX CPUs and on other architectures (ARM's dot-product kernels do not saturate)."""
    if isa is None:
        if platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
            return False
        isa = cpu_info()["isa"]
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(isa)


def int8_reduce_range(setting: Any = "auto") -> bool:
    """Whether an INT8 build quantizes weights to 7 bits: "auto" where this CPU's uint8×int8 kernels
    saturate (``int8_dot_products_saturate``; on the 2-core AVX2 machine 8-bit weights cost the
    authentication model 0.6–2 points of case accuracy, docs/benchmarks/engine.md), else as given."""
    from kiln.errors import KilnError

    if isinstance(setting, bool):
        return setting
    if setting in (None, "auto"):
        return int8_dot_products_saturate()
    if isinstance(setting, str) and setting.lower() in ("true", "false"):
        return setting.lower() == "true"
    raise KilnError(f"reduce_range must be true, false or auto, not {setting!r}")


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _nvidia_driver() -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0].strip() if out else None


def gpu_info() -> list[dict[str, Any]]:
    """GPUs that torch sees (empty when torch is absent or no CUDA device is present)."""
    if package_version("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    driver = _nvidia_driver()
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({
            "index": index,
            "name": props.name,
            "compute_capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1),
            "multiprocessors": props.multi_processor_count,
            "driver": driver,
        })
    return gpus


def runtime_versions() -> dict[str, Any]:
    versions: dict[str, Any] = {
        "python": sys.version.split()[0],
        "kiln": package_version("kiln"),
        "torch": package_version("torch"),
        "torchvision": package_version("torchvision"),
        "timm": package_version("timm"),
        "onnx": package_version("onnx"),
        "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
        "cuda": None,
        "cudnn": None,
        "onnxruntime_providers": [],
    }
    if versions["torch"]:
        import torch

        versions["cuda"] = torch.version.cuda
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        versions["cudnn"] = str(cudnn) if cudnn else None
    if versions["onnxruntime"]:
        import onnxruntime

        versions["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    return versions


@functools.lru_cache(maxsize=1)
def fingerprint() -> dict[str, Any]:
    """Everything an engine may depend on: CPU, GPUs, runtime versions."""
    return {
        "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu_info(),
        "gpus": gpu_info(),
        "runtime": runtime_versions(),
    }
