"""The authentication service: validate uploads, one engine pass per case, gate, fuse, compare, store.

The hot path per case: decode every photo straight to the model's size (JPEG DCT scaling) in
worker threads, or, when the engine runs on a GPU, in one batched nvJPEG call there
(``gpu_imaging``); measure quality on those small images, send all photos through the engine as
one batch, assess and fuse, search references, write the case. Per case the engine's heatmap
grid (e.g. 5×5 cells per photo) is kept with the case; heatmap PNGs, overlays and reports are
rendered later, on request. Each stage's wall time goes into the request's ``StageTimings``
(``kiln.serve.timing``), which the route returns as a ``Server-Timing`` header.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast

import numpy as np

from kiln.aio import cancel_and_wait
from kiln.apps.authenticity.assessment import CaseAssessment, assess_case
from kiln.apps.authenticity.calibration import AuthCalibration
from kiln.apps.authenticity.imaging import (
    ACCEPTED_FORMATS,
    DEFAULT_MAX_PIXELS,
    DecodedPhoto,
    PhotoHeader,
    decode_photo,
    engine_input,
    read_header,
)
from kiln.apps.authenticity.quality import QualityMetrics, measure
from kiln.apps.authenticity.references import ReferenceIndex, ReferenceMatch
from kiln.apps.authenticity.schemas import (
    CaseResponse,
    EngineInfo,
    ImageResult,
    PhotoQuality,
    QualityReason,
    ReferenceInfo,
    ReferenceResult,
)
from kiln.apps.authenticity.views import MAX_PHOTOS, check_view
from kiln.config import STAGE_PHOTOS, stage_photos_moment
from kiln.errors import KilnError, PayloadTooLargeError
from kiln.serve.timing import stage

if TYPE_CHECKING:
    from collections.abc import Callable

    from kiln.config import StagePhotos
    from kiln.engine.manifest import EngineManifest
    from kiln.serve.context import InferenceClient, Priority
    from kiln.serve.store import CaseRecord, Store
    from kiln.serve.store.photo_files import StagedPhotos

log = logging.getLogger(__name__)

MODEL_NAME = "authenticity"
API = "/v1"


@dataclass(frozen=True)
class UploadLimits:
    max_photos: int = MAX_PHOTOS
    max_file_bytes: int = 15 * 1024 * 1024
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_text: int = 128

    @property
    def max_body_bytes(self) -> int:
        return self.max_photos * self.max_file_bytes + 1024 * 1024


@dataclass
class Upload:
    """One uploaded file; ``name`` is the client's file name, used in messages only, never as a path."""

    name: str
    data: bytes
    content_type: str = ""
    # what check_request read from its header, kept so that the decoders do not read it again
    header: PhotoHeader | None = field(default=None, compare=False, repr=False)

    def label(self, index: int) -> str:
        shown = self.name if len(self.name) <= 80 else self.name[:77] + "..."
        return f"images[{index}] ({shown!r})" if shown else f"images[{index}]"


@dataclass
class CaseAnalysis:
    photos: list[DecodedPhoto]
    assessment: CaseAssessment
    embeddings: np.ndarray


def _text(value: str | None, field: str, limits: UploadLimits) -> str:
    text = " ".join((value or "").split())
    if not text:
        raise KilnError(f"{field} is required", hint=f"send the item's {field} as a form field")
    if len(text) > limits.max_text:
        raise KilnError(f"{field} is {len(text)} characters long; at most {limits.max_text} are accepted")
    return text


