"""What travels on the broker: a case job (photos + fields) and its result.

A job body is ``4-byte big-endian length | JSON metadata | photo bytes, concatenated``: the photos
travel as uploaded (JPEG bytes are far smaller than decoded tensors), the metadata names each
file's length. A result is a small JSON object sent to the job's ``reply_to`` queue.
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kiln.errors import KilnError

FORMAT_VERSION = 1
_LENGTH = struct.Struct(">I")


class MalformedMessageError(KilnError):
    """A message on the queue that is not a kiln job (wrong version, truncated, not JSON)."""


@dataclass
class JobFile:
    name: str
    content_type: str
    data: bytes


@dataclass
class CaseJob:
    """One case to authenticate; ``job_id`` is also the id of the case it produces."""

    job_id: str
    views: list[str]
    brand: str
    model: str
    files: list[JobFile]
    kind: str = "authenticate"
    priority: str = "interactive"  # or "bulk"
    callback_url: str | None = None
    tenant: str | None = None  # the API key's tenant that owns the case
    submitted_at: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        meta = {
            "v": FORMAT_VERSION, "job_id": self.job_id, "kind": self.kind, "views": self.views, "brand": self.brand,
            "model": self.model, "priority": self.priority, "callback_url": self.callback_url,
            "tenant": self.tenant, "submitted_at": self.submitted_at,
            "files": [{"name": f.name, "content_type": f.content_type, "size": len(f.data)} for f in self.files],
        }
        header = json.dumps(meta, separators=(",", ":")).encode()
        return b"".join([_LENGTH.pack(len(header)), header, *(f.data for f in self.files)])

    @classmethod
    def decode(cls, body: bytes) -> CaseJob:
        try:
            (length,) = _LENGTH.unpack_from(body)
            meta = json.loads(body[_LENGTH.size : _LENGTH.size + length])
            if meta.get("v") != FORMAT_VERSION:
                raise MalformedMessageError(f"job format version {meta.get('v')!r}; this worker reads {FORMAT_VERSION}")
            offset = _LENGTH.size + length
            files = []
            for entry in meta["files"]:
                size = int(entry["size"])
                files.append(JobFile(str(entry["name"]), str(entry["content_type"]), body[offset : offset + size]))
                offset += size
            if offset != len(body):
                raise MalformedMessageError(f"job body has {len(body)} bytes; its metadata accounts for {offset}")
            return cls(
                job_id=str(meta["job_id"]), views=[str(v) for v in meta["views"]], brand=str(meta["brand"]),
                model=str(meta["model"]), files=files, kind=str(meta.get("kind", "authenticate")),
                priority=str(meta.get("priority", "interactive")), callback_url=meta.get("callback_url"),
                tenant=meta.get("tenant"), submitted_at=float(meta.get("submitted_at", 0.0)),
            )
        except MalformedMessageError:
            raise
        except (struct.error, ValueError, KeyError, TypeError) as exc:
            raise MalformedMessageError(f"not a kiln job message: {exc}") from exc


@dataclass
class JobResult:
    """What a worker reports for a job: done with its case, or failed with the error a client sees."""

    job_id: str
    status: str  # "done" | "failed"
    case_id: str | None = None
    verdict: str | None = None
    error: str | None = None
    error_status: int | None = None
    attempts: int = 0
    queue_wait_s: float = 0.0  # from submission until a worker started it
    work_s: float = 0.0  # decode, inference, fusion and the database write

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> JobResult:
        try:
            data: dict[str, Any] = json.loads(body)
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise MalformedMessageError(f"not a kiln job result: {exc}") from exc
