"""Tables of the store, declared once for SQLite and PostgreSQL alike (portable column types only)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class CaseRecord(Base):
    """One submitted item: its verdict, the full result document, and lazily rendered reports."""

    __tablename__ = "cases"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    app: Mapped[str] = mapped_column(String(32), default="authenticity")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    brand: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    verdict: Mapped[str] = mapped_column(String(32))
    confidence: Mapped[float] = mapped_column(Float)
    engine: Mapped[str] = mapped_column(String(256), default="")  # which engine (name, version) decided
    result: Mapped[dict[str, Any]] = mapped_column(JSON)
    report_html: Mapped[str | None] = mapped_column(Text, nullable=True, deferred=True)
    report_pdf: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, deferred=True)
    # --- security (migration 0003): the tenant (API key owner) that created the case; NULL without access control
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)

    # the case list filters on one of these and pages newest first (migration 0004)
    __table_args__ = tuple(Index(f"ix_cases_{column}_created_at", column, "created_at") for column in ("tenant", "brand", "verdict"))

    images: Mapped[list[CaseImageRecord]] = relationship(
        back_populates="case", cascade="all, delete-orphan", order_by="CaseImageRecord.position", lazy="selectin"
    )


class CaseImageRecord(Base):
    """One photo of a case as uploaded (bytes kept for reports), with its findings and heatmap."""

    __tablename__ = "case_images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    case_id: Mapped[str] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    view: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(64))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    quality: Mapped[dict[str, Any]] = mapped_column(JSON)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    heatmap: Mapped[list[list[float]]] = mapped_column(JSON)
    data: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # empty when the bytes are in a photo file
    # migration 0005: the photo's file beside a SQLite database (photo_files.py); NULL when ``data`` holds it
    photo_file: Mapped[str | None] = mapped_column(String(64), nullable=True)

    case: Mapped[CaseRecord] = relationship(back_populates="images")


class ReferenceRecord(Base):
    """A verified authentic photo of a brand/model/view: its embedding and a small preview."""

    __tablename__ = "reference_photos"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    brand: Mapped[str] = mapped_column(String(128))
    model: Mapped[str] = mapped_column(String(128))
    view: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    embedding_space: Mapped[str] = mapped_column(String(128))  # embeddings of different models never mix
    embedding: Mapped[bytes] = mapped_column(LargeBinary)  # float32, unit norm
    preview: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)  # small JPEG for reports
    note: Mapped[str] = mapped_column(String(512), default="")

    __table_args__ = (Index("ix_reference_photos_item", "embedding_space", "brand", "model", "view"),)


class JobRecord(Base):
    """An asynchronous request: queued → running → done | failed; its result is a case."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    case_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    error_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # scale-out (migration 0002): where to POST the result, and how that went
    callback_url: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    webhook_status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # pending | delivered | failed
    webhook_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # --- security (issue 8): the tenant that submitted the job; NULL without access control
    tenant: Mapped[str | None] = mapped_column(String(64), nullable=True)


# --- security (issue 8): API keys ------------------------------------------------------------------
class ApiKeyRecord(Base):
    """An API key: only the SHA-256 of its secret is stored; revoked keys stay for the audit trail."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(16), primary_key=True)  # the public part of the token
    name: Mapped[str] = mapped_column(String(128))
    tenant: Mapped[str] = mapped_column(String(64), index=True)  # whose cases the key sees
    scopes: Mapped[list[str]] = mapped_column(JSON)
    secret_sha256: Mapped[str] = mapped_column(String(64))
    rate_per_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: the server's default
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