def check_request(uploads: list[Upload], views: list[str], brand: str | None, model: str | None,
                  limits: UploadLimits) -> tuple[list[str], str, str]:
    """Everything that can be checked without decoding: counts, views, sizes, formats."""
    if not uploads:
        raise KilnError(f"no photos: send 1 to {limits.max_photos} files in the 'images' field",
                        hint="multipart/form-data with images=@photo.jpg and views=VIEW per photo, plus brand and model")
    if len(uploads) > limits.max_photos:
        raise KilnError(f"{len(uploads)} photos sent; at most {limits.max_photos} per case",
                        hint="send one photo per view: " + ", ".join(["logo", "stitching", "hardware", "date_code", "lining", "overall"]))
    if len(views) != len(uploads):
        raise KilnError(
            f"{len(uploads)} photos but {len(views)} views: send one 'views' value per photo, in the same order",
            hint="e.g. views=logo, views=stitching (or one comma-separated value)",
        )
    checked = [check_view(view, where=uploads[i].label(i)) for i, view in enumerate(views)]
    for index, upload in enumerate(uploads):
        if len(upload.data) > limits.max_file_bytes:
            raise PayloadTooLargeError(
                f"{upload.label(index)}: {len(upload.data)} bytes is over the limit of {limits.max_file_bytes} bytes per photo",
                hint="send a JPEG of at most a few megabytes",
            )
        upload.header = read_header(upload.data, upload.label(index), limits.max_pixels)
    return checked, _text(brand, "brand", limits), _text(model, "model", limits)


