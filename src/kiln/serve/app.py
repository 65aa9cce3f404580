"""The HTTP application: Open Inference Protocol routes, /metrics, app plugins, error mapping.

``create_app`` wires the pieces; each lives in its own module (``oip_http``, ``http_errors``,
``access_log``, ``metrics``, ``state``). Models load in the background once the app starts, so
``/v2/health/live`` answers at once and ``/v2/health/ready`` turns 200 when every engine is warm.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from kiln.aio import cancel_and_wait
from kiln.serve.access_log import RequestIdMiddleware
from kiln.serve.context import AppPlugin
from kiln.serve.http_errors import install_error_handlers
from kiln.serve.metrics import ServerMetrics
from kiln.serve.oip_http import oip_router
from kiln.serve.oip_http_infer import InferEndpoint
from kiln.serve.plugins import load_plugin
from kiln.serve.repository import ModelRepository
from kiln.serve.state import ServerState

if TYPE_CHECKING:
    from kiln.security.access import AccessControl


def server_state(
    repo: Path,
    *,
    apps: Sequence[str | AppPlugin] = (),
    models: list[str] | None = None,
    strict_readiness: bool = False,
    metrics: ServerMetrics | None = None,
    engine_host: str | None = None,
) -> ServerState:
    """A server's state for the model repository ``repo`` with the given app plugins."""
    from kiln.config import get_settings

    metrics = metrics or ServerMetrics()
    plugins = [load_plugin(app) if isinstance(app, str) else app for app in apps]
    required = sorted({m for plugin in plugins for m in plugin.required_models()})
    repository = ModelRepository(repo, metrics, models=(models + required) if models else None, engine_host=engine_host)
    return ServerState(repository, get_settings(), metrics, plugins, strict_readiness=strict_readiness)


def create_app(state: ServerState, *, access_log: bool = True, static_dir: Path | None = None,
               access: AccessControl | None = None, max_body_bytes: int | None = None,
               max_inflight: int | None = None, max_loop_lag_s: float | None = None) -> FastAPI:
    """The FastAPI app of one server: OIP v2, /metrics, the plugins' routers, optional static pages.

    ``access`` is the access policy (API keys, rate limits, signed links; none required by default);
    security headers and a global body limit apply to every response either way; ``max_inflight``
    bounds the HTTP requests in progress and ``max_loop_lag_s`` how late the event loop may run before
    new requests are refused (503 + Retry-After; None: no bound).
    """
    from kiln.security.access import AccessControl, AccessMiddleware
    from kiln.security.headers import SecurityHeadersMiddleware
    from kiln.security.limits import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware

    access = access or AccessControl()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        starting = asyncio.create_task(state.start(), name="kiln-start")
        try:
            yield
        finally:
            if not starting.done():
                await cancel_and_wait(starting)
            await state.stop()

    from kiln import __version__

    app = FastAPI(
        title="kiln",
        version=__version__,
        description="Open Inference Protocol v2 (KServe/Triton) and the kiln apps.",
        lifespan=lifespan,
    )
    app.state.kiln = state
    app.state.kiln_access = access
    install_error_handlers(app)
    app.include_router(oip_router(state))

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    for plugin in state.plugins:
        app.include_router(plugin.router(state.context))
    if static_dir is not None:
        from kiln.serve.static import PageFiles

        app.mount("/", PageFiles(directory=static_dir, html=True), name="web")
    # Outermost last: admission → request id → security headers → body limit → access control →
    # the infer endpoint (the hot path, answered without FastAPI's routing) → routes.
    # Admission comes first so that a refusal costs as little as possible under overload.
    app.add_middleware(InferEndpoint, state=state)
    app.add_middleware(AccessMiddleware, access=access)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes or DEFAULT_MAX_BODY_BYTES)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(RequestIdMiddleware, log_requests=access_log)
    if max_inflight is not None or max_loop_lag_s is not None:
        from kiln.serve.admission import AdmissionMiddleware

        app.add_middleware(AdmissionMiddleware, max_inflight=max_inflight or 1 << 30, max_lag_s=max_loop_lag_s, metrics=state.metrics)
    return app
