"""HTTP routes of the packaging app (``/v1/packaging``) and its server plugin.

- ``POST /v1/packaging/recommend``: a brief (JSON) → directions (styles, palettes, fonts, layout,
  style score, URLs of mock-ups and exports).
- ``POST /v1/packaging/images``: multipart upload of one reference image → ``{"id", ...}``.
- ``GET  /v1/packaging/results/{id}`` and ``.../directions/{n}/{asset}``: stored results and their
  assets (rendered on first request): mockup.png|svg|pdf, fonts.png, heatmap.png,
  palette.json|css|svg|ase.
- ``GET  /v1/packaging/styles`` and ``/v1/packaging/fonts``: the taxonomy and the font library.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Response, UploadFile

from kiln.apps.packaging.brief import BriefIn
from kiln.apps.packaging.engines import ENCODER_MODEL, SCORER_MODEL
from kiln.apps.packaging.pipeline import PackagingService
from kiln.apps.packaging.references import MAX_BYTES
from kiln.apps.packaging.styles import taxonomy
from kiln.errors import KilnError, NotFoundError, PayloadTooLargeError
from kiln.serve.context import AppContext
from kiln.serve.timing import server_timing

PREFIX = "/v1/packaging"
_KEY = re.compile(r"[0-9a-f]{32}")


async def _read_upload(file: UploadFile) -> bytes:
    chunks, size = [], 0
    while chunk := await file.read(1 << 20):
        size += len(chunk)
        if size > MAX_BYTES:
            raise PayloadTooLargeError(f"upload is over the limit of {MAX_BYTES} bytes", hint="send a smaller image")
        chunks.append(chunk)
    return b"".join(chunks)


def packaging_router(service: PackagingService) -> APIRouter:
    router = APIRouter(prefix=PREFIX, tags=["packaging"])

    @router.post("/recommend")
    async def recommend(brief: BriefIn, response: Response) -> dict[str, Any]:
        """Design directions for a packaging brief."""
        body, timings = await service.recommend(brief, base_url=PREFIX)
        response.headers["Server-Timing"] = server_timing(timings)
        return body

    @router.post("/images")
    async def upload_image(file: UploadFile) -> dict[str, Any]:
        """Upload one reference image (JPEG, PNG, WebP…, up to 25 MB and 40 megapixels)."""
        data = await _read_upload(file)
        return await asyncio.to_thread(service.add_image, data, "uploaded image")

    @router.get("/results/{key}")
    async def result(key: str) -> dict[str, Any]:
        if not _KEY.fullmatch(key):
            raise NotFoundError(f"no recommendation {key!r}")
        return service.result(key)

    @router.get("/results/{key}/directions/{index}/{asset}")
    async def asset(key: str, index: int, asset: str) -> Response:
        if not _KEY.fullmatch(key):
            raise NotFoundError(f"no recommendation {key!r}")
        data, media_type = await asyncio.to_thread(service.asset, key, index, asset)
        headers = {"Cache-Control": "private, max-age=3600"}
        if asset.endswith((".ase", ".pdf")):
            headers["Content-Disposition"] = f'attachment; filename="kiln-{key[:8]}-{index + 1}-{asset}"'
        return Response(content=data, media_type=media_type, headers=headers)

    @router.get("/styles")
    async def styles() -> list[dict[str, Any]]:
        return [{"id": s.id, "name": s.name, "name_zh": s.name_zh, "rationale": s.rationale} for s in taxonomy()]

    @router.get("/fonts")
    async def fonts() -> list[dict[str, Any]]:
        return [f.summary() for f in service.fonts]

    return router


class PackagingPlugin:
    """The packaging app as ``kiln serve`` loads it."""

    name = "packaging"

    def required_models(self) -> list[str]:
        return [ENCODER_MODEL, SCORER_MODEL]

    def router(self, ctx: AppContext) -> APIRouter:
        service = ctx.state.get("packaging")
        if service is None:
            service = PackagingService(ctx.inference, decode_device=ctx.settings.decode_device)
            ctx.state["packaging"] = service
        return packaging_router(service)

    async def startup(self, ctx: AppContext) -> None:
        service = ctx.state.get("packaging")
        if service is None:
            service = PackagingService(ctx.inference, decode_device=ctx.settings.decode_device)
            ctx.state["packaging"] = service
        try:
            await service.startup()
        except KilnError:
            raise
        except OSError as exc:
            raise KilnError(f"the packaging app could not start: {exc}") from exc

    async def shutdown(self, ctx: AppContext) -> None:
        return None


plugin = PackagingPlugin()