class AuthenticityService:
    """Authentication cases and references on top of an inference client and a store."""

    def __init__(self, inference: InferenceClient, store: Store, *, model_name: str = MODEL_NAME,
                 limits: UploadLimits | None = None, decode_device: str = "auto", reference_refresh_s: float = 2.0,
                 stage_photos: StagePhotos | bool = "off") -> None:
        if decode_device not in DECODE_DEVICES:
            raise KilnError(f"decode device {decode_device!r} is not one of {', '.join(DECODE_DEVICES)}")
        self.inference = inference
        self.store = store
        self.model_name = model_name
        self.limits = limits or UploadLimits()
        self.decode_device = decode_device
        # with photo files, write a case's photos ahead of its save (Store.stage_photos): once they are
        # decoded ("decoded", KILN_STAGE_PHOTOS's default, which the server and the worker pass: the write
        # overlaps the engine and the response, not the decode; on an H100 it lowered p50 and p95 at 100
        # cases/s), or from the request's checks on ("checked": that lowered the median and lengthened the
        # tail under load); "off": in the save (docs/benchmarks/gpu.md)
        moment = stage_photos_moment(stage_photos)
        if moment not in STAGE_PHOTOS:
            raise KilnError(f"stage_photos {stage_photos!r} is not one of {', '.join(STAGE_PHOTOS)}")
        self.stage_photos = cast("StagePhotos", moment)
        self._staging_pool: ThreadPoolExecutor | None = None  # made on the first staged case
        # torch device that decodes photos (nvJPEG on "cuda"); None: Pillow on the CPU. Set at start.
        self.decode_on: str | None = None
        self._manifest: EngineManifest | None = None
        self._calibration: AuthCalibration | None = None
        self._references: ReferenceIndex | None = None
        self.reference_refresh_s = reference_refresh_s
        self._refresher: asyncio.Task[None] | None = None

    # --- start-up --------------------------------------------------------------------------------
    async def start(self) -> None:
        manifest = self.inference.manifest(self.model_name)
        self._calibration = AuthCalibration.from_extra(manifest.extra, where=f"engine {manifest.name!r}")
        self._manifest = manifest
        self._references = ReferenceIndex(manifest.source_sha256, self._calibration.embed_dim)
        loaded = await asyncio.to_thread(self._references.load, self.store)
        self.decode_on = choose_decode_device(self.decode_device, manifest.device)
        log.info("authenticity: engine %s (%s on %s), %d references, photos decoded on %s", manifest.name,
                 manifest.precision.value, manifest.device, loaded, self.decode_on or "cpu (Pillow)")
        advice = decode_advice(self.decode_device, manifest.device)
        if advice:
            log.warning("authenticity: %s", advice)
        if self.reference_refresh_s > 0 and self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_references(), name="authenticity reference refresh")

    async def _refresh_references(self) -> None:
        """References registered or deleted through another server process reach this one's index."""
        while True:
            await asyncio.sleep(self.reference_refresh_s)
            try:
                if await asyncio.to_thread(self.references.refresh, self.store):
                    log.info("authenticity: references reloaded (%d), changed by another process", self.references.size)
            except Exception as exc:  # a database outage: the index stays as it is, the next round tries again
                log.warning("authenticity: reference refresh failed: %s", exc)

    async def stop(self) -> None:
        if self._refresher is not None:
            await cancel_and_wait(self._refresher)
            self._refresher = None
        if self._staging_pool is not None:  # writes in flight finish (and failed cases' files go) first
            pool, self._staging_pool = self._staging_pool, None
            await asyncio.to_thread(pool.shutdown, wait=True)

    @property
    def manifest(self) -> EngineManifest:
        if self._manifest is None:
            raise KilnError("the authenticity service is starting", status=503)
        return self._manifest

    @property
    def calibration(self) -> AuthCalibration:
        if self._calibration is None:
            raise KilnError("the authenticity service is starting", status=503)
        return self._calibration

    @property
    def references(self) -> ReferenceIndex:
        if self._references is None:
            raise KilnError("the authenticity service is starting", status=503)
        return self._references

    def engine_info(self) -> EngineInfo:
        m = self.manifest
        return EngineInfo(
            name=m.name, precision=m.precision.value, backend=m.backend, backbone=self.calibration.backbone,
            trained_on_synthetic_data=bool(self.calibration.trained_on.get("synthetic", False)),
        )

    # --- analysis --------------------------------------------------------------------------------
    async def _decode(self, uploads: list[Upload]) -> tuple[list[DecodedPhoto], list[QualityMetrics], np.ndarray]:
        """Photos → model-size pixels, their quality metrics, and the engine's input batch."""
        pre = self.manifest.preprocessing
        if self.decode_on is not None:
            return await asyncio.to_thread(self._decode_on_device, uploads, self.decode_on)

        def one(index: int) -> tuple[DecodedPhoto, QualityMetrics]:
            upload = uploads[index]
            photo = decode_photo(upload.data, pre, name=upload.label(index), max_pixels=self.limits.max_pixels)
            return photo, measure(photo.pixels, photo.width, photo.height)

        with stage("decode"):  # decode and quality metrics, photo by photo in parallel threads
            results = await asyncio.gather(*(asyncio.to_thread(one, i) for i in range(len(uploads))), return_exceptions=True)
        problems = [r for r in results if isinstance(r, BaseException)]
        if problems:
            first = problems[0]
            if isinstance(first, KilnError):
                if len(problems) > 1:
                    raise KilnError("; ".join(str(p) for p in problems), status=first.status)
                raise first
            raise first
        done = [r for r in results if not isinstance(r, BaseException)]
        photos = [d[0] for d in done]
        with stage("preprocess"):
            # Off the event loop: the loop keeps parsing other requests' uploads meanwhile.
            batch = await asyncio.to_thread(engine_input, np.stack([p.pixels for p in photos]), pre)
        return photos, [d[1] for d in done], batch

    def _decode_on_device(self, uploads: list[Upload], device: str) -> tuple[list[DecodedPhoto], list[QualityMetrics], np.ndarray]:
        """One worker thread: batched decode and the gate's metrics on the device, then the engine input."""
        from kiln.apps.authenticity.gpu_imaging import decode_and_measure

        pre = self.manifest.preprocessing
        with stage("decode"):  # with the gate's metrics, measured on the device
            photos, measured = decode_and_measure([u.data for u in uploads], [u.label(i) for i, u in enumerate(uploads)], pre,
                                                  device, max_pixels=self.limits.max_pixels,
                                                  headers=[u.header for u in uploads])
        with stage("quality"):  # photos the CPU decoded (other formats, what nvJPEG refused) are measured here
            metrics = [m if m is not None else measure(p.pixels, p.width, p.height) for p, m in zip(photos, measured, strict=True)]
        with stage("preprocess"):
            batch = engine_input(np.stack([p.pixels for p in photos]), pre)
        return photos, metrics, batch

    async def analyse(self, uploads: list[Upload], views: list[str], priority: Priority | None = None, *,
                      brand: str | None = None, model: str | None = None,
                      decoded: Callable[[list[DecodedPhoto]], None] | None = None) -> CaseAnalysis:
        """Decode, one engine pass for all photos, then the quality gate, distribution check and fusion
        (with the claimed item's design head when the model has one). ``decoded`` is called with the
        photos once they are decoded, before the engine pass."""
        photos, metrics, batch = await self._decode(uploads)
        if decoded is not None:
            decoded(photos)
        input_name = self.manifest.inputs[0].name
        if priority is None:
            outputs = await self.inference.infer(self.model_name, {input_name: batch})
        else:
            outputs = await self.inference.infer(self.model_name, {input_name: batch}, priority=priority)
        with stage("assess"):
            assessment = assess_case(views, metrics, outputs, self.calibration, brand=brand, model=model)
            embeddings = np.asarray(outputs["embedding"], np.float32).reshape(len(views), -1)
        return CaseAnalysis(photos, assessment, embeddings)

    # --- cases -----------------------------------------------------------------------------------
    async def authenticate(self, uploads: list[Upload], views: list[str], brand: str | None, model: str | None,
                           *, case_id: str | None = None, checked: bool = False,
                           priority: Priority | None = None, tenant: str | None = None) -> CaseResponse:
        if not checked:
            views, brand, model = check_request(uploads, views, brand, model, self.limits)
        assert brand is not None and model is not None
        # With photo files and stage_photos the photos are written to the store while the engine looks at
        # them (from here, or once they are decoded); the save then only renames them and inserts the rows.
        staging: Future[StagedPhotos | None] | None = None

        def stage_decoded(photos: list[DecodedPhoto]) -> None:
            nonlocal staging
            staging = self._stage_photos(uploads, [p.sha256 for p in photos])

        if self.stage_photos == "checked":
            staging = self._stage_photos(uploads)
        try:
            analysis = await self.analyse(uploads, views, priority, brand=brand, model=model,
                                          decoded=stage_decoded if self.stage_photos == "decoded" else None)
            case_id = case_id or uuid.uuid4().hex
            with stage("references"):
                matches = self.references.search(brand, model, views, analysis.embeddings, k=3,
                                                 usable=[p.ok for p in analysis.assessment.photos])
            with stage("respond"):
                response = self._response(case_id, datetime.now(UTC), brand, model, uploads, analysis, matches)
                record = self._record(response, uploads, analysis)
            record.tenant = tenant  # the API key's tenant (access control); None on an open server
            with stage("store"):
                staged = await asyncio.wrap_future(staging) if staging is not None else None
                staging = None  # save_case places or removes them from here on
                stored = await asyncio.to_thread(self.store.save_case, record, staged)
        finally:
            if staging is not None:  # the case failed before its save: its staged photos go
                _discard_when_written(staging, self.store)
        if not stored:  # the same job delivered twice: the first result stands
            return CaseResponse.model_validate((await asyncio.to_thread(self.store.get_case, case_id)).result)
        return response

    def _stage_photos(self, uploads: list[Upload], sha256: list[str] | None = None) -> Future[StagedPhotos | None] | None:
        if self.stage_photos == "off" or not self.store.photo_files:
            return None
        if self._staging_pool is None:
            self._staging_pool = ThreadPoolExecutor(4, thread_name_prefix="kiln-photo-staging")
        return self._staging_pool.submit(self.store.stage_photos, [u.data for u in uploads], sha256)

    def _response(self, case_id: str, created: datetime, brand: str, model: str, uploads: list[Upload],
                  analysis: CaseAnalysis, matches: list[ReferenceMatch]) -> CaseResponse:
        base = f"{API}/cases/{case_id}"
        fusion = analysis.assessment.fusion
        images = []
        for photo, decoded in zip(analysis.assessment.photos, analysis.photos, strict=True):
            images.append(ImageResult(
                index=photo.index,
                view=photo.view,
                quality=PhotoQuality(
                    ok=photo.ok,
                    reasons=[QualityReason(code=f.code, message=f.message, guidance=f.guidance) for f in photo.findings],
                    metrics={k: float(v) for k, v in photo.metrics.as_dict().items() if k not in ("width", "height")},
                ),
                score=None if photo.probability is None else round(photo.probability, 4),
                region=photo.region() if photo.ok else None,
                view_similarity=round(photo.view_similarity, 4),
                sha256=decoded.sha256,
                width=decoded.width,
                height=decoded.height,
                image_url=f"{base}/images/{photo.index}",
                heatmap_url=f"{base}/images/{photo.index}/heatmap.png",
                overlay_url=f"{base}/images/{photo.index}/overlay.jpg",
            ))
        references = [
            ReferenceResult(reference_id=m.reference_id, view=m.view, similarity=m.similarity, photo_index=m.photo_index,
                            image_url=f"{API}/references/{m.reference_id}/image")
            for m in sorted(matches, key=lambda m: (m.photo_index, -m.similarity))
        ]
        return CaseResponse(
            case_id=case_id, created_at=created, brand=brand, model=model, verdict=fusion.verdict.value,
            confidence=round(fusion.confidence, 4),
            counterfeit_probability=None if fusion.counterfeit_probability is None else round(fusion.counterfeit_probability, 4),
            reasons=fusion.reasons, images=images, references=references, notes=analysis.assessment.notes,
            engine=self.engine_info(), report_url=f"{base}/report.html", pdf_url=f"{base}/report.pdf", json_url=base,
        )

    def _record(self, response: CaseResponse, uploads: list[Upload], analysis: CaseAnalysis) -> CaseRecord:
        from kiln.serve.store import CaseImageRecord, CaseRecord

        record = CaseRecord(
            id=response.case_id, app="authenticity", created_at=response.created_at, brand=response.brand,
            model=response.model, verdict=response.verdict, confidence=response.confidence,
            engine=f"{self.manifest.name}:{self.manifest.precision.value}:{self.manifest.source_sha256[:12]}",
            result=response.model_dump(mode="json"),
        )
        record.images = [
            CaseImageRecord(
                position=image.index, view=image.view, sha256=image.sha256,
                content_type=ACCEPTED_FORMATS.get(decoded.format, "application/octet-stream"),
                width=image.width, height=image.height, quality=image.quality.model_dump(mode="json"),
                score=image.score, heatmap=np.round(photo.heatmap.astype(np.float64), 4).tolist(),
                data=upload.data,
            )
            for image, photo, decoded, upload in zip(response.images, analysis.assessment.photos, analysis.photos, uploads, strict=True)
        ]
        return record

    async def get_case(self, case_id: str) -> CaseResponse:
        record = await asyncio.to_thread(self.store.get_case, case_id)
        return CaseResponse.model_validate(record.result)

    # --- references ------------------------------------------------------------------------------
    async def register_references(self, uploads: list[Upload], views: list[str], brand: str | None,
                                  model: str | None, note: str = "") -> list[ReferenceInfo]:
        """Stores verified authentic photos; every photo must pass the quality gate and look like its view."""
        from kiln.apps.authenticity.heatmaps import thumbnail_jpeg
        from kiln.serve.store import ReferenceRecord

        views, brand, model = check_request(uploads, views, brand, model, self.limits)
        analysis = await self.analyse(uploads, views, brand=brand, model=model)
        rejected = [p for p in analysis.assessment.photos if not p.ok]
        if rejected:
            details = "; ".join(
                f"{uploads[p.index].label(p.index)} ({p.view}): " + ", ".join(f.message for f in p.findings) for p in rejected
            )
            raise KilnError(f"reference photos must be usable: {details}", status=422,
                            hint="retake these photos; nothing was registered")
        created = datetime.now(UTC)
        previews = await asyncio.gather(*(asyncio.to_thread(thumbnail_jpeg, u.data) for u in uploads))
        records = [
            ReferenceRecord(
                id=uuid.uuid4().hex, created_at=created, brand=brand, model=model, view=view,
                sha256=photo.sha256, embedding_space=self.manifest.source_sha256,
                embedding=np.ascontiguousarray(analysis.embeddings[i], np.float32).tobytes(),
                preview=previews[i], note=note[:512],
            )
            for i, (view, photo) in enumerate(zip(views, analysis.photos, strict=True))
        ]
        await asyncio.to_thread(self.store.add_references, records)
        self.references.add(records)
        return [reference_info(r) for r in records]


