"""Engine and sessions from a URL, and the operations the apps and the job transport need.

Every method opens its own short session, so the store is safe to call from worker threads
(the app calls it through ``asyncio.to_thread`` to keep the event loop free).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple, cast

from sqlalchemy import Engine, Table, create_engine, event, func, insert, select
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import Session, raiseload, sessionmaker, undefer
from sqlalchemy.pool import StaticPool

from kiln.errors import KilnError, NotFoundError, UnavailableError
from kiln.serve.store.checkpoint import WalCheckpointer
from kiln.serve.store.models import CaseImageRecord, CaseRecord, JobRecord, ReferenceRecord, utcnow
from kiln.serve.store.photo_files import PhotoFiles, StagedPhotos, Sweep, file_name

log = logging.getLogger(__name__)

JOB_STATES = ("queued", "running", "done", "failed")


@dataclass(frozen=True)
class CaseQuery:
    verdict: str | None = None
    brand: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    offset: int = 0
    tenant: str | None = None  # only this tenant's cases (access control); None: every case
    count_limit: int = 10_000  # the total is counted up to this many (counting every match grows with the table)


class CasePage(NamedTuple):
    cases: list[CaseRecord]
    total: int  # matching cases, at most the query's count_limit
    total_capped: bool  # more than count_limit match


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers proceed while one writer commits; NORMAL sync is durable across app crashes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for ``url``; SQLite files get WAL mode and their folder is created."""
    try:
        if url.startswith("sqlite"):
            memory = url in ("sqlite://", "sqlite:///:memory:")
            if not memory:
                path = url.split("///", 1)[-1]
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url,
                connect_args={"check_same_thread": False, "timeout": 10},
                poolclass=StaticPool if memory else None,
            )
            event.listen(engine, "connect", _sqlite_pragmas)
            return engine
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise KilnError(f"cannot use database URL {_redact(url)!r}: {exc}",
                        hint="use sqlite:///PATH or postgresql+psycopg://USER:PASSWORD@HOST/DB") from exc


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


BACKSTOP_PAGES = 16_384  # SQLite checkpoints inside a commit only past this many log pages (64 MB of 4 KB pages)


