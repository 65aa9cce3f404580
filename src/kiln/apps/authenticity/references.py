"""Verified authentic reference photos: stored embeddings, searched with FAISS per brand/model/view.

Embeddings are unit-norm, so FAISS's inner-product index (IndexFlatIP) ranks by cosine
similarity. There is one small exact index per (brand, model, view), built from the store at
start-up and extended as references are registered; embeddings of another model (another
``embedding_space``) are never mixed in. Each server process has its own index: ``refresh``
reloads it when the store's references changed (registered or deleted through another process),
which the service checks every few seconds.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.apps.authenticity.views import item_key

if TYPE_CHECKING:
    from kiln.serve.store import ReferenceRecord, Store


@dataclass(frozen=True)
class ReferenceMatch:
    reference_id: str
    view: str
    similarity: float
    photo_index: int  # which photo of the case it was matched with


class _ViewIndex:
    def __init__(self, dim: int) -> None:
        import faiss

        self.index: Any = faiss.IndexFlatIP(dim)
        self.ids: list[str] = []

    def add(self, ids: list[str], vectors: np.ndarray) -> None:
        self.index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self.ids.extend(ids)


class ReferenceIndex:
    """Nearest verified references for a case's photos."""

    def __init__(self, embedding_space: str, dim: int) -> None:
        self.embedding_space = embedding_space
        self.dim = dim
        self._indexes: dict[tuple[str, str, str], _ViewIndex] = {}
        self._lock = threading.Lock()
        self.signature: tuple[int, str | None] | None = None  # the store's reference_signature at the last load

    @property
    def size(self) -> int:
        return sum(len(v.ids) for v in self._indexes.values())

    def load(self, store: Store) -> int:
        """(Re)builds every index from the store; returns how many references were loaded."""
        # the signature first: a reference registered meanwhile changes it again, so a refresh picks that up
        signature = store.reference_signature(self.embedding_space)
        records = store.list_references(embedding_space=self.embedding_space)
        indexes: dict[tuple[str, str, str], _ViewIndex] = {}
        self._build(indexes, records)
        with self._lock:  # searches keep the old indexes until the new ones are complete
            self._indexes = indexes
            self.signature = signature
        return len(records)

    def refresh(self, store: Store) -> bool:
        """Reloads when the store's references changed since the last load (another server process registered
        or deleted some); True if it did."""
        if store.reference_signature(self.embedding_space) == self.signature:
            return False
        self.load(store)
        return True

    def add(self, records: list[ReferenceRecord]) -> None:
        with self._lock:
            self._build(self._indexes, records)

    def remove(self, store: Store) -> None:
        """After a deletion: rebuild (flat indexes are cheap to rebuild)."""
        self.load(store)

    def _build(self, indexes: dict[tuple[str, str, str], _ViewIndex], records: list[ReferenceRecord]) -> None:
        grouped: dict[tuple[str, str, str], list[ReferenceRecord]] = {}
        for record in records:
            if record.embedding_space != self.embedding_space:
                continue
            grouped.setdefault((item_key(record.brand), item_key(record.model), record.view), []).append(record)
        for key, group in grouped.items():
            vectors = np.stack([np.frombuffer(r.embedding, dtype=np.float32) for r in group])
            if vectors.shape[1] != self.dim:
                continue
            indexes.setdefault(key, _ViewIndex(self.dim)).add([r.id for r in group], vectors)

    def count(self, brand: str, model: str, view: str) -> int:
        index = self._indexes.get((item_key(brand), item_key(model), view))
        return len(index.ids) if index else 0

    def search(self, brand: str, model: str, views: list[str], embeddings: np.ndarray, k: int = 3,
               usable: list[bool] | None = None) -> list[ReferenceMatch]:
        """The ``k`` nearest references of the same brand/model/view for each usable photo, best first."""
        matches: list[ReferenceMatch] = []
        with self._lock:
            for position, view in enumerate(views):
                if usable is not None and not usable[position]:
                    continue
                index = self._indexes.get((item_key(brand), item_key(model), view))
                if index is None or not index.ids:
                    continue
                query = np.ascontiguousarray(embeddings[position : position + 1], dtype=np.float32)
                sims, rows = index.index.search(query, min(k, len(index.ids)))
                for sim, row in zip(sims[0], rows[0], strict=True):
                    if row >= 0:
                        matches.append(ReferenceMatch(index.ids[int(row)], view, round(float(sim), 4), position))
        return matches
