"""Uploads handed from a hash worker to an API worker in memory, already claimed.

The transaction that records a file's hash creates its upload job in flight (attempt 1,
its intent set) when this queue has room, so no API worker has to claim it from the
store: one record less per file. The hash worker does not wait for the disk: the job is
handed over with its place in the commit order, and the API worker that takes it waits
until that record is durable before it acts. A crash leaves it ``uploading``, which
start-up recovery turns back into ``pending`` with its intent kept (the next attempt
looks before it posts). A clean stop puts what no worker started back into the queue
(``Workers.put_back``).

Bounded by ``size`` and by the places the workers offer (``free``): the API workers free
to start it now and, while the API lane is busy taking job after job (a burst), a few
more, for the workers about to finish; none while the API is paused. A hash worker
reserves a place before its transaction; when there is none, the upload is queued in
the store as ever, without an intent. A handed-over upload no worker has taken yet is
not started: a rename takes it back (``withdraw``), so it still goes up under the
file's final name.
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
        self._jobs: deque[tuple[Job, int]] = deque()
        self._reserved = 0
        self._lock = threading.Lock()
        #: Called after a job is put (the workers wake an idle API worker).
        self.on_put: Callable[[], None] = lambda: None
        #: How many places the API workers offer now (the workers tell; 0 while paused).
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

    def put(self, job: Job, point: int = 0) -> None:
        """Fill a reserved place with a job recorded in its claimed state; ``point`` is
        that record's place in the commit order (``Store.last_record``)."""
        with self._lock:
            self._reserved -= 1
            self._jobs.append((job, point))
        self.on_put()

    def take(self) -> tuple[Job, int] | None:
        """The next job and the point to wait for (``Store.wait_durable``) before acting."""
        with self._lock:
            return self._jobs.popleft() if self._jobs else None

    def withdraw(self, job_id: int) -> bool:
        """Take a job back before any worker took it (True), or say it was taken."""
        with self._lock:
            for entry in self._jobs:
                if entry[0].id == job_id:
                    self._jobs.remove(entry)
                    return True
            return False

    def drain(self) -> list[Job]:
        """Every job not taken yet (on stop, to go back to the queue)."""
        with self._lock:
            jobs = [job for job, _point in self._jobs]
            self._jobs.clear()
            return jobs

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)
