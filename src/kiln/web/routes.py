"""``/v1/web``: what the pages need beyond the apps' APIs.

- ``GET /v1/web/samples``: the demo's sample cases (labelled synthetic), ``[]`` when none were made.
- ``GET /v1/web/samples/{case}/{file}``: one sample photo (JPEG).
- ``GET /v1/web/engines/{model}``: a served engine's summary (precision, backend, device, hardware,
  accuracy gate) for the operations page.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Response

from kiln.demo.layout import SAMPLES_INDEX, samples_dir
from kiln.errors import KilnError, NotFoundError
from kiln.serve.context import AppContext

PREFIX = "/v1/web"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")


def _samples(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / SAMPLES_INDEX).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"note": "", "cases": []}
    except (OSError, ValueError) as exc:
        raise KilnError(f"the demo's sample index is unreadable: {exc}", status=500, hint="run: kiln demo --prepare") from exc
    cases = []
    for case in data.get("cases", []):
        photos = [{**p, "url": f"{PREFIX}/samples/{case['id']}/{p['file']}"} for p in case.get("photos", [])]
        cases.append({**case, "photos": photos})
    return {"note": data.get("note", ""), "cases": cases}


def engine_summary(ctx: AppContext, model: str) -> dict[str, Any]:
    manifest = ctx.inference.manifest(model)
    cpu = manifest.hardware.get("cpu", {}) if isinstance(manifest.hardware, dict) else {}
    gpus = manifest.hardware.get("gpus", []) if isinstance(manifest.hardware, dict) else []
    summary: dict[str, Any] = {
        "model": model, "name": manifest.name, "backend": manifest.backend, "precision": manifest.precision.value,
        "device": manifest.device, "batch": {"min": manifest.batch.min, "opt": manifest.batch.opt, "max": manifest.batch.max},
        "built_at": manifest.built_at, "build_seconds": manifest.build_seconds,
        "hardware": {"cpu": cpu.get("model", ""), "cores": cpu.get("cores"),
                     "gpus": [g.get("name", "") for g in gpus if isinstance(g, dict)]},
        "validation": None,
    }
    if manifest.validation is not None:
        v = manifest.validation
        summary["validation"] = {"engine_top1": v.engine_top1, "reference_top1": v.reference_top1,
                                 "drop_points": v.drop_points, "max_drop": v.max_drop}
    return summary


def web_router(ctx: AppContext) -> APIRouter:
    from fastapi.responses import FileResponse

    router = APIRouter(prefix=PREFIX, tags=["web pages"])

    @router.get("/samples", summary="The demo's sample cases (synthetic)")
    async def samples() -> dict[str, Any]:
        return _samples(samples_dir(ctx.settings.home))

    @router.get("/samples/{case}/{file}", summary="A sample photo", responses={200: {"content": {"image/jpeg": {}}}})
    async def sample_photo(case: str, file: str) -> Response:
        if not (_NAME.fullmatch(case) and _NAME.fullmatch(file) and file.endswith(".jpg")):
            raise NotFoundError(f"no sample photo {case}/{file}")
        path = samples_dir(ctx.settings.home) / case / file
        if not path.is_file():
            raise NotFoundError(f"no sample photo {case}/{file}", hint="run: kiln demo --prepare")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})

    @router.get("/engines/{model}", summary="A served engine's precision, backend, hardware and accuracy gate")
    async def engine(model: str) -> dict[str, Any]:
        if not _NAME.fullmatch(model):
            raise NotFoundError(f"no model {model!r}")
        try:
            return engine_summary(ctx, model)
        except KilnError:
            raise
        except Exception as exc:  # a model that failed to load has no manifest here
            raise NotFoundError(f"model {model!r} has no loaded engine: {exc}") from exc

    return router


class WebPlugin:
    """Sample cases and engine summaries for the pages; needs no model."""

    name = "web"

    def required_models(self) -> list[str]:
        return []

    def router(self, ctx: AppContext) -> APIRouter:
        return web_router(ctx)

    async def startup(self, ctx: AppContext) -> None:
        return None

    async def shutdown(self, ctx: AppContext) -> None:
        return None


plugin = WebPlugin()