def _discard_when_written(staging: Future[StagedPhotos | None], store: Store) -> None:
    """Removes a failed case's staged photos once their writing thread is done (a cancelled request
    included: a write that has started is not cancelled, and its files go when it ends)."""
    def discard(done: Future[StagedPhotos | None]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # it never ran, or stage_photos removed what it had written
        staged = done.result()
        if staged is not None:
            store.discard_photos(staged)

    staging.add_done_callback(discard)


DECODE_DEVICES = ("auto", "cpu", "cuda")


def choose_decode_device(setting: str, engine_device: str) -> str | None:
    """Where a case's photos are decoded: Pillow on the CPU (None) unless "cuda" asks for nvJPEG.

    "auto" stays on the CPU for this app: on an H100 (2026-11-22) nvJPEG's full decode plus the box
    filter gave pixels further from Pillow's DCT-domain scaling than the model and the quality gate
    were fitted on (tests/apps/authenticity/test_gpu_imaging.py, strict xfail). "cuda" turns it on where
    the engine runs on a GPU, and on such a host it is the one that keeps up with load: at 100 cases/s the
    8 server processes used 5.4-5.7 cores with Pillow against 1.4-1.6 with nvJPEG (docs/benchmarks/gpu.md,
    2026-12-08). ``kiln auth evaluate --decoder nvjpeg`` checks an engine on that path's pixels first.
    """
    from kiln.apps.authenticity.gpu_imaging import gpu_decoding_available

    if setting != "cuda":
        return None
    wanted = engine_device if engine_device.startswith("cuda") else "cuda"
    if gpu_decoding_available(wanted):
        return wanted
    raise KilnError("photos were to be decoded on the GPU (KILN_DECODE_DEVICE=cuda) but torch sees no CUDA GPU "
                    "or torchvision is missing", hint="set KILN_DECODE_DEVICE=auto or cpu")


def decode_advice(setting: str, engine_device: str) -> str | None:
    """What to tell the operator of a GPU engine whose photos ``auto`` leaves to Pillow (None otherwise): on such a
    host Pillow's decode, not the GPU, sets the cases/s (docs/benchmarks/gpu.md, 2026-12-08). An explicit ``cpu``
    is the operator's choice and gets no advice."""
    if setting != "auto" or not engine_device.startswith("cuda"):
        return None
    return (f"the engine runs on {engine_device} but photos are decoded by Pillow on the CPU (KILN_DECODE_DEVICE=auto), "
            "which limits the cases/s on a GPU host; check the engine on GPU-decoded photos with `kiln auth evaluate "
            "--decoder nvjpeg`, then set KILN_DECODE_DEVICE=cuda (docs/authenticity.md, 'On a GPU host'), "
            "or set KILN_DECODE_DEVICE=cpu to keep Pillow")


def reference_info(record: object) -> ReferenceInfo:
    from kiln.serve.store import ReferenceRecord

    assert isinstance(record, ReferenceRecord)
    return ReferenceInfo(
        reference_id=record.id, brand=record.brand, model=record.model, view=record.view, sha256=record.sha256,
        created_at=record.created_at, note=record.note, image_url=f"{API}/references/{record.id}/image",
    )
