"""Packaging fixtures: the real engines built once per session, the service, and an app client."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from kiln.apps.packaging.brief import BriefIn
from kiln.apps.packaging.engines import ENCODER_MODEL, SCORER_MODEL, BuildReport, build_engines
from kiln.apps.packaging.pipeline import PackagingService
from kiln.engine.artifact import EngineCache
from kiln.errors import KilnError
from kiln.serve.context import AppContext, DirectInference


@pytest.fixture(scope="session")
def engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, BuildReport]:
    """Both packaging engines, built with kiln's toolkit (≈ 40 s on 2 cores; once per session)."""
    root = tmp_path_factory.mktemp("packaging")
    report = build_engines(root / "repo", cache=EngineCache(root / "cache"))
    return root / "repo", report


@pytest.fixture(scope="session")
def inference(engines: tuple[Path, BuildReport]) -> DirectInference:
    repo, _ = engines
    return DirectInference.from_dirs({name: repo / name / "1" for name in (ENCODER_MODEL, SCORER_MODEL)})


@pytest.fixture(scope="session")
def service(inference: DirectInference) -> PackagingService:
    service = PackagingService(inference)
    asyncio.run(service.startup())
    return service


def recommend(service: PackagingService, **brief: Any) -> dict[str, Any]:
    response, _ = asyncio.run(service.recommend(BriefIn(**brief)))
    return response


@pytest.fixture(scope="session")
def client(inference: DirectInference, service: PackagingService) -> TestClient:
    from kiln.apps.packaging.routes import PackagingPlugin
    from kiln.config import get_settings

    app = FastAPI()

    @app.exception_handler(KilnError)
    async def kiln_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, KilnError)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    ctx = AppContext(settings=get_settings(), inference=inference, state={"packaging": service})
    app.include_router(PackagingPlugin().router(ctx))
    return TestClient(app)
