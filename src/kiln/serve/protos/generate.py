"""Regenerates the ``*_pb2.py``/``.pyi`` modules from the ``.proto`` files in this folder.

Run ``python -m kiln.serve.protos.generate`` (needs grpcio-tools) after editing a ``.proto``.
The generated modules register their messages in kiln's own descriptor pool (``_pool.POOL``)
instead of protobuf's default one: the messages keep Triton's full names (``inference.*``), and
a process that also imports ``tritonclient.grpc`` (tests, benchmarks, apps) would otherwise hit
"duplicate symbol" errors. Only field numbers travel on the wire, so both sides interoperate.

The gencode's runtime-version guard is dropped: it pins the protobuf runtime to at least the
version of the protoc that grpcio-tools bundles, although these modules use only builder calls
that protobuf 4.21+ has, and tritonclient caps protobuf below that version in some releases.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[2]  # the folder holding the ``kiln`` package
PROTOS = ("model_config.proto", "grpc_service.proto")
HEADER = "# ruff: noqa\n# mypy: ignore-errors\n"


def generate() -> list[Path]:
    names = [str((HERE / name).relative_to(SRC)) for name in PROTOS]
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{SRC}", f"--python_out={SRC}", f"--pyi_out={SRC}", *names],
        check=True,
    )
    written = []
    for name in PROTOS:
        module = HERE / name.replace(".proto", "_pb2.py")
        text = module.read_text(encoding="utf-8")
        text = text.replace(
            "from google.protobuf.internal import builder as _builder\n",
            "from google.protobuf.internal import builder as _builder\nfrom kiln.serve.protos._pool import POOL as _POOL\n",
        )
        text = re.sub(r"_runtime_version\.ValidateProtobufRuntimeVersion\(.*?\n\)\n", "", text, flags=re.S)
        text = text.replace("from google.protobuf import runtime_version as _runtime_version\n", "")
        text, count = re.subn(r"_descriptor_pool\.Default\(\)", "_POOL", text)
        if count != 1:
            raise RuntimeError(f"{module.name}: expected one default-pool registration, found {count}")
        module.write_text(HEADER + text, encoding="utf-8")
        written.append(module)
        stub = module.with_suffix(".pyi")
        stub.write_text("# ruff: noqa\n" + stub.read_text(encoding="utf-8"), encoding="utf-8")
        written.append(stub)
    return written


if __name__ == "__main__":
    for path in generate():
        print(path)
