"""HTTP routes of the authentication app and its ``plugin`` for ``kiln serve``.

Multipart bodies are parsed here (not by FastAPI's parameter binding) so that the number of
files, their sizes and the whole body are limited before anything is decoded; the OpenAPI
document still describes the form. Uploaded bytes stay in memory (or in anonymous spool files):
a client's file name is never used as a path.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import UploadFile

from kiln.apps.authenticity.jobs import CaseSubmission, CaseTransport, InProcessCases, InProcessJobs
from kiln.apps.authenticity.pipeline import (
    API,
    MODEL_NAME,
    AuthenticityService,
    Upload,
    UploadLimits,
    check_request,
    reference_info,
)
from kiln.apps.authenticity.schemas import (
    AppInfo,
    CaseList,
    CaseResponse,
    CaseSummary,
    JobResponse,
    ReferenceList,
    ViewInfo,
)
from kiln.apps.authenticity.views import VIEW_DESCRIPTIONS, VIEWS, Verdict
from kiln.errors import KilnError, PayloadTooLargeError
from kiln.security.access import check_visible, principal, tenant_filter, url_signer
from kiln.serve.multipart import boundary_of, parse_form_data
from kiln.serve.timing import start_timings

if TYPE_CHECKING:
    from kiln.scale.webhook_recovery import WebhookRecovery
    from kiln.serve.context import AppContext
    from kiln.serve.store import JobRecord, Store

log = logging.getLogger(__name__)

_MULTIPART_SCHEMA: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["images", "views", "brand", "model"],
                    "properties": {
                        "images": {"type": "array", "items": {"type": "string", "format": "binary"},
                                   "description": "1-6 photos (JPEG, PNG or WebP), one per view"},
                        "views": {"type": "array", "items": {"type": "string", "enum": list(VIEWS)},
                                  "description": "the view of each photo, in the same order (or one comma-separated value)"},
                        "brand": {"type": "string"},
                        "model": {"type": "string"},
                        "note": {"type": "string", "description": "references only: where the verified item came from"},
                    },
                }
            }
        },
    }
}


_MAX_TEXT_FIELDS = 32
# bodies up to this size are read whole for the fast path (about 3× their size in memory for a moment: the chunks,
# the joined body, the parts); larger ones stream through starlette's parser, which spools files to disk
_FAST_PATH_MAX_BYTES = 16 * 1024 * 1024


async def read_case_form(request: Request, limits: UploadLimits) -> tuple[list[Upload], list[str], dict[str, str]]:
    """Parses a multipart case: files under 'images', the rest as text fields."""
    declared = request.headers.get("content-length")
    length = int(declared) if declared is not None and declared.isascii() and declared.isdigit() else None
    if length is not None and length > limits.max_body_bytes:
        raise PayloadTooLargeError(f"request body of {declared} bytes is over the limit of {limits.max_body_bytes}",
                                   hint=f"send at most {limits.max_photos} photos of {limits.max_file_bytes} bytes each")
    content_type = request.headers.get("content-type", "")
    if declared == "0":
        # Nothing was sent at all: the problem is the missing photos, not a media type.
        return [], [], {}
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise KilnError(f"expected multipart/form-data, got {content_type or 'no content type'!r}",
                        status=415, hint="send the photos as a form upload (curl -F images=@photo.jpg ...)")
    fast = (length is not None and length <= _FAST_PATH_MAX_BYTES
            and "transfer-encoding" not in request.headers)  # a chunked body's length is not the declared one
    boundary = boundary_of(content_type) if fast else None
    if boundary is not None:
        # a declared length of at most 16 MB: the body can be read whole and split fast (serve/multipart.py);
        # a body of another shape goes to starlette's parser below, which reads the same buffered bytes
        parts = parse_form_data(await request.body(), boundary, max_parts=limits.max_photos + 1 + _MAX_TEXT_FIELDS)
        files = sum(part.filename is not None for part in parts or ())
        if parts is not None and files <= limits.max_photos + 1 and len(parts) - files <= _MAX_TEXT_FIELDS:
            return _case_fields(
                [(p.name, Upload(p.filename or "", p.data[: limits.max_file_bytes + 1], p.content_type)
                  if p.filename is not None else p.text) for p in parts]
            )
    try:
        form = await request.form(max_files=limits.max_photos + 1, max_fields=_MAX_TEXT_FIELDS)
    except KilnError:
        raise
    except Exception as exc:  # starlette raises its own exception types for malformed bodies
        raise KilnError(f"malformed multipart body: {exc}") from exc
    try:
        items: list[tuple[str, Upload | str]] = []
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read(limits.max_file_bytes + 1)
                items.append((key, Upload(value.filename or "", data, value.content_type or "")))
            else:
                items.append((key, str(value)))
    finally:
        await form.close()
    return _case_fields(items)


def _case_fields(items: list[tuple[str, Upload | str]]) -> tuple[list[Upload], list[str], dict[str, str]]:
    """Photos under 'images', views (repeated or comma-separated) and the other text fields, in form order."""
    uploads: list[Upload] = []
    views: list[str] = []
    fields: dict[str, str] = {}
    for key, value in items:
        if isinstance(value, Upload):
            if key != "images":
                raise KilnError(f"unexpected file field {key!r}", hint="send photos in the 'images' field")
            uploads.append(value)
        elif key == "views":
            views.extend(v.strip() for v in value.split(",") if v.strip())
        elif key == "images":
            raise KilnError("the 'images' field must hold files, not text", hint="curl -F images=@photo.jpg")
        else:
            fields[key] = value
    return uploads, views, fields


def _job_response(job: JobRecord) -> JobResponse:
    return JobResponse(
        job_id=job.id, status=job.status, created_at=job.created_at, updated_at=job.updated_at, attempts=job.attempts,
        case_id=job.case_id, case_url=f"{API}/cases/{job.case_id}" if job.case_id else None, error=job.error,
        error_status=job.error_status, status_url=f"{API}/jobs/{job.id}",
    )


def _day(value: date | None, end: bool = False) -> datetime | None:
    if value is None:
        return None
    moment = datetime.combine(value, time.min, tzinfo=UTC)
    return moment + timedelta(days=1) if end else moment


def certificate_url(request: Request, case_id: str) -> str:
    """The permanently signed link of a case's certificate page: what the PDF prints, so it works for
    whoever holds the PDF for as long as the certificate stands."""
    return str(request.base_url).rstrip("/") + url_signer(request).sign_permanent(f"{API}/cases/{case_id}/certificate")


def build_router(service: AuthenticityService, cases: CaseTransport, store: Store) -> APIRouter:
    from kiln.apps.authenticity.heatmaps import heatmap_png, overlay_jpeg
    from kiln.apps.authenticity.report import ReportPhoto, heatmap_scale, render_html, render_pdf
    from kiln.serve.store import CaseQuery

    router = APIRouter(prefix=API, tags=["authenticity"])
    limits = service.limits

    @router.post(
        "/authenticate", response_model=CaseResponse, openapi_extra=_MULTIPART_SCHEMA,
        responses={202: {"model": JobResponse, "description": "mode=async: the job was accepted"}},
        summary="Authenticate an item from 1-6 detail photos",
    )
    async def authenticate(
        request: Request,
        response: Response,
        mode: Annotated[str, Query(pattern="^(sync|async)$", description="async: return a job id at once")] = "sync",
        priority: Annotated[str, Query(pattern="^(interactive|bulk)$", description="bulk: after waiting interactive cases")] = "interactive",
    ) -> Any:
        timings = start_timings()
        with timings.measure("form"):
            uploads, raw_views, fields = await read_case_form(request, limits)
        with timings.measure("check"):
            views, brand, model = check_request(uploads, raw_views, fields.get("brand"), fields.get("model"), limits)
        tenant = principal(request).tenant
        callback_url = fields.get("callback_url") or None
        if callback_url is not None:
            from kiln.scale.webhooks import check_callback_url

            if mode != "async":
                raise KilnError("callback_url needs mode=async", hint="add ?mode=async to the URL")
            check_callback_url(callback_url)
        case = CaseSubmission(uploads, views, brand, model, priority=priority, callback_url=callback_url,
                              tenant=tenant)
        if mode == "async":
            job_id = await cases.submit(case)
            job = await asyncio.to_thread(store.get_job, job_id)
            return JSONResponse(_job_response(job).model_dump(mode="json"), status_code=202,
                                headers={"Location": f"{API}/jobs/{job_id}"})
        result = await cases.run(case)
        # where the time went (decode, preprocess, queue, infer, ...), for clients and benchmarks
        response.headers["Server-Timing"] = timings.header()
        return result

    async def visible(case_id: str, request: Request) -> None:
        """A case exists and the caller's tenant owns it (404 otherwise, as if it did not exist)."""
        if tenant_filter(request) is not None:
            owner = await asyncio.to_thread(store.case_tenant, case_id)
            check_visible(owner, request, f"case {case_id!r}")

    @router.get("/cases", response_model=CaseList, summary="List past cases, newest first")
    async def list_cases(
        request: Request,
        verdict: Annotated[Verdict | None, Query()] = None,
        brand: Annotated[str | None, Query(max_length=128)] = None,
        since: Annotated[date | None, Query(description="first day (UTC), inclusive")] = None,
        until: Annotated[date | None, Query(description="last day (UTC), inclusive")] = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
        offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
    ) -> CaseList:
        query = CaseQuery(verdict=verdict.value if verdict else None, brand=brand, since=_day(since),
                          until=_day(until, end=True), limit=limit, offset=offset, tenant=tenant_filter(request))
        rows, total, capped = await asyncio.to_thread(store.list_cases, query)
        return CaseList(total=total, total_capped=capped, limit=limit, offset=offset, cases=[
            CaseSummary(case_id=r.id, created_at=r.created_at, brand=r.brand, model=r.model, verdict=r.verdict,
                        confidence=r.confidence, case_url=f"{API}/cases/{r.id}", report_url=f"{API}/cases/{r.id}/report.html")
            for r in rows
        ])

    @router.get("/cases/{case_id}", response_model=CaseResponse, summary="A case's result (JSON report)")
    async def get_case(case_id: str, request: Request) -> CaseResponse:
        await visible(case_id, request)
        return await service.get_case(case_id)

    @router.post("/cases/{case_id}/share", summary="Signed, expiring links to a case's reports, for buyers (no key needed)")
    async def share(
        case_id: str,
        request: Request,
        expires_in: Annotated[int, Query(ge=60, le=30 * 24 * 3600, description="seconds the links stay valid")] = 7 * 24 * 3600,
    ) -> dict[str, Any]:
        await visible(case_id, request)
        await asyncio.to_thread(store.get_report, case_id, "html")  # 404 for an unknown case
        signer = url_signer(request)
        base = str(request.base_url).rstrip("/")
        html, expires = signer.sign(f"{API}/cases/{case_id}/report.html", expires_in)
        pdf, _ = signer.sign(f"{API}/cases/{case_id}/report.pdf", expires_in)
        return {"case_id": case_id, "report_url": base + html, "pdf_url": base + pdf,
                "expires_at": datetime.fromtimestamp(expires, UTC).isoformat(),
                "certificate_url": certificate_url(request, case_id)}

    @router.get("/cases/{case_id}/certificate", response_class=HTMLResponse,
                summary="Public verification page of the PDF certificate: verdict, date and photo hashes, no photos",
                responses={200: {"content": {"text/html": {}, "application/json": {}}}})
    async def certificate(
        case_id: str, request: Request,
        format: Annotated[Literal["html", "json"], Query(description="html (default) or json")] = "html",
    ) -> Response:
        from kiln.apps.authenticity.certificate import certificate_document, render_certificate

        await visible(case_id, request)
        case = await service.get_case(case_id)
        if format == "json":
            return JSONResponse(certificate_document(case))
        return HTMLResponse(await asyncio.to_thread(render_certificate, case))

    async def _report_inputs(case_id: str) -> tuple[CaseResponse, list[ReportPhoto]]:
        case = await service.get_case(case_id)
        images = await asyncio.to_thread(store.case_images_with_data, case_id)
        return case, [ReportPhoto(i.position, i.data, i.heatmap) for i in images]

    @router.get("/cases/{case_id}/report.html", response_class=HTMLResponse, summary="HTML report (rendered once, then stored)")
    async def report_html(case_id: str, request: Request) -> HTMLResponse:
        await visible(case_id, request)
        cached = await asyncio.to_thread(store.get_report, case_id, "html")
        if cached is None:
            case, photos = await _report_inputs(case_id)
            previews = {}
            for ref in case.references:
                if ref.reference_id not in previews:
                    try:
                        previews[ref.reference_id] = await asyncio.to_thread(store.reference_preview, ref.reference_id)
                    except KilnError:
                        continue  # a reference deleted since: the report shows the others
            cached = await asyncio.to_thread(render_html, case, photos, previews)
            await asyncio.to_thread(store.set_report, case_id, "html", cached)
        return HTMLResponse(str(cached))

    @router.get("/cases/{case_id}/report.pdf", summary="PDF certificate (rendered once, then stored)",
                responses={200: {"content": {"application/pdf": {}}}})
    async def report_pdf(case_id: str, request: Request) -> Response:
        await visible(case_id, request)
        cached = await asyncio.to_thread(store.get_report, case_id, "pdf")
        if cached is None:
            case, photos = await _report_inputs(case_id)
            cached = await asyncio.to_thread(render_pdf, case, photos, certificate_url(request, case_id))
            await asyncio.to_thread(store.set_report, case_id, "pdf", cached)
        return Response(bytes(cached) if not isinstance(cached, str) else cached.encode(), media_type="application/pdf",
                        headers={"Content-Disposition": f'inline; filename="kiln-case-{case_id}.pdf"'})

    @router.get("/cases/{case_id}/images/{index}", summary="A photo of a case, as uploaded",
                responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}})
    async def case_image(case_id: str, index: Annotated[int, Path(ge=0, le=1000)], request: Request) -> Response:
        await visible(case_id, request)
        image = await asyncio.to_thread(store.case_image, case_id, index)
        return Response(image.data, media_type=image.content_type, headers={"Cache-Control": "private, max-age=86400"})

    async def _heatmap_inputs(case_id: str, index: int) -> tuple[bytes, list[list[float]], float]:
        case = await asyncio.to_thread(store.get_case, case_id)
        image = await asyncio.to_thread(store.case_image, case_id, index)
        scale = heatmap_scale([ReportPhoto(i.position, b"", i.heatmap) for i in case.images])
        return image.data, image.heatmap, scale

    @router.get("/cases/{case_id}/images/{index}/heatmap.png", summary="Transparent heatmap to layer over the photo",
                responses={200: {"content": {"image/png": {}}}})
    async def heatmap(case_id: str, index: Annotated[int, Path(ge=0, le=1000)], request: Request) -> Response:
        await visible(case_id, request)
        data, grid, scale = await _heatmap_inputs(case_id, index)
        png = await asyncio.to_thread(heatmap_png, grid, data, scale=scale)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    @router.get("/cases/{case_id}/images/{index}/overlay.jpg", summary="The photo with its heatmap blended in",
                responses={200: {"content": {"image/jpeg": {}}}})
    async def overlay(case_id: str, index: Annotated[int, Path(ge=0, le=1000)], request: Request) -> Response:
        await visible(case_id, request)
        data, grid, scale = await _heatmap_inputs(case_id, index)
        jpeg = await asyncio.to_thread(overlay_jpeg, grid, data, scale=scale)
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @router.get("/jobs/{job_id}", response_model=JobResponse, summary="State of an asynchronous case")
    async def get_job(job_id: str, request: Request) -> JobResponse:
        job = await asyncio.to_thread(store.get_job, job_id)
        check_visible(job.tenant, request, f"job {job_id!r}")
        return _job_response(job)

    @router.post("/references", response_model=ReferenceList, status_code=201, openapi_extra=_MULTIPART_SCHEMA,
                 summary="Register verified authentic photos of a brand/model")
    async def add_references(request: Request) -> ReferenceList:
        uploads, views, fields = await read_case_form(request, limits)
        infos = await service.register_references(uploads, views, fields.get("brand"), fields.get("model"),
                                                  note=fields.get("note", ""))
        return ReferenceList(references=infos)

    @router.get("/references", response_model=ReferenceList, summary="Registered references")
    async def list_references(
        brand: Annotated[str | None, Query(max_length=128)] = None,
        model: Annotated[str | None, Query(max_length=128)] = None,
        view: Annotated[str | None, Query(max_length=32)] = None,
    ) -> ReferenceList:
        records = await asyncio.to_thread(
            store.list_references, embedding_space=service.manifest.source_sha256, brand=brand, model=model, view=view
        )
        return ReferenceList(references=[reference_info(r) for r in records])

    @router.get("/references/{reference_id}/image", summary="A reference's preview",
                responses={200: {"content": {"image/jpeg": {}}}})
    async def reference_image(reference_id: str) -> Response:
        data = await asyncio.to_thread(store.reference_preview, reference_id)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @router.delete("/references/{reference_id}", status_code=204, summary="Remove a reference")
    async def delete_reference(reference_id: str) -> Response:
        await asyncio.to_thread(store.delete_reference, reference_id)
        await asyncio.to_thread(service.references.remove, store)
        return Response(status_code=204)

    @router.get("/authenticity/info", response_model=AppInfo, summary="Views, limits, thresholds and the engine in use")
    async def info() -> AppInfo:
        cal = service.calibration
        return AppInfo(
            views=[ViewInfo(name=v, description=VIEW_DESCRIPTIONS[v], trained=v in cal.views) for v in VIEWS],
            max_photos=limits.max_photos, max_file_bytes=limits.max_file_bytes, max_pixels=limits.max_pixels,
            accepted_formats=["image/jpeg", "image/png", "image/webp"],
            min_authentic_views=cal.thresholds.min_authentic_views,
            thresholds={"counterfeit": cal.thresholds.counterfeit, "authentic": cal.thresholds.authentic,
                        "target_precision": cal.thresholds.target_precision,
                        "min_confidence": cal.thresholds.floor},
            engine=service.engine_info(), references=service.references.size,
        )

    return router


