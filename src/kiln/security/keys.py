"""API keys in the server's database: create, list, revoke, verify (with a short cache).

``kiln keys create`` prints the token once; only the SHA-256 of its secret is stored. A revoked key
stops working on every server within ``cache_ttl_s`` (the verification cache).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from kiln.errors import KilnError, NotFoundError
from kiln.security.hashing import matches, new_token, parse_token
from kiln.security.scopes import parse_scopes
from kiln.serve.store import ApiKeyRecord, Store
from kiln.serve.store.models import utcnow

_NAME = re.compile(r"[\w .@:-]{1,128}")
_TENANT = re.compile(r"[\w.@:-]{1,64}")


@dataclass(frozen=True)
class KeyInfo:
    id: str
    name: str
    tenant: str
    scopes: frozenset[str]
    rate_per_s: float | None
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def as_dict(self) -> dict[str, object]:
        return {"id": self.id, "name": self.name, "tenant": self.tenant, "scopes": sorted(self.scopes),
                "rate_per_s": self.rate_per_s, "created_at": self.created_at.isoformat(),
                "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None}


def _info(record: ApiKeyRecord) -> KeyInfo:
    return KeyInfo(record.id, record.name, record.tenant, frozenset(record.scopes), record.rate_per_s,
                   record.created_at, record.revoked_at)


class KeyStore:
    def __init__(self, store: Store, *, cache_ttl_s: float = 5.0) -> None:
        self.store = store
        self.cache_ttl_s = cache_ttl_s
        self._cache: dict[str, tuple[float, ApiKeyRecord | None]] = {}
        self._lock = threading.Lock()

    def create(self, name: str, scopes: str | list[str], *, tenant: str | None = None,
               rate_per_s: float | None = None) -> tuple[KeyInfo, str]:
        """A new key and its token (shown once)."""
        if not _NAME.fullmatch(name):
            raise KilnError(f"key name {name!r} must be 1-128 letters, digits, spaces or . @ : - _")
        if tenant is not None and not _TENANT.fullmatch(tenant):
            raise KilnError(f"tenant {tenant!r} must be 1-64 letters, digits or . @ : - _")
        if rate_per_s is not None and not 0 <= rate_per_s <= 1e6:
            raise KilnError(f"rate {rate_per_s} must be between 0 (unlimited) and 1000000 requests per second")
        checked = parse_scopes(scopes)
        key_id, token, digest = new_token()
        record = ApiKeyRecord(id=key_id, name=name, tenant=tenant or key_id, scopes=sorted(checked),
                              secret_sha256=digest, rate_per_s=rate_per_s, created_at=utcnow())
        with self.store.session() as session:
            session.add(record)
        return _info(record), token

    def list(self, *, include_revoked: bool = True) -> list[KeyInfo]:
        with self.store.session() as session:
            query = select(ApiKeyRecord).order_by(ApiKeyRecord.created_at, ApiKeyRecord.id)
            if not include_revoked:
                query = query.where(ApiKeyRecord.revoked_at.is_(None))
            return [_info(r) for r in session.scalars(query).all()]

    def revoke(self, key_id: str) -> KeyInfo:
        with self.store.session() as session:
            record = session.get(ApiKeyRecord, key_id)
            if record is None:
                raise NotFoundError(f"no API key {key_id!r}", hint="kiln keys list shows the ids")
            if record.revoked_at is None:
                record.revoked_at = utcnow()
            info = _info(record)
        with self._lock:
            self._cache.pop(key_id, None)
        return info

    def _record(self, key_id: str) -> ApiKeyRecord | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(key_id)
        if cached is not None and now - cached[0] < self.cache_ttl_s:
            return cached[1]
        with self.store.session() as session:
            record = session.get(ApiKeyRecord, key_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_id] = (now, record)
        return record

    def cached(self, token: str) -> bool:
        """Whether ``verify`` can answer without the database (so the caller may skip a thread hop)."""
        parsed = parse_token(token)
        if parsed is None:
            return True
        with self._lock:
            entry = self._cache.get(parsed[0])
        return entry is not None and time.monotonic() - entry[0] < self.cache_ttl_s

    def verify(self, token: str) -> KeyInfo | None:
        """The key of a token when it is well formed, known, not revoked and its secret matches."""
        parsed = parse_token(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        record = self._record(key_id)
        if record is None or record.revoked_at is not None or not matches(secret, record.secret_sha256):
            return None
        return _info(record)
