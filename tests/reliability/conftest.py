"""One model repository with every kind of engine kiln serves, and live servers over it.

The repository holds the tiny serving engines of ``tests/serve`` (image, FP16, INT64, BYTES and a
broken one), the tiny authentication engine of ``tests/apps/authenticity`` and the two packaging
engines; servers run ``kiln serve`` (HTTP + gRPC, both apps) on free loopback ports in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps.authenticity.conftest import engine_dir, registered_model, synth_data, trained  # noqa: F401
from tests.live_server import wait_until_ready
from tests.serve.conftest import add_model, engines, free_port  # noqa: F401


@pytest.fixture(scope="session")
def full_repo(tmp_path_factory: pytest.TempPathFactory, engines: Any, engine_dir: Path) -> Path:  # noqa: F811
    from kiln.apps.packaging.engines import build_engines
    from kiln.engine.artifact import EngineCache

    root = tmp_path_factory.mktemp("reliability") / "repo"
    add_model(root, "image", engines.image, {"max_batch_size": 8, "max_queue_delay_us": 2000, "instances": 1})
    add_model(root, "half", engines.half, {"max_queue_delay_us": 0, "limits": {"max_request_bytes": 4096, "max_tensor_elements": 400}})
    add_model(root, "long", engines.long)
    add_model(root, "text", engines.text)
    broken = add_model(root, "broken", engines.long)
    (broken / "model.opt.onnx").write_bytes(b"not an onnx model")
    add_model(root, "authenticity", engine_dir)
    build_engines(root, cache=EngineCache(root.parent / "cache"))
    return root


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT
    grpc: str  # 127.0.0.1:PORT
    repo: Path
    home: Path
    uvicorn: Any

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


@contextlib.contextmanager
def run_server(repo: Path, home: Path, **options: Any) -> Iterator[Server]:
    """``kiln serve --apps authenticity,packaging`` on free loopback ports until the block ends."""
    from kiln.apps.authenticity.routes import AuthenticityPlugin
    from kiln.apps.packaging.routes import PackagingPlugin
    from kiln.config import get_settings
    from kiln.serve.process import ServeOptions, serve

    home.mkdir(parents=True, exist_ok=True)
    previous = os.environ.get("KILN_HOME")
    os.environ["KILN_HOME"] = str(home)
    get_settings.cache_clear()
    serve_options = ServeOptions(repo=repo, http_port=free_port(), grpc_port=free_port(), access_log=False,
                                 apps=[AuthenticityPlugin(), PackagingPlugin()], **options)
    holder: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(serve(serve_options, on_started=lambda server: holder.setdefault("server", server)))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{serve_options.http_port}"
    try:
        wait_until_ready(url, errors, seconds=120, request_timeout=2)
    finally:
        if previous is None:
            os.environ.pop("KILN_HOME", None)
        else:
            os.environ["KILN_HOME"] = previous
        get_settings.cache_clear()
    try:
        yield Server(url, f"127.0.0.1:{serve_options.grpc_port}", repo, home, holder["server"])
    finally:
        holder["server"].should_exit = True
        thread.join(60)


@pytest.fixture(scope="session")
def server(full_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server without access control (loopback), shared by the corpus and the fuzzing tests."""
    with run_server(full_repo, tmp_path_factory.mktemp("home")) as live:
        yield live


def sample_photo(size: int = 96, fmt: str = "JPEG") -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(size)
    pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def clean_copy(path: Path, target: Path) -> Path:
    shutil.copytree(path, target)
    return target
