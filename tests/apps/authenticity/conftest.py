"""Tiny synthetic data, a tiny trained model and its engine, shared by the app's tests.

Everything is made here (nothing downloaded): 24 synthetic cases at 96 px, a timm ``test_resnet``
backbone trained for two epochs at 64 px, and an FP32 ONNX Runtime engine. Enough to exercise
every code path; the accuracy figures come from benchmarks/authenticity_accuracy.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from kiln.apps.authenticity.synth import SynthSpec, generate_dataset
from kiln.apps.authenticity.train import TrainConfig, TrainResult, train

TINY_CONFIG = TrainConfig(
    backbone="test_resnet", width=1.0, epochs=2, image_size=64, batch_size=16, lr=3e-3, val_fraction=0.25,
    threads=2, min_side=64, embed_dim=32,
)


@pytest.fixture(scope="session", autouse=True)
def registered_model() -> None:
    """Make sure ``kiln:auth_multiview`` resolves even when the installed entry points name apps that
    this checkout does not contain (a shared virtual environment)."""
    from kiln.engine import models

    try:
        models.get_model("auth_multiview")
    except ModuleNotFoundError:
        models._PLUGINS_LOADED = True
        import kiln.apps.authenticity.model  # noqa: F401  (registers the model)


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    generate_dataset(out, 24, SynthSpec(seed=7, size=96, twins=True), workers=1)
    return out


@pytest.fixture(scope="session")
def trained(synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(synth_data, tmp_path_factory.mktemp("model") / "auth.pt", TINY_CONFIG)


@pytest.fixture(scope="session")
def engine_dir(trained: TrainResult, synth_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kiln.apps.authenticity.engine import build_auth_engine
    from kiln.engine.spec import BatchProfile, Precision

    root = tmp_path_factory.mktemp("engine")
    out = root / "authenticity"
    build_auth_engine(trained.checkpoint, synth_data, out, precision=Precision.FP32, batch=BatchProfile(min=1, opt=6, max=8),
                      validate=False, cache_dir=root / "cache")
    return out


@pytest.fixture
async def api(engine_dir: Path, tmp_path: Path) -> AsyncIterator[object]:
    """The app's router on a bare FastAPI app with kiln's error handler, over an in-process transport."""
    async for client in serve_app(engine_dir, tmp_path):
        yield client


async def serve_app(engine_dir: Path, tmp_path: Path) -> AsyncIterator[object]:
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from kiln.apps.authenticity.routes import AuthenticityPlugin
    from kiln.config import Settings
    from kiln.errors import KilnError
    from kiln.serve.context import AppContext, DirectInference

    app = FastAPI()

    @app.exception_handler(KilnError)
    async def kiln_error(request: Request, exc: KilnError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    ctx = AppContext(settings=Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'kiln.db'}"),
                     inference=DirectInference.from_dirs({"authenticity": engine_dir}))
    plugin = AuthenticityPlugin()
    app.include_router(plugin.router(ctx))
    await plugin.startup(ctx)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        client.plugin = plugin  # type: ignore[attr-defined]
        yield client
    await plugin.shutdown(ctx)
