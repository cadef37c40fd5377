"""Group commit: the records of many threads, one transaction and one fsync per batch.

One connection writes for the whole process. A thread with a record to write (a claim,
an outcome, a batch of events) takes its turn on that connection, runs its statements
inside a ``SAVEPOINT`` of the open transaction (a record that fails rolls back to its
savepoint, and only it), and then, as a rule, waits until its record is durable.

One thread at a time leads a commit: it commits everything recorded so far (``COMMIT``
writes the batch to the WAL) and, with the turn given back so the next batch can be
written meanwhile, makes it durable (``sync``: an fdatasync of the WAL). Records that
arrive during that sync wait for the next leader. When the process is busy (the commit
before had ``siblings`` records waiting for it), a leader waits for company first: a
commit starts no sooner than ``gap`` seconds after the one before, unless ``siblings``
records wait for it (as PostgreSQL's ``commit_delay`` with ``commit_siblings``). A lone
writer (one file arriving, an operator's command) commits at once: waiting would only
add its latency.

A record may also not wait (``durable=False``): its writer goes on, and a later commit
(of a record that waits, or of the flusher, within ``flush_after`` seconds) makes it
durable. Records are committed in the order they were written, so a record that waits
covers every record written before it: whoever acts outside the process (a POST, a
DELETE) waits for a record of its own first. If a batch is lost (a full disk), the
``lost`` tokens of its records that did not wait go to ``on_lost``.

Nothing here knows the schema; sqlite errors leave as they are (the store translates).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

#: How many failed batches are remembered for their waiters (a handed-over job may ask
#: a while after its batch; the workers also check the job itself on disk).
_FAILED_KEPT = 4096
#: A commit starts no sooner than this after the one before (unless enough records wait).
COMMIT_GAP = 0.015
#: ... as soon as this many records wait for it.
COMMIT_SIBLINGS = 2
#: Records no one waits for are committed within this (when no waiting record came).
FLUSH_AFTER = 0.2


class GroupCommit:
    """The process's write connection, with its turns and its batches."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        after_commit: Callable[[list[Any]], None],
        *,
        sync: Callable[[], None] | None = None,
        on_lost: Callable[[list[Any]], None] | None = None,
        gap: float = COMMIT_GAP,
        siblings: int = COMMIT_SIBLINGS,
        flush_after: float = FLUSH_AFTER,
    ) -> None:
        self._connect = connect
        self._after_commit = after_commit
        self._sync = sync
        self._on_lost = on_lost or (lambda _lost: None)
        self._gap, self._siblings, self._flush_after = gap, siblings, flush_after
        self._conn: sqlite3.Connection | None = None
        self._turn_lock = threading.RLock()
        self._depth = 0
        # One lock, three conditions, so a wake-up reaches only who it is for: the
        # waiters for a batch (``_cv``), a leader waiting for company (``_company``), the
        # flusher (``_flush_cv``). A record that does not wait wakes at most those two.
        lock = threading.RLock()
        self._cv = threading.Condition(lock)
        self._company = threading.Condition(lock)
        self._flush_cv = threading.Condition(lock)
        self._open = False
        self._members = 0
        self._notes: list[Any] = []
        self._lost: list[Any] = []
        self._batch = 0
        self._durable = 0
        self._leading = False
        self._waiting = 0
        self._last_start = 0.0
        self._last_company = 0  # records that waited for the commit before
        self._unwaited = 0  # the latest batch holding a record no one waits for
        self._failed: dict[int, BaseException] = {}
        self._local = threading.local()
        self._flusher: threading.Thread | None = None
        self._flusher_idle = False  # waiting for a record no one waits for
        self._closing = False
        #: Transactions committed, and records written (for the benchmarks).
        self.commits = 0
        self.records = 0

    def connection(self) -> sqlite3.Connection:
        """The write connection (opened on first use); only to be used during a turn."""
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
        """Commit what is recorded (records that did not wait), then close."""
        with self._cv:
            self._closing = True
            self._notify_all()
        with contextlib.suppress(sqlite3.Error):
            self.flush()
        if self._flusher is not None:
            self._flusher.join(5)
            self._flusher = None
        with self._turn():
            if self._conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    self._conn.close()
                self._conn = None
                self._open = False

    @contextlib.contextmanager
    def _turn(self) -> Iterator[int]:
        """The connection, to this thread alone; re-entrant."""
        with self._turn_lock:
            self._depth += 1
            try:
                yield self._depth
            finally:
                self._depth -= 1

    @contextlib.contextmanager
    def record(
        self, note: Any = None, *, durable: bool = True, lost: Any = None
    ) -> Iterator[sqlite3.Connection]:
        """One record: its statements in the open batch; returns once it is durable.

        ``note`` is handed to ``after_commit`` with the other notes of its batch once the
        batch is on disk. A nested record is part of the one around it. With ``durable``
        false it returns at once (see the module's docstring); ``lost`` is what
        ``on_lost`` gets if its batch never reaches the disk.
        """
        with self._turn() as depth:
            conn = self.connection()
            if not self._open:
                conn.execute("BEGIN IMMEDIATE")
                self._open, self._members = True, 0
                self._batch += 1
            batch, savepoint = self._batch, f"record{depth}"
            conn.execute(f"SAVEPOINT {savepoint}")
            try:
                yield conn
                conn.execute(f"RELEASE {savepoint}")
            except BaseException as exc:
                self._undo(conn, savepoint, batch if depth == 1 else None, exc)
                raise
            if depth > 1:
                return
            self._members += 1
            self.records += 1
            self._local.batch = batch
            if note is not None:
                self._notes.append(note)
            if not durable:
                if lost is not None:
                    self._lost.append(lost)
                self._unwaited_in(batch)
        if durable:
            self.wait(batch)

    def last_record(self) -> int:
        """The batch of this thread's latest record (for ``wait``)."""
        return int(getattr(self._local, "batch", 0))

    def latest(self) -> int:
        """The latest batch: waiting for it makes everything recorded so far durable."""
        with self._cv:
            return self._batch

    def flush(self) -> None:
        """Make everything recorded so far durable."""
        self.wait(self.latest())

    def _unwaited_in(self, batch: int) -> None:
        """A record no one waits for: the flusher commits it if no one else does."""
        with self._cv:
            self._unwaited = batch
            if self._flusher is None and not self._closing:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name="syncd-flusher", daemon=True
                )
                self._flusher.start()
            if self._flusher_idle:  # else it is already timing a flush, or about to
                self._flush_cv.notify()
            # A leader gathering company counts it again. (Not at each wait: a worker
            # with nothing to do waits for the latest batch, and would cut the gap short.)
            self._company.notify()

    def _flush_loop(self) -> None:
        while True:
            with self._cv:
                while self._settled(self._unwaited) and not self._closing:
                    self._flusher_idle = True
                    self._flush_cv.wait()
                    self._flusher_idle = False
                if self._closing:
                    return
                batch = self._unwaited
                self._flush_cv.wait_for(self._flushed_or_closing(batch), self._flush_after)
            with contextlib.suppress(Exception):  # a lost batch is told to on_lost
                self.wait(batch)

    def _flushed_or_closing(self, batch: int) -> Callable[[], bool]:
        return lambda: self._settled(batch) or self._closing

    def _undo(
        self, conn: sqlite3.Connection, savepoint: str, batch: int | None, exc: BaseException
    ) -> None:
        """Roll one record back; the batch's others stand (unless SQLite lost them all).

        ``batch`` is None for a nested record: the one around it decides the rest.
        """
        with contextlib.suppress(sqlite3.Error):
            conn.execute(f"ROLLBACK TO {savepoint}")
            conn.execute(f"RELEASE {savepoint}")
        if batch is None or (conn.in_transaction and self._members):
            return
        if conn.in_transaction:  # nothing else in it: do not hold the database's write lock
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        elif self._members:
            self._fail(batch, exc)  # SQLite rolled the whole transaction back (full disk...)
            if self._lost:
                self._on_lost(self._lost)
        self._open = False
        self._notes, self._lost = [], []

    def _fail(self, batch: int, exc: BaseException) -> None:
        """A batch lost (under ``_cv``, or taking it): its waiters raise ``exc``. The
        durable mark does not move: an earlier batch may still be on its way to the disk."""
        with self._cv:
            self._failed[batch] = exc
            if len(self._failed) > _FAILED_KEPT:
                del self._failed[min(self._failed)]
            self._notify_all()

    def _settled(self, batch: int) -> bool:
        return self._durable >= batch or batch in self._failed

    def wait(self, batch: int) -> None:
        """Wait until ``batch`` is durable, leading its commit when no one else does.

        Raises the error that lost it, if it was lost.
        """
        with self._cv:
            self._waiting += 1
            try:
                while not self._settled(batch) and self._leading:
                    self._cv.wait()
                if self._settled(batch):
                    self._raise_failed(batch)
                    return
                self._leading = True
                self._gather()
            finally:
                self._waiting -= 1
        self._lead()
        with self._cv:
            self._raise_failed(batch)

    def _gather(self) -> None:
        """The leader's wait for company (under ``_cv``): see the module's docstring."""
        start = self._last_start + self._gap
        busy = self._last_company >= self._siblings
        while busy and self._waiting < self._siblings and not self._closing:
            left = start - time.monotonic()
            if left <= 0:
                break
            self._company.wait(left)
        self._last_start = time.monotonic()
        self._last_company = self._waiting

    def _lead(self) -> None:
        """Commit everything recorded so far, make it durable, tell who waits."""
        error: BaseException | None = None
        notes: list[Any] = []
        lost: list[Any] = []
        last, done, committed = self._batch, False, False
        try:
            with self._turn():
                last = self._batch
                if self._open:
                    notes, lost = self._notes, self._lost
                    self._open, self._notes, self._lost = False, [], []
                    error = self._commit()
                    committed = error is None
            if committed and self._sync is not None:
                self._sync()  # the turn is given back: the next batch is written meanwhile
            done = True
        except OSError as exc:
            error, done = sqlite3.OperationalError(f"disk I/O error: {exc}"), True
        finally:
            with self._cv:
                self._leading = False
                if error is not None or not done:  # not done: unexpected, and on its way up
                    self._fail(last, error or sqlite3.OperationalError("commit interrupted"))
                else:
                    self._durable = max(self._durable, last)
                self._notify_all()
        if error is not None:
            if lost:
                self._on_lost(lost)
        elif notes:
            self._after_commit(notes)

    def _commit(self) -> sqlite3.Error | None:
        """COMMIT the open transaction (during a turn); on failure roll it back."""
        conn = self.connection()
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            return exc
        self.commits += 1
        return None

    def _notify_all(self) -> None:
        """Under ``_cv``: a batch settled, or the end: every waiter looks again."""
        self._cv.notify_all()
        self._company.notify_all()
        self._flush_cv.notify_all()

    def _raise_failed(self, batch: int) -> None:
        error = self._failed.get(batch)
        if error is not None:
            raise error
