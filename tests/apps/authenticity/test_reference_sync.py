"""Server processes share references through the store: each one's index follows what another registered or deleted."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from kiln.serve.store import ReferenceRecord

from .conftest import serve_app


async def _size_becomes(index: Any, size: int, timeout_s: float = 6.0) -> bool:
    """Waits for the service's background refresh (every 2 s) to bring the index to ``size`` references."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and index.size != size:
        await asyncio.sleep(0.05)
    return bool(index.size == size)


def _records(space: str, dim: int, n: int) -> list[ReferenceRecord]:
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return [ReferenceRecord(id=uuid.uuid4().hex, brand="Aurelle", model="Celeste", view="logo", sha256="ab" * 32,
                            embedding_space=space, embedding=v.tobytes(), preview=b"jpeg") for v in vectors]


async def test_an_index_follows_references_written_by_another_process(engine_dir: Path, tmp_path: Path) -> None:
    async for client in serve_app(engine_dir, tmp_path):  # one server process on tmp_path/kiln.db
        service = client.plugin.service  # type: ignore[attr-defined]
        index, store = service.references, service.store
        assert index.size == 0
        other = _records(index.embedding_space, index.dim, 3)
        await asyncio.to_thread(store.add_references, other)  # as another process registering through the same database
        assert await _size_becomes(index, 3), "the background refresh loaded the new references"
        matches = index.search("aurelle", "celeste", ["logo"], np.frombuffer(other[0].embedding, np.float32)[None], k=1)
        assert [m.reference_id for m in matches] == [other[0].id]
        await asyncio.to_thread(store.delete_reference, other[0].id)
        assert await _size_becomes(index, 2), "and dropped the deleted one"
        assert not index.refresh(store), "nothing changed since: no reload"
        foreign = _records("another-model", index.dim, 1)  # embeddings of another model never mix in
        await asyncio.to_thread(store.add_references, foreign)
        assert not index.refresh(store) and index.size == 2
