"""The default embedded mode (in-process jobs, SQLite) sends the same signed webhooks as the workers."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.scale.conftest import case_form, wait_for, webhook_receiver


async def test_embedded_async_job_posts_a_signed_webhook(engine_dir: Path, synth_data: Path, tmp_path: Path) -> None:
    import httpx
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    from kiln.apps.authenticity.routes import AuthenticityPlugin
    from kiln.config import Settings
    from kiln.errors import KilnError
    from kiln.scale.bulk import read_catalogue
    from kiln.scale.webhooks import verify_signature
    from kiln.serve.context import AppContext, DirectInference

    app = FastAPI()

    @app.exception_handler(KilnError)
    async def kiln_error(request: Request, exc: KilnError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

    ctx = AppContext(settings=Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'kiln.db'}", webhook_secret="embedded"),
                     inference=DirectInference.from_dirs({"authenticity": engine_dir}))
    plugin = AuthenticityPlugin()
    app.include_router(plugin.router(ctx))
    await plugin.startup(ctx)
    try:
        async with webhook_receiver() as (url, received), httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            form: dict[str, Any] = case_form(read_catalogue(synth_data)[0])
            form["data"]["callback_url"] = url
            response = await client.post("/v1/authenticate?mode=async", **form)
            assert response.status_code == 202, response.text
            job_id = response.json()["job_id"]
            store = ctx.state["store"]

            async def recorded() -> bool:
                job = await asyncio.to_thread(store.get_job, job_id)
                return job.webhook_status == "delivered"

            await wait_for(recorded, 60, "webhook recorded")
            body, signature = received[0]
        assert verify_signature("embedded", body, signature)
        payload = json.loads(body)
        assert payload["job_id"] == job_id and payload["status"] == "done" and payload["result"]["case_id"] == job_id
    finally:
        await plugin.shutdown(ctx)
