"""``kiln auth bulk``: publish a catalogue of cases as bulk jobs and wait for every result.

A catalogue is either a CSV file with the columns ``case_id, brand, model, view, path`` (one row per
photo, paths relative to the file) or a folder in the dataset layout
``BRAND/MODEL/VIEW/LABEL/FILE`` (grouped into cases by its ``cases.csv`` when present). Each case is
checked locally first (counts, views, sizes, image headers), then published with bulk priority, so
interactive requests on the same workers overtake it. Results come back on a reply queue of this run.
"""

from __future__ import annotations

import asyncio
import csv
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kiln.errors import KilnError
from kiln.scale.broker import BrokerConnection, Topology, amqp_priority
from kiln.scale.messages import CaseJob, JobFile, JobResult, MalformedMessageError

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
CSV_COLUMNS = ("case_id", "brand", "model", "view", "path")


@dataclass
class BulkCase:
    case_id: str  # the catalogue's name for it
    brand: str
    model: str
    photos: list[tuple[str, Path]] = field(default_factory=list)  # (view, path)


def read_catalogue(source: Path) -> list[BulkCase]:
    """Cases from a CSV file or a dataset-layout folder; raises naming the first problem."""
    if source.is_dir():
        return _from_layout(source)
    if source.is_file() and source.suffix.lower() == ".csv":
        return _from_csv(source)
    raise KilnError(f"{source} is neither a CSV file nor a folder",
                    hint="give a CSV (case_id,brand,model,view,path) or a folder BRAND/MODEL/VIEW/LABEL/*.jpg")


def _from_csv(path: Path) -> list[BulkCase]:
    cases: dict[str, BulkCase] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(CSV_COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise KilnError(f"{path}: missing columns {sorted(missing)}", hint="columns: " + ",".join(CSV_COLUMNS))
        for line, row in enumerate(reader, start=2):
            values = {k: (row.get(k) or "").strip() for k in CSV_COLUMNS}
            empty = [k for k, v in values.items() if not v]
            if empty:
                raise KilnError(f"{path}:{line}: empty {', '.join(empty)}")
            photo = (path.parent / values["path"]).resolve()
            if not photo.is_file():
                raise KilnError(f"{path}:{line}: photo {values['path']!r} does not exist")
            case = cases.setdefault(values["case_id"], BulkCase(values["case_id"], values["brand"], values["model"]))
            if (case.brand, case.model) != (values["brand"], values["model"]):
                raise KilnError(f"{path}:{line}: case {case.case_id} changes brand/model")
            case.photos.append((values["view"], photo))
    if not cases:
        raise KilnError(f"{path} lists no photos")
    return list(cases.values())


def _from_layout(root: Path) -> list[BulkCase]:
    from kiln.apps.authenticity.dataset import _apply_cases, _walk

    photos, problems = _walk(root)
    if not photos:
        raise KilnError(f"{root} holds no photos at BRAND/MODEL/VIEW/LABEL/FILE" + (f": {problems[0]}" if problems else ""))
    cases: dict[str, BulkCase] = {}
    for photo in _apply_cases(root, photos):
        case = cases.setdefault(photo.case_id, BulkCase(photo.case_id, photo.brand, photo.model))
        case.photos.append((photo.view, photo.path))
    return list(cases.values())


def to_job(case: BulkCase, *, callback_url: str | None = None) -> CaseJob:
    """Reads and checks one case (what the gateway would check) and makes its bulk job."""
    from kiln.apps.authenticity.pipeline import Upload, UploadLimits, check_request

    uploads = [Upload(path.name, path.read_bytes(), CONTENT_TYPES.get(path.suffix.lower(), "")) for _, path in case.photos]
    views, brand, model = check_request(uploads, [v for v, _ in case.photos], case.brand, case.model, UploadLimits())
    return CaseJob(job_id=uuid.uuid4().hex, views=views, brand=brand, model=model,
                   files=[JobFile(u.name, u.content_type, u.data) for u in uploads], priority="bulk",
                   callback_url=callback_url)


@dataclass
class BulkProgress:
    total: int
    published: int = 0
    done: int = 0
    failed: int = 0
    rejected: int = 0  # failed the local checks, never published
    started: float = field(default_factory=time.perf_counter)

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.rejected

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.started


@dataclass
class BulkSummary:
    total: int
    done: int
    failed: int
    rejected: int
    unfinished: int
    elapsed_s: float
    verdicts: dict[str, int]
    failures: list[dict[str, str]]  # case, job, error
    jobs: dict[str, str]  # catalogue case id -> job id

    @property
    def cases_per_s(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def run_bulk(cases: list[BulkCase], broker_url: str, *, queue_prefix: str = "kiln", timeout_s: float = 3600.0,
                   max_in_flight: int = 256, on_progress: Callable[[BulkProgress], None] | None = None) -> BulkSummary:
    """Publishes every case and waits for all results (or ``timeout_s``)."""
    broker = BrokerConnection(broker_url, Topology(queue_prefix))
    reply_queue = broker.topology.reply_queue()
    progress = BulkProgress(len(cases))
    results: dict[str, JobResult] = {}
    names: dict[str, str] = {}  # job id -> catalogue case id
    failures: list[dict[str, str]] = []
    all_done = asyncio.Event()
    slots = asyncio.Semaphore(max_in_flight)

    def check_done() -> None:
        if progress.finished >= progress.total:
            all_done.set()

    async def on_reply(message: AbstractIncomingMessage) -> None:
        try:
            result = JobResult.decode(message.body)
        except MalformedMessageError:
            return
        if result.job_id not in names or result.job_id in results:
            return
        results[result.job_id] = result
        slots.release()
        if result.status == "done":
            progress.done += 1
        else:
            progress.failed += 1
            failures.append({"case": names[result.job_id], "job": result.job_id, "error": result.error or ""})
        if on_progress is not None:
            on_progress(progress)
        check_done()

    async def consume(b: BrokerConnection) -> None:
        await b.consume(reply_queue, on_reply, exclusive=True)

    broker.on_ready(consume)
    await broker.start()
    try:
        try:
            await broker.wait_connected(30.0)
        except TimeoutError as exc:
            raise KilnError(f"could not connect to the broker at {broker_url.split('@')[-1]} within 30 s",
                            hint="is RabbitMQ running? check --broker") from exc
        jobs_by_case: dict[str, str] = {}
        for case in cases:
            try:
                job = await asyncio.to_thread(to_job, case)
            except KilnError as exc:
                progress.rejected += 1
                failures.append({"case": case.case_id, "job": "", "error": str(exc)})
                if on_progress is not None:
                    on_progress(progress)
                continue
            await slots.acquire()
            names[job.job_id] = case.case_id
            jobs_by_case[case.case_id] = job.job_id
            await broker.publish(job.encode(), routing_key=broker.topology.cases, priority=amqp_priority("bulk"),
                                 correlation_id=job.job_id, reply_to=reply_queue)
            progress.published += 1
            if on_progress is not None:
                on_progress(progress)
        check_done()
        try:
            async with asyncio.timeout(timeout_s):
                await all_done.wait()
        except TimeoutError:
            pass
    finally:
        await broker.close()
    verdicts = Counter(r.verdict or "?" for r in results.values() if r.status == "done")
    return BulkSummary(
        total=len(cases), done=progress.done, failed=progress.failed, rejected=progress.rejected,
        unfinished=progress.published - len(results), elapsed_s=progress.elapsed_s, verdicts=dict(verdicts),
        failures=failures, jobs=jobs_by_case,
    )
