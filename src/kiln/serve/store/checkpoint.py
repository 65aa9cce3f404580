"""WAL checkpoints of a SQLite store in a background thread, instead of inside a request's commit.

In WAL mode SQLite copies the log back into the database ("checkpoints") when a commit takes the
log over ``wal_autocheckpoint`` pages (about 4 MB): that commit does the copy and its fsyncs before
returning. An authentication case writes ~1 MB of photos, so every fourth or fifth case paid for a
checkpoint: save_case p95 was 4× its median (docs/benchmarks/store.md). With a ``WalCheckpointer``
the store's connections raise SQLite's threshold to a 64 MB backstop (reached only if the thread
cannot keep up or is not running) and one thread per process checkpoints
after each commit that wrote (``nudge``) and whenever the log file is over ``threshold_bytes``: PASSIVE (never waits for or blocks a writer or
reader); when the log still holds more than ``restart_bytes`` of frames, RESTART (it holds new
writers back for the moment it takes to copy what PASSIVE left, ≤ 50 ms, so that the log starts over:
with several processes writing steadily, a log restart otherwise needs luck), and TRUNCATE past
``truncate_bytes``. The
connections also set ``journal_size_limit``, so a log that was reset shrinks back. Several processes
on one database each run one; SQLite lets one checkpoint at a time and the others find nothing to
do. Stopping (``Store.close``) checkpoints and truncates the log.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import weakref
from pathlib import Path

log = logging.getLogger(__name__)


class WalCheckpointer:
    def __init__(self, path: Path, *, owner: object | None = None, interval_s: float = 0.1,
                 threshold_bytes: int = 4 << 20, restart_bytes: int = 16 << 20, truncate_bytes: int = 256 << 20) -> None:
        """``owner``: the thread ends once this object is garbage (a store dropped without ``close``)."""
        self.path = Path(path)
        self._owner = weakref.ref(owner) if owner is not None else None
        self.wal = Path(str(self.path) + "-wal")
        self.interval_s = interval_s
        self.threshold_bytes = threshold_bytes
        self.restart_bytes = restart_bytes
        self.truncate_bytes = truncate_bytes
        self.checkpoints = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._pid = 0

    @property
    def running_here(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._pid == os.getpid()

    def start(self) -> WalCheckpointer:
        """Starts the thread (again in a forked child, whose parent's thread did not come along); not after ``stop``."""
        if self._stopped:
            return self
        if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
            self._stop.clear()
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name=f"wal-checkpoint {self.path.name}", daemon=True)
            self._thread.start()
        return self

    def nudge(self) -> None:
        """A commit wrote to the log: checkpoint it now, before the next writer begins. SQLite restarts the
        log only for a writer whose transaction began with the log fully checkpointed, so checkpoints
        that ran at random moments under steady writes let it grow without a restart."""
        self._wake.set()

    def stop(self) -> None:
        self._stopped = True
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread.is_alive() and self._pid == os.getpid():
            self._thread.join(timeout=10)
        # waits at most 2 s for other processes' writers; a log left behind is checkpointed by the next opener
        self.checkpoint("TRUNCATE", timeout_s=2.0)

    def checkpoint(self, mode: str = "PASSIVE", connection: sqlite3.Connection | None = None,
                   timeout_s: float = 10.0) -> tuple[int, int, int] | None:
        """One checkpoint; SQLite's (busy, frames in the log, frames checkpointed), or None if it could not run."""
        if not self.path.exists():
            return None
        own = connection is None
        try:
            if connection is None:
                connection = sqlite3.connect(self.path, timeout=timeout_s)
            try:
                # fetchall: a statement left unfinished holds a read snapshot, and then the log can never restart
                rows = connection.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
            finally:
                if own:
                    connection.close()
        except sqlite3.Error as exc:  # a locked or vanished database: the next round tries again
            log.debug("WAL checkpoint of %s failed: %s", self.path, exc)
            return None
        self.checkpoints += 1
        return (int(rows[0][0]), int(rows[0][1]), int(rows[0][2])) if rows else None

    def _run(self) -> None:
        connection: sqlite3.Connection | None = None
        page = 4096
        try:
            while not self._stop.is_set():
                nudged = self._wake.wait(self.interval_s)
                self._wake.clear()
                if self._stop.is_set() or (self._owner is not None and self._owner() is None):
                    break
                try:
                    if connection is None:
                        if not self.path.exists():
                            continue
                        connection = sqlite3.connect(self.path, timeout=0.05)  # a busy database: try next round
                        page = int(connection.execute("PRAGMA page_size").fetchall()[0][0])
                    if not nudged and (self.wal.stat().st_size if self.wal.exists() else 0) <= self.threshold_bytes:
                        continue
                    result = self.checkpoint("PASSIVE", connection)
                    log_bytes = result[1] * page if result is not None else 0
                    if log_bytes > self.truncate_bytes:
                        self.checkpoint("TRUNCATE", connection)
                    elif log_bytes > self.restart_bytes:
                        # PASSIVE has copied the log; RESTART waits (≤ 50 ms) for the writer in progress and
                        # makes the next one start the log over, which steady writes from several processes
                        # otherwise rarely allow
                        self.checkpoint("RESTART", connection)
                except (OSError, sqlite3.Error) as exc:  # a vanished log, a locked page-size read: next round
                    log.debug("WAL checkpointer of %s: %s", self.path, exc)
                    if connection is not None:
                        connection.close()
                        connection = None
        finally:
            if connection is not None:
                connection.close()
