"""Bounded in-memory stores for uploaded reference images and recommendation results.

Results keep what their asset URLs need (the mock-up specifications), and each asset is rendered
on its first request and then kept with the result; the least recently used result is dropped
when the store is full, after which its URLs answer 404.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from PIL import Image

from kiln.errors import NotFoundError

T = TypeVar("T")
V = TypeVar("V")
MAX_DERIVED = 8  # values kept per uploaded image (one per panel size a brief used, and the features)


class LruStore(Generic[T]):
    def __init__(self, capacity: int, what: str) -> None:
        self.capacity = capacity
        self.what = what
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, value: T) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, key: str) -> T:
        with self._lock:
            if key not in self._items:
                raise NotFoundError(f"no {self.what} {key!r}", hint="it may have expired; send the request again")
            self._items.move_to_end(key)
            return self._items[key]

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass
class StoredDirection:
    spec: Any  # render.MockupSpec
    palette: dict[str, Any]
    assets: dict[str, bytes] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class StoredResult:
    response: dict[str, Any]
    directions: list[StoredDirection]


@dataclass
class StoredImage:
    image: Image.Image  # ≤ 512 px working copy
    width: int  # original size
    height: int
    digest: str  # sha256 of the uploaded bytes
    # what briefs compute from the image alone (scorer features, the image fitted to a panel), by name
    computed: dict[Hashable, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def derived(self, key: Hashable, compute: Callable[[], V]) -> V:
        """``compute()`` the first time a key is asked for, the kept value after (it must not be mutated)."""
        with self.lock:
            if key in self.computed:
                return self.computed[key]  # type: ignore[no-any-return]
        value = compute()  # outside the lock: two briefs computing the same value at once is harmless
        with self.lock:
            if len(self.computed) >= MAX_DERIVED:
                return value
            return self.computed.setdefault(key, value)  # type: ignore[no-any-return]
