"""The engine host's answers, sent from the thread that ran the call's batch.

A link thread reads a call, queues it (``DynamicBatcher.submit_nowait``) with a ``LinkReply`` and goes
back to reading its socket; the instance thread that runs the batch completes each call's reply,
which packs the outputs and sends the answer frame itself. Before, the link thread blocked on a
future and the instance thread woke it: one thread wake and one GIL hand-off more per call, and on
the 2-core machine (py-spy ``--gil`` on the host) 28 % of the host's interpreter time went into
those wakes (``Condition.notify``). ``DeadlineWatch`` fails a queued call once its deadline passes,
which the blocked link thread's timeout did before.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.serve.batcher import DynamicBatcher, Pending, Tensors

log = logging.getLogger(__name__)


class LinkReply:
    """A ``batcher.Completion`` that hands the request and its outcome to ``send``, once, on the completing thread."""

    __slots__ = ("_done", "_lock", "_send", "request")

    def __init__(self, send: Callable[[Pending | None, Tensors | BaseException], None]) -> None:
        self.request: Pending | None = None
        self._send = send
        self._lock = threading.Lock()
        self._done = False

    def done(self) -> bool:
        return self._done

    def set_result(self, result: Tensors) -> None:
        self._finish(result)

    def set_exception(self, exception: BaseException) -> None:
        self._finish(exception)

    def _finish(self, outcome: Tensors | BaseException) -> None:
        with self._lock:
            if self._done:
                raise concurrent.futures.InvalidStateError("this call has its answer already")
            self._done = True
        request, self.request = self.request, None  # the request (and its input views) need not outlive the answer
        try:
            self._send(request, outcome)
        except Exception:  # ``send`` handles a link gone meanwhile itself; anything else must not stop the batch's others
            log.exception("an engine link's answer could not be sent")


class DeadlineWatch:
    """One thread that expires queued calls at their deadlines (earliest first)."""

    def __init__(self, name: str = "kiln-engine-host-deadlines") -> None:
        self._heap: list[tuple[float, int, DynamicBatcher, LinkReply]] = []
        self._order = itertools.count()
        self._cond = threading.Condition(threading.Lock())
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> DeadlineWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify()
        self._thread.join(5)

    def watch(self, deadline: float, batcher: DynamicBatcher, reply: LinkReply) -> None:
        """Expires ``reply``'s request at ``deadline`` (``time.monotonic()``) unless it is answered by then."""
        with self._cond:
            while self._heap and self._heap[0][3].done():  # answered calls leave from the top (mostly in order)
                heapq.heappop(self._heap)
            heapq.heappush(self._heap, (deadline, next(self._order), batcher, reply))
            if self._heap[0][3] is reply:  # the earliest now: the thread's wait must end sooner
                self._cond.notify()

    def __len__(self) -> int:
        return len(self._heap)

    def _run(self) -> None:
        while True:
            due: list[tuple[DynamicBatcher, LinkReply]] = []
            with self._cond:
                while not self._stopped:
                    now = time.monotonic()
                    while self._heap and (self._heap[0][0] <= now or self._heap[0][3].done()):
                        _, _, batcher, reply = heapq.heappop(self._heap)
                        if not reply.done():
                            due.append((batcher, reply))
                    if due:
                        break
                    self._cond.wait(timeout=self._heap[0][0] - now if self._heap else None)
                if self._stopped:
                    return
            for batcher, reply in due:
                request = reply.request
                if request is not None:
                    try:
                        batcher.expire(request)
                    except Exception:  # one call's failure must not end expiry for all the others
                        log.exception("engine host: a call could not be expired")