class AuthenticityPlugin:
    """The authentication app as served by ``kiln serve``."""

    name = "authenticity"

    def __init__(self, model_name: str = MODEL_NAME, limits: UploadLimits | None = None) -> None:
        self.model_name = model_name
        self.limits = limits or UploadLimits()
        self.service: AuthenticityService | None = None
        self.jobs: CaseTransport | None = None
        self._store: Store | None = None
        self._webhook_recovery: WebhookRecovery | None = None

    def required_models(self) -> list[str]:
        return [self.model_name]

    def _ensure(self, ctx: AppContext) -> tuple[AuthenticityService, CaseTransport, Store]:
        if self.service is None or self.jobs is None or self._store is None:
            from kiln.scale.webhooks import WebhookSender
            from kiln.serve.store import Store, open_store

            store = ctx.state.get("store")
            if not isinstance(store, Store):
                store = open_store(ctx.settings.database_url())
                ctx.state["store"] = store
            self._store = store
            self.service = AuthenticityService(ctx.inference, store, model_name=self.model_name, limits=self.limits,
                                               decode_device=ctx.settings.decode_device, stage_photos=ctx.settings.stage_photos)
            make_transport = ctx.state.get("case_transport")  # set by the scale-out gateway (kiln serve --broker)
            if callable(make_transport):
                self.jobs = make_transport(self.service, store)
            else:
                from kiln.scale.jobstore import webhook_attempt, webhook_outcome
                from kiln.scale.webhook_recovery import WebhookRecovery

                jobs_store = store
                webhooks = WebhookSender(
                    ctx.settings.webhook_secret,
                    on_outcome=lambda job_id, status, tries: asyncio.to_thread(webhook_outcome, jobs_store, job_id, status, tries),
                    on_attempt=lambda job_id, tries: asyncio.to_thread(webhook_attempt, jobs_store, job_id, tries),
                )
                self.jobs = InProcessCases(self.service, InProcessJobs(store), webhooks)
                if ctx.settings.webhook_secret:  # webhooks a previous run of this server left undelivered
                    self._webhook_recovery = WebhookRecovery(store, webhooks, self.service.get_case,
                                                             stale_after_s=ctx.settings.webhook_takeover_s)
        assert self.jobs is not None
        return self.service, self.jobs, self._store

    def router(self, ctx: AppContext) -> APIRouter:
        service, jobs, store = self._ensure(ctx)
        return build_router(service, jobs, store)

    async def startup(self, ctx: AppContext) -> None:
        service, _, _ = self._ensure(ctx)
        await service.start()
        if self._webhook_recovery is not None:
            self._webhook_recovery.start()

    async def shutdown(self, ctx: AppContext) -> None:
        if self.service is not None:
            await self.service.stop()
        if self._webhook_recovery is not None:
            await self._webhook_recovery.close()
        if self.jobs is not None:
            await self.jobs.close()


plugin = AuthenticityPlugin()