def _background_checkpoints(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # the store's WalCheckpointer checkpoints off the request path; SQLite's own stays as a 64 MB backstop
    cursor.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
    cursor.execute(f"PRAGMA journal_size_limit={64 << 20}")
    cursor.close()


def _mark_written(session: Session, _context: Any) -> None:
    session.info["wrote"] = True  # the ORM flushed changes: the commit writes to the log


def _row(record: Any) -> dict[str, Any]:
    """The column values a transient ORM record holds, for a Core INSERT: unset (None) values are
    left out where the column has a default or is the autoincrement key, so the default applies as
    it would through the ORM."""
    mapper = sa_inspect(type(record))
    values = record.__dict__
    row: dict[str, Any] = {}
    for prop in mapper.column_attrs:
        column = prop.columns[0]
        value = values.get(prop.key)
        if value is None and (column.default is not None or column.primary_key or column.server_default is not None):
            continue
        row[column.key] = value
    return row


def _mark_statement(state: Any) -> None:
    if state.is_update or state.is_delete or state.is_insert:  # Core-style writes through session.execute
        state.session.info["wrote"] = True


def sqlite_file(url: str | URL) -> Path | None:
    """The file of a SQLite database URL; None for other databases, in-memory SQLite and a URL that
    does not parse (opening it says what is wrong)."""
    try:
        url = make_url(url)
    except ArgumentError:
        return None
    database = url.database
    if url.get_backend_name() != "sqlite" or database in (None, "", ":memory:"):
        return None
    return Path(str(database)).expanduser()


class Store:
    """Cases, case images, references and jobs in one database."""

    def __init__(self, engine: Engine, *, background_checkpoints: bool = True, photo_files: bool | None = None) -> None:
        """``background_checkpoints`` (SQLite files): WAL checkpoints in a thread (``checkpoint.py``)
        instead of in whichever commit crosses SQLite's threshold (off only to measure the difference);
        ``photo_files`` (SQLite files; default ``KILN_PHOTO_FILES``, off): new case photos saved as files
        beside the database (``photo_files.py``) instead of inside it. PostgreSQL keeps photos in the
        database. Rows that name a file read back whatever this store writes."""
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self.checkpointer: WalCheckpointer | None = None
        database = sqlite_file(engine.url)
        # Reading always looks beside a SQLite file (rows may name files whatever this store writes).
        self.photos: PhotoFiles | None = PhotoFiles.beside(database) if database is not None else None
        if photo_files is None:
            from kiln.config import get_settings

            photo_files = get_settings().photo_files
        self.photo_files = photo_files and self.photos is not None
        path = database if background_checkpoints else None
        if path is not None:
            engine.dispose()  # connections made before this point would keep automatic checkpoints
            event.listen(engine, "connect", _background_checkpoints)
            self.checkpointer = WalCheckpointer(path, owner=self).start()
            event.listen(self._sessions, "after_flush", _mark_written)
            event.listen(self._sessions, "do_orm_execute", _mark_statement)

    @property
    def url(self) -> str:
        return _redact(self.engine.url.render_as_string(hide_password=True))

    def create_schema(self) -> None:
        """Brings the database to the newest schema (Alembic ``upgrade head``)."""
        from kiln.serve.store.migrate import upgrade

        try:
            upgrade(self.engine)
        except OperationalError as exc:
            raise UnavailableError(f"database {self.url} is unreachable: {exc.orig}", hint="check the --db URL and the server") from exc

    def close(self) -> None:
        self.engine.dispose()
        if self.checkpointer is not None:
            self.checkpointer.stop()

    @contextmanager
    def session(self) -> Iterator[Session]:
        if self.checkpointer is not None and not self.checkpointer.running_here:
            self.checkpointer.start()  # a forked worker: the parent's thread did not come along
        session = self._sessions()
        try:
            yield session
            session.commit()
            if session.info.pop("wrote", False) and self.checkpointer is not None:
                self.checkpointer.nudge()
        except OperationalError as exc:
            session.rollback()
            raise UnavailableError(f"database {self.url} is unavailable: {exc.orig}", retry_after_s=2.0) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    # --- cases ---------------------------------------------------------------------------------
    def stage_photos(self, photos: Sequence[bytes], sha256: Sequence[str] | None = None) -> StagedPhotos | None:
        """Writes a case's photos ahead of its ``save_case`` (one pack, synced, under a temporary
        name), so that the save only renames it; None where the photos go inside the rows (no photo
        files). ``sha256``: the photos' digests where the caller has them (else computed here). A
        case that is not saved after all hands it to ``discard_photos``."""
        if not (self.photo_files and self.photos is not None):
            return None
        return self.photos.stage(photos, sha256)

    def discard_photos(self, staged: StagedPhotos | None) -> None:
        if staged is not None and self.photos is not None:
            self.photos.discard(staged)

    def save_case(self, case: CaseRecord, staged: StagedPhotos | None = None) -> bool:
        """Inserts a case with its images; returns False when a case with that id already exists.

        With photo files the bytes are written first, outside the transaction, as one pack (or were,
        by ``stage_photos``: ``staged`` holds every image, in order, and is placed or removed here,
        whatever happens); a save that does not commit removes the pack. Each image's ``sha256``
        must be its data's digest (the pipeline computes it from the uploaded bytes): reading checks
        the bytes against it. The records keep their ``data`` for the caller."""
        if staged is not None and list(staged.sha256) != [image.sha256 for image in case.images]:
            self.discard_photos(staged)  # a row must never name another photo's bytes
            raise ValueError(f"the {len(staged.sha256)} staged photos are not the case's {len(case.images)} images "
                             "(their SHA-256 must match, in order)")
        held: list[tuple[CaseImageRecord, bytes]] = []
        pack: StagedPhotos | None = None
        committed = False
        try:
            if self.photo_files and self.photos is not None:
                if staged is not None:
                    pack, staged = staged, None
                    refs = self.photos.place(pack)
                    chosen = [(image, ref) for image, ref in zip(case.images, refs, strict=True)
                              if image.data and not image.photo_file]
                else:
                    writing = [image for image in case.images if image.data and not image.photo_file]
                    # the rows' digests name the bytes (reading checks them), so they are not computed again
                    pack = self.photos.stage([image.data for image in writing],
                                             [image.sha256 for image in writing]) if writing else None
                    refs = self.photos.place(pack) if pack is not None else []
                    chosen = list(zip(writing, refs, strict=True))
                for image, ref in chosen:
                    held.append((image, image.data))
                    image.photo_file, image.data = ref, b""
            case_row = _row(case)
            image_rows = [_row(image) | {"case_id": case.id} for image in case.images]
            with self.session() as session:
                # two INSERT statements, not the ORM's unit of work: SQLite has one writer at a
                # time across the server's processes, and the write lock is held from the first
                # INSERT to the commit; a case id already stored fails the first one
                session.execute(insert(cast(Table, CaseRecord.__table__)), [case_row])
                if image_rows:
                    session.execute(insert(cast(Table, CaseImageRecord.__table__)), image_rows)
                session.commit()
                committed = True  # from here on rows name the pack: whatever fails next must not remove it
        except IntegrityError:
            return False  # a concurrent writer stored the same case id first: exactly once
        finally:
            for image, data in held:  # the caller's records as they came, whatever happened
                image.photo_file, image.data = None, data
            if staged is not None:
                self.discard_photos(staged)  # not placed (photo files are off)
            if pack is not None and not committed and self.photos is not None:
                self.photos.remove(pack)  # no row names it
        return True

    def get_case(self, case_id: str) -> CaseRecord:
        with self.session() as session:
            case = session.get(CaseRecord, case_id)
            if case is None:
                raise NotFoundError(f"case {case_id!r} not found")
            return case

    def list_cases(self, query: CaseQuery) -> CasePage:
        """One page of cases, newest first, and how many match the filters (counted up to ``count_limit``).

        The cases come without their photos' rows (``images`` raises if read): a list shows summaries, and
        loading six image rows with their heatmaps per case was most of its time."""
        conditions = []
        if query.verdict:
            conditions.append(CaseRecord.verdict == query.verdict)
        if query.brand:
            conditions.append(CaseRecord.brand == query.brand)
        if query.since:
            conditions.append(CaseRecord.created_at >= query.since)
        if query.until:
            conditions.append(CaseRecord.created_at < query.until)
        if query.tenant is not None:
            conditions.append(CaseRecord.tenant == query.tenant)
        with self.session() as session:
            # a bounded count: its cost stops growing with the table past count_limit matches
            matching = select(CaseRecord.id).where(*conditions).limit(query.count_limit + 1).subquery()
            total = int(session.scalar(select(func.count()).select_from(matching)) or 0)
            rows = session.scalars(
                select(CaseRecord).options(raiseload(CaseRecord.images))
                .where(*conditions).order_by(CaseRecord.created_at.desc(), CaseRecord.id)
                .limit(query.limit).offset(query.offset)
            ).all()
            return CasePage(list(rows), min(total, query.count_limit), total > query.count_limit)

    def case_tenant(self, case_id: str) -> str | None:
        """The tenant that created a case (None when made without access control)."""
        with self.session() as session:
            row = session.execute(select(CaseRecord.tenant).where(CaseRecord.id == case_id)).first()
            if row is None:
                raise NotFoundError(f"case {case_id!r} not found")
            return row[0]  # type: ignore[no-any-return]

    def case_image(self, case_id: str, position: int) -> CaseImageRecord:
        with self.session() as session:
            image = session.scalar(
                select(CaseImageRecord).options(undefer(CaseImageRecord.data))
                .where(CaseImageRecord.case_id == case_id, CaseImageRecord.position == position)
            )
            if image is None:
                if session.get(CaseRecord, case_id) is None:
                    raise NotFoundError(f"case {case_id!r} not found")
                raise NotFoundError(f"case {case_id!r} has no photo {position}")
        return self._with_bytes([image])[0]

    def case_images_with_data(self, case_id: str) -> list[CaseImageRecord]:
        with self.session() as session:
            images = list(session.scalars(
                select(CaseImageRecord).options(undefer(CaseImageRecord.data))
                .where(CaseImageRecord.case_id == case_id).order_by(CaseImageRecord.position)
            ).all())
        return self._with_bytes(images)

    def sweep_photo_files(self, older_than_s: float = 3600.0, *, dry_run: bool = False) -> Sweep:
        """Removes photo files beside the database that no row names, last written more than
        ``older_than_s`` ago: what a process that died between writing a case's pack and committing
        its rows left behind (``photo_files.PhotoFiles.sweep``). Safe while servers run."""
        if self.photos is None:
            raise KilnError(f"{self.url} keeps its photos inside the database: there are no photo files to sweep",
                            hint="photo files exist only beside a SQLite database (KILN_PHOTO_FILES=1)")
        now = time.time()  # before the rows are read (see PhotoFiles.sweep)
        with self.session() as session:
            referenced = {file_name(ref) for ref in session.scalars(
                select(CaseImageRecord.photo_file).where(CaseImageRecord.photo_file.is_not(None)).distinct()) if ref}
        return self.photos.sweep(referenced, older_than_s, dry_run=dry_run, now=now)

    def _with_bytes(self, images: list[CaseImageRecord]) -> list[CaseImageRecord]:
        """Fills ``data`` from the photo files of rows that name one (after their session closed, so
        that nothing is written back)."""
        for image in images:
            if image.photo_file:
                if self.photos is None:
                    raise KilnError(f"photo {image.position} of case {image.case_id} is a file beside a SQLite database, "
                                    f"and {self.url} is not one", status=500)
                image.data = self.photos.get(image.photo_file, image.sha256)
        return images

    def get_report(self, case_id: str, kind: str) -> str | bytes | None:
        column = CaseRecord.report_html if kind == "html" else CaseRecord.report_pdf
        with self.session() as session:
            row = session.execute(select(column, CaseRecord.id).where(CaseRecord.id == case_id)).first()
            if row is None:
                raise NotFoundError(f"case {case_id!r} not found")
            return row[0]  # type: ignore[no-any-return]

    def set_report(self, case_id: str, kind: str, content: str | bytes) -> None:
        with self.session() as session:
            case = session.get(CaseRecord, case_id)
            if case is None:
                raise NotFoundError(f"case {case_id!r} not found")
            if kind == "html":
                case.report_html = str(content)
            else:
                case.report_pdf = bytes(content) if isinstance(content, bytes) else content.encode()

    # --- references ----------------------------------------------------------------------------
    def add_references(self, records: list[ReferenceRecord]) -> None:
        with self.session() as session:
            session.add_all(records)

    def list_references(self, *, embedding_space: str | None = None, brand: str | None = None,
                        model: str | None = None, view: str | None = None) -> list[ReferenceRecord]:
        conditions = []
        if embedding_space is not None:
            conditions.append(ReferenceRecord.embedding_space == embedding_space)
        if brand is not None:
            conditions.append(ReferenceRecord.brand == brand)
        if model is not None:
            conditions.append(ReferenceRecord.model == model)
        if view is not None:
            conditions.append(ReferenceRecord.view == view)
        with self.session() as session:
            return list(session.scalars(
                select(ReferenceRecord).where(*conditions).order_by(ReferenceRecord.created_at, ReferenceRecord.id)
            ).all())

    def reference_signature(self, embedding_space: str) -> tuple[int, str | None]:
        """How many references of an embedding space there are and when the newest was made: it changes with
        every registration and deletion, so a server process can tell that its index is stale with one query."""
        with self.session() as session:
            count, newest = session.execute(
                select(func.count(), func.max(ReferenceRecord.created_at)).where(ReferenceRecord.embedding_space == embedding_space)
            ).one()
        return int(count), None if newest is None else str(newest)

    def reference_preview(self, reference_id: str) -> bytes:
        with self.session() as session:
            data = session.scalar(select(ReferenceRecord.preview).where(ReferenceRecord.id == reference_id))
            if data is None:
                raise NotFoundError(f"reference {reference_id!r} not found")
            return data

    def delete_reference(self, reference_id: str) -> None:
        with self.session() as session:
            record = session.get(ReferenceRecord, reference_id)
            if record is None:
                raise NotFoundError(f"reference {reference_id!r} not found")
            session.delete(record)

    # --- jobs ----------------------------------------------------------------------------------
    def create_job(self, job_id: str, kind: str) -> JobRecord:
        with self.session() as session:
            job = JobRecord(id=job_id, kind=kind, status="queued", attempts=0)
            session.add(job)
            return job

    def update_job(self, job_id: str, status: str, *, case_id: str | None = None, error: str | None = None,
                   error_status: int | None = None) -> JobRecord:
        if status not in JOB_STATES:
            raise ValueError(f"unknown job status {status!r}")
        with self.session() as session:
            job = session.get(JobRecord, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} not found")
            job.status = status
            job.updated_at = utcnow()
            if status == "running":
                job.attempts += 1
            if case_id is not None:
                job.case_id = case_id
            if status == "done":  # a finished job shows no error from an earlier, retried attempt
                job.error = None
                job.error_status = None
            elif error is not None:
                job.error = error
                job.error_status = error_status
            return job

    def set_job_tenant(self, job_id: str, tenant: str | None) -> None:
        with self.session() as session:
            job = session.get(JobRecord, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} not found")
            job.tenant = tenant

    def get_job(self, job_id: str) -> JobRecord:
        with self.session() as session:
            job = session.get(JobRecord, job_id)
            if job is None:
                raise NotFoundError(f"job {job_id!r} not found")
            return job


def open_store(url: str, *, create: bool = True, photo_files: bool | None = None) -> Store:
    """A store on ``url`` (creating the tables unless ``create`` is False); ``photo_files`` as for ``Store``."""
    store = Store(make_engine(url), photo_files=photo_files)
    if create:
        store.create_schema()
    return store
