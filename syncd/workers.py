"""The job workers: a fixed pool that claims due jobs and runs their workflows.

Two kinds of lane, never a thread per file: hash workers take ``file`` jobs (disk-bound),
API workers take ``upload``, ``delete`` and ``dedupe`` jobs (network-bound). API workers wait while
the library is being indexed for a new database and while the breaker holds the API
closed. A workflow's unexpected exception puts its job back for later; a job whose
outcome could not be written (a full disk) is held by its worker until the store takes
writes again.
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import structlog

from syncd.context import Context
from syncd.errors import (
    ApiError,
    AuthError,
    OutcomeUnknown,
    StaleAttempt,
    StoreError,
    TransientError,
)
from syncd.model import CLAIMABLE, Job, JobKind, Workflow

log = structlog.get_logger(__name__)

API_KINDS = (JobKind.UPLOAD, JobKind.DELETE, JobKind.DEDUPE)
FILE_KINDS = (JobKind.FILE,)
#: How soon a job whose record failed (a full disk) is tried again.
STORE_RETRY_SECONDS = 2.0
#: How soon a job whose workflow crashed is tried again.
CRASH_RETRY_SECONDS = 30.0
#: An API lane that started a job this recently is busy taking one after another: the
#: handoff may then queue uploads for the workers about to finish, not only free ones.
HANDOFF_AHEAD_SECONDS = 0.1


class Workers:
    """Runs jobs for the daemon; ``loop(kinds)`` is the body of each worker thread."""

    def __init__(
        self,
        ctx: Context,
        flows: Mapping[JobKind, Workflow],
        *,
        stopping: threading.Event,
        indexed: threading.Event,
        clock: Callable[[], float],
        claim_batch: Mapping[tuple[JobKind, ...], int] | None = None,
    ) -> None:
        self.ctx = ctx
        #: Per lane, how many due jobs one claim takes (as many as the lane has workers:
        #: never more than it can start soon); the extra wait in the lane's own queue.
        self._batch = dict(claim_batch or {})
        self._claimed: dict[tuple[JobKind, ...], deque[Job]] = {}
        self.flows = flows
        self.stopping = stopping
        self.indexed = indexed
        self.clock = clock
        self._lock = threading.RLock()
        self.wake = threading.Condition(self._lock)
        #: Per lane: a count bumped whenever work may have arrived (a worker sleeps only
        #: if it is unchanged since its last look at the queue, so no wake-up is lost),
        #: and a condition on the same lock, so a queued upload wakes one API worker.
        self._generation: dict[tuple[JobKind, ...], int] = {}
        self._lanes: dict[tuple[JobKind, ...], threading.Condition] = {}
        for lane in (API_KINDS, FILE_KINDS):
            self._lane(lane)
        self._busy = 0
        self._busy_lock = threading.Lock()
        ctx.ledger.store.on_queued(self._queued)
        #: Jobs whose outcome was recorded without waiting and never reached the disk.
        self._lost: deque[Job] = deque()
        ctx.ledger.store.on_lost(self._lost_jobs)
        #: API workers not running a job: what the handoff may give work to at once.
        self._free_api = 0
        if ctx.handoff is not None:
            ctx.handoff.on_put = lambda: self._queued({JobKind.UPLOAD: 1})
            ctx.handoff.free = self._free_to_start
            ctx.ledger.unstarted = ctx.handoff.withdraw
        self._last_api_start = float("-inf")

    def _free_to_start(self) -> int:
        """Places for handed-over uploads: the API workers free now, plus the handoff's
        size while the lane is taking job after job; none while paused."""
        now = self.clock()
        if not (self.indexed.is_set() and self.ctx.breaker.allow(now)):
            return 0
        cycling = now - self._last_api_start < HANDOFF_AHEAD_SECONDS
        size = self.ctx.handoff.size if self.ctx.handoff is not None and cycling else 0
        return self._free_api + size

    @property
    def busy(self) -> int:
        """Jobs being worked on right now."""
        with self._busy_lock:
            return self._busy

    def _lane(self, kinds: tuple[JobKind, ...]) -> threading.Condition:
        """The condition a lane's idle workers sleep on (made on first use)."""
        with self.wake:
            if kinds not in self._lanes:
                self._lanes[kinds] = threading.Condition(self._lock)
                self._generation[kinds] = 0
                self._claimed[kinds] = deque()
            return self._lanes[kinds]

    def notify_all(self) -> None:
        """New work may be due: wake every idle worker."""
        with self.wake:
            for lane, cond in self._lanes.items():
                self._generation[lane] += 1
                cond.notify_all()
            self.wake.notify_all()

    def _queued(self, queued: Mapping[JobKind, int]) -> None:
        """Jobs just became claimable (committed): wake as many workers of their lanes."""
        with self.wake:
            for lane, cond in self._lanes.items():
                count = sum(n for kind, n in queued.items() if kind in lane)
                if count:
                    self._generation[lane] += 1
                    cond.notify(count)

    def wait(
        self, seconds: float, kinds: tuple[JobKind, ...] | None = None, seen: int = -1
    ) -> None:
        """Sleep up to ``seconds``; with ``kinds``, only while no work came for that lane."""
        if kinds is None:
            with self.wake:
                self.wake.wait(seconds)
            return
        lane = self._lane(kinds)
        with lane:
            lane.wait_for(
                lambda: self._generation[kinds] != seen or self.stopping.is_set(), seconds
            )

    def loop(self, kinds: tuple[JobKind, ...]) -> None:
        api = kinds == API_KINDS
        self._count_free(api, 1)
        try:
            self._loop(kinds, api)
        finally:
            self._count_free(api, -1)

    def _count_free(self, api: bool, change: int) -> None:
        if api:
            with self._busy_lock:
                self._free_api += change

    def _loop(self, kinds: tuple[JobKind, ...], api: bool) -> None:
        breaker = self.ctx.breaker
        while not self.stopping.is_set():
            if api and not self.indexed.is_set():
                self.wait(0.2)
                continue
            if api and not breaker.allow(self.clock()):
                # Uploads handed over just before the pause wait in the queue, not in hand.
                self._unclaim(self._drain_handoff())
                if breaker.take_probe(self.clock()):
                    self.probe()
                else:
                    self.wait(min(1.0, max(0.05, breaker.wait_hint(self.clock()))))
                continue
            self._lane(kinds)
            with self.wake:
                seen = self._generation[kinds]
                lost = self._lost.popleft() if self._lost else None
            if lost is not None:
                self._put_back(lost, StoreError("its outcome was not written"))
                continue
            try:
                job = self._handed(api) or self._claim(kinds)
            except StoreError as exc:
                log.warning("queue.claim_failed", error=str(exc))
                self.wait(1.0)
                continue
            if job is None:
                self.wait(self._idle_wait(kinds), kinds, seen)
                continue
            self.run(job)

    def _handed(self, api: bool) -> Job | None:
        """An upload a hash worker handed over, already claimed (API lane only), once the
        record that created it is on disk (the hash worker did not wait for it)."""
        handoff = self.ctx.handoff
        handed = handoff.take() if api and handoff is not None else None
        if handed is None:
            return None
        job, point = handed
        store = self.ctx.ledger.store
        try:
            store.wait_durable(point)
            if store.holds(job):
                return job
            error = "not on disk as handed over"
        except StoreError as exc:
            error = str(exc)
        # Lost with its batch: the file job goes back to the queue (on_lost) and links again.
        log.warning("queue.handoff_lost", job=job.id, error=error)
        return None

    def _lost_jobs(self, jobs: list[object]) -> None:
        """Outcomes recorded without waiting that never reached the disk: the jobs are
        in flight there as before; a worker puts them back (never writes from here)."""
        with self.wake:
            self._lost.extend(job for job in jobs if isinstance(job, Job))
            self.wake.notify_all()
            for lane, cond in self._lanes.items():
                self._generation[lane] += 1
                cond.notify_all()

    def _claim(self, kinds: tuple[JobKind, ...]) -> Job | None:
        """The lane's next job: one it claimed before, else a fresh claim of a few.

        The API lane claims, in the same record, uploads for the handoff's free places
        too (a burst: one wait for the disk for several intents); they wait there, not
        started, as a hash worker's handed-over uploads do.
        """
        local = self._claimed[kinds]
        with self.wake:
            if local:
                return local.popleft()
        # A file job's claim is not waited for (lost, it is a pending job again); an API
        # job's is: its intent must be on disk before the request goes out.
        api = any(kind in API_KINDS for kind in kinds)
        places = self._reserve_places() if api else 0
        try:
            store = self.ctx.ledger.store
            jobs = store.claim_batch(kinds, self._batch.get(kinds, 1) + places, durable=api)
            extra = []
            for job in jobs[1:]:
                if places and job.kind is JobKind.UPLOAD:
                    assert self.ctx.handoff is not None
                    self.ctx.handoff.put(job, store.last_record())
                    places -= 1
                else:
                    extra.append(job)
        finally:
            for _ in range(places):
                assert self.ctx.handoff is not None
                self.ctx.handoff.release()
        if extra:
            with self.wake:
                local.extend(extra)
                self._generation[kinds] += 1
                self._lanes[kinds].notify(len(extra))
        return jobs[0] if jobs else None

    def _reserve_places(self) -> int:
        """Places in the handoff for uploads claimed along with the next API job."""
        handoff = self.ctx.handoff
        places = 0
        while handoff is not None and places < handoff.size and handoff.reserve():
            places += 1
        return places

    def put_back(self) -> int:
        """On stop: jobs claimed (or handed over) but never started go back to the queue
        as they were before their claim (``_unclaim``)."""
        jobs = self._drain_handoff()
        with self.wake:
            for local in self._claimed.values():
                jobs.extend(local)
                local.clear()
        self._unclaim(jobs, reason="not started before the stop")
        return len(jobs)

    def _drain_handoff(self) -> list[Job]:
        return self.ctx.handoff.drain() if self.ctx.handoff is not None else []

    def _unclaim(self, jobs: list[Job], reason: str = "the API is paused") -> None:
        """Claimed jobs never started go back as they were before their claim: one attempt
        less; an upload's intent goes only if this was its first attempt (an earlier one
        set it and may have posted: the next attempt must still look first)."""
        store = self.ctx.ledger.store
        for job in jobs:
            unclaimed: dict[str, object] = {"attempt": job.attempt - 1}
            if job.kind is JobKind.UPLOAD and job.attempt <= 1:
                unclaimed["intent_at"] = None
            with contextlib.suppress(StaleAttempt, StoreError):  # else recovery does it
                store.transition(job, CLAIMABLE[job.kind], reason=reason, **unclaimed)

    def probe(self) -> None:
        """The one probe of an open circuit: a cheap request, never a job's upload.

        When the API answers, the circuit closes and every job that was waiting out an
        outage backoff is due at once, so work resumes within a probe interval.
        """
        ctx = self.ctx
        try:
            ctx.client.check_auth()
        except AuthError as exc:
            since = ctx.breaker.success()
            ctx.breaker.auth_rejected(self.clock(), str(exc))
            log.info("api.reachable", down_since=_iso(since), key="rejected")
            return
        except (TransientError, OutcomeUnknown) as exc:
            ctx.breaker.probe_failed(self.clock(), str(exc), getattr(exc, "retry_after", None))
            log.debug("api.probe_failed", error=str(exc))
            return
        except ApiError as exc:  # an answer of any other kind: the API is there again
            log.debug("api.probe_answered", error=type(exc).__name__)
        except BaseException:
            ctx.breaker.probe_failed(self.clock(), "the probe itself failed")
            raise
        since = ctx.breaker.success()
        try:
            resumed = ctx.ledger.resume_after_outage()
        except StoreError as exc:
            log.warning("api.resume_failed", error=str(exc))
            resumed = 0
        log.info("api.reachable", down_since=_iso(since), resumed=resumed)
        self.notify_all()

    def run(self, job: Job) -> None:
        api = job.kind in API_KINDS
        with self._busy_lock:
            self._busy += 1
            self._free_api -= api
            if api:
                self._last_api_start = self.clock()
        try:
            self.flows[job.kind].run(job)
        except StaleAttempt as exc:
            log.warning("job.stale", job=job.id, detail=str(exc))
        except StoreError as exc:
            self._put_back(job, exc)
        except Exception as exc:
            log.exception("job.crashed", job=job.id, kind=str(job.kind))
            with contextlib.suppress(Exception):
                reason = f"internal error: {type(exc).__name__}"
                self.ctx.ledger.retry_later(job, CRASH_RETRY_SECONDS, reason)
        finally:
            with self._busy_lock:
                self._busy -= 1
                self._free_api += api

    def _put_back(self, job: Job, error: StoreError) -> None:
        """The job's outcome could not be written: return it to the queue once we can.

        Left in flight it would wait for the next start. This worker holds it until the
        store takes writes again (a full disk freed); an upload whose POST got through is
        then found by the reconcile step, not sent again. A stop leaves it to recovery.
        """
        log.error("job.not_recorded", job=job.id, kind=str(job.kind), error=str(error))
        while not self.stopping.is_set():
            try:
                self.ctx.ledger.retry_later(job, 0.0, f"state database: {error}")
            except StaleAttempt:
                return
            except StoreError:
                self.wait(STORE_RETRY_SECONDS)
            else:
                return

    def _idle_wait(self, kinds: tuple[JobKind, ...]) -> float:
        """Sleep until the next job of these kinds is due (at most a second)."""
        try:
            due = self.ctx.ledger.store.next_due(kinds)
        except StoreError:
            return 1.0
        if due is None:
            return 1.0
        return min(1.0, max(0.01, due - self.clock()))


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).isoformat()
