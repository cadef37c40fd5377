"""Uploads handed from a hash worker to an API worker in memory, already claimed.

The transaction that records a file's hash creates its upload job in flight (attempt 1,
its intent set) when this queue has room, so no API worker has to claim it from the
store: one record and one wait for the disk less per file. The job is on disk before it
is handed over; a crash leaves it ``uploading``, which start-up recovery turns back into
``pending`` with its intent kept (the next attempt looks before it posts). A clean stop
puts what no worker started back into the queue (``Workers.put_back``).

Bounded by the API workers free to start it now (and by ``size``): a hash worker reserves
a place before its transaction; when there is none, the upload is queued in the store
as ever, without an intent (so, for one, a file renamed while its upload waits is still
uploaded under its final name).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from syncd.model import Job


class Handoff:
    """A bounded queue of claimed upload jobs, with places reserved ahead of the commit."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._jobs: deque[Job] = deque()
        self._reserved = 0
        self._lock = threading.Lock()
        #: Called after a job is put (the workers wake an idle API worker).
        self.on_put: Callable[[], None] = lambda: None
        #: How many API workers could start a job now (the workers tell).
        self.free: Callable[[], int] = lambda: size

    def reserve(self) -> bool:
        """A place for one job, to be filled by ``put`` or given back by ``release``."""
        with self._lock:
            if len(self._jobs) + self._reserved >= min(self.size, self.free()):
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._reserved -= 1

    def put(self, job: Job) -> None:
        """Fill a reserved place with a job that is already durable in its claimed state."""
        with self._lock:
            self._reserved -= 1
            self._jobs.append(job)
        self.on_put()

    def take(self) -> Job | None:
        with self._lock:
            return self._jobs.popleft() if self._jobs else None

    def drain(self) -> list[Job]:
        """Every job not taken yet (on stop, to go back to the queue)."""
        with self._lock:
            jobs = list(self._jobs)
            self._jobs.clear()
            return jobs

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)
