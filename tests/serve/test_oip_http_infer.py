"""The plain ASGI infer endpoint answers exactly as the FastAPI infer routes do."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from kiln.serve.app import create_app, server_state
from kiln.serve.http_errors import install_error_handlers
from kiln.serve.oip_http import oip_router
from kiln.serve.oip_http_infer import infer_target


def test_infer_target_matches_the_infer_routes_only() -> None:
    assert infer_target("/v2/models/m/infer") == ("m", None)
    assert infer_target("/v2/models/m/versions/3/infer") == ("m", "3")
    for path in ("/v2/models//infer", "/v2/models/m/infer/", "/v2/models/m/versions//infer", "/v2/models/a/b/infer",
                 "/v2/models/m/ready", "/v2/models/m/versions/3/x/infer", "/v2/models/infer"):
        assert infer_target(path) is None, path


@pytest.fixture
async def clients(repo: Path) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """The full app (infer endpoint in front) and a bare app with only the FastAPI routes, one state."""
    state = server_state(repo)
    app = create_app(state, access_log=False)
    bare = FastAPI()
    install_error_handlers(bare)
    bare.include_router(oip_router(state))
    async with app.router.lifespan_context(app):
        await state.wait_ready()
        async with (httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://kiln") as full,
                    httpx.AsyncClient(transport=httpx.ASGITransport(app=bare), base_url="http://kiln") as plain):
            yield full, plain


def _binary(x: np.ndarray, name: str, datatype: str, extra: int = 0) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": datatype,
                                     "parameters": {"binary_data_size": x.nbytes + extra}}],
                         "parameters": {"binary_data_output": True}}).encode()
    return header + x.tobytes() + b"\0" * extra, {"Inference-Header-Content-Length": str(len(header))}


_LONG = np.arange(6, dtype=np.int64).reshape(2, 3)
_CASES: list[tuple[str, Any, dict[str, str]]] = [
    ("/v2/models/long/infer", json.dumps({"id": "a", "inputs": [{"name": "x", "shape": [2, 3], "datatype": "INT64",
                                                               "data": _LONG.ravel().tolist()}]}).encode(), {}),
    ("/v2/models/long/versions/1/infer", *_binary(_LONG, "x", "INT64")),
    ("/v2/models/long/infer", *_binary(_LONG, "x", "INT64", extra=8)),
    ("/v2/models/long/infer", b"{not json", {}),
    ("/v2/models/long/infer", b'{"inputs": []}', {"Content-Encoding": "gzip"}),
    ("/v2/models/long/infer", b'{"inputs": []}', {"Inference-Header-Content-Length": "99"}),
    ("/v2/models/nope/infer", b'{"inputs": []}', {}),
    ("/v2/models/long/versions/7/infer", b'{"inputs": []}', {}),
    ("/v2/models/broken/infer", b'{"inputs": []}', {}),
    ("/v2/models/half/infer", b"{" + b" " * 5000 + b"}", {}),
]


@pytest.mark.parametrize(("path", "body", "headers"), _CASES)
async def test_same_answer_as_the_fastapi_route(clients: Any, path: str, body: bytes, headers: dict[str, str]) -> None:
    full, plain = clients
    got = await full.post(path, content=body, headers=headers)
    want = await plain.post(path, content=body, headers=headers)
    assert (got.status_code, got.content) == (want.status_code, want.content)
    for header in ("content-type", "content-length", "retry-after", "inference-header-content-length"):
        assert got.headers.get(header) == want.headers.get(header), header
    assert got.headers["x-request-id"] and got.headers["x-content-type-options"] == "nosniff"


async def test_other_methods_on_infer_paths_reach_the_router(clients: Any) -> None:
    full, _ = clients
    assert (await full.get("/v2/models/long/infer")).status_code == 405
