"""Group commit: the records of many threads, one transaction and one fsync per batch.

One connection writes for the whole process. A thread with a record to write (a claim,
an outcome, a batch of events) takes its turn on that connection (turns are served in
arrival order), runs its statements inside a ``SAVEPOINT`` of the open transaction (a
record that fails rolls back to its savepoint, and only it), and then waits until its
record is durable. The first record to finish while no commit runs commits the batch:
everything recorded up to that moment, including what arrived while the previous commit
was on its way to the disk, in one ``COMMIT`` (one fsync with ``synchronous=FULL``). No
thread goes on before its own record is on disk, as with a transaction of its own.

Nothing here knows the schema; sqlite errors leave as they are (the store translates).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from typing import Any

#: How many failed batches are remembered for their waiters (they ask within moments).
_FAILED_KEPT = 64


class GroupCommit:
    """The process's write connection, with its turns and its batches."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        after_commit: Callable[[list[Any]], None],
    ) -> None:
        self._connect = connect
        self._after_commit = after_commit
        self._conn: sqlite3.Connection | None = None
        self._cv = threading.Condition()
        self._next_ticket = 0
        self._serving = 0
        self._owner: int | None = None
        self._depth = 0
        self._open = False
        self._members = 0
        self._notes: list[Any] = []
        self._batch = 0
        self._durable = 0
        self._committing = False
        self._failed: dict[int, BaseException] = {}
        #: Transactions committed, and records written (for the benchmarks).
        self.commits = 0
        self.records = 0

    def connection(self) -> sqlite3.Connection:
        """The write connection (opened on first use); only to be used during a turn."""
        if self._conn is None:
            self._conn = self._connect()
        return self._conn

    def close(self) -> None:
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
        """The connection, to this thread alone, in arrival order; re-entrant."""
        me = threading.get_ident()
        with self._cv:
            if self._owner == me:
                self._depth += 1
            else:
                ticket = self._next_ticket
                self._next_ticket += 1
                while self._serving != ticket:
                    self._cv.wait()
                self._owner, self._depth = me, 1
            depth = self._depth
        try:
            yield depth
        finally:
            with self._cv:
                self._depth -= 1
                if self._depth == 0:
                    self._owner = None
                    self._serving += 1
                    self._cv.notify_all()

    @contextlib.contextmanager
    def record(self, note: Any = None) -> Iterator[sqlite3.Connection]:
        """One record: its statements in the open batch; returns once it is durable.

        ``note`` is handed to ``after_commit`` with the other notes of its batch once the
        batch is on disk. A nested record is part of the one around it.
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
            if note is not None:
                self._notes.append(note)
        self._await(batch)

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
        self._open = False
        self._notes = []

    def _fail(self, batch: int, exc: BaseException) -> None:
        with self._cv:
            self._failed[batch] = exc
            for old in [b for b in self._failed if b < batch - _FAILED_KEPT]:
                del self._failed[old]
            self._durable = max(self._durable, batch)
            self._cv.notify_all()

    def _await(self, batch: int) -> None:
        """Wait until ``batch`` is committed, committing it when no one else is."""
        with self._cv:
            while self._durable < batch and self._committing:
                self._cv.wait()
            if self._durable >= batch:
                self._raise_failed(batch)
                return
            self._committing = True
        notes = self._commit()
        if notes:
            self._after_commit(notes)
        with self._cv:
            self._raise_failed(batch)

    def _commit(self) -> list[Any]:
        """Commit everything recorded so far (after the turns already taken)."""
        error: BaseException | None = None
        notes: list[Any] = []
        with self._turn():
            last = self._batch
            if self._open:
                conn = self.connection()
                try:
                    conn.execute("COMMIT")
                    self.commits += 1
                    notes = self._notes
                except sqlite3.Error as exc:
                    error = exc
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                self._open, self._notes = False, []
        with self._cv:
            self._committing = False
            if error is not None:
                self._failed[last] = error
            self._durable = max(self._durable, last)
            self._cv.notify_all()
        return notes

    def _raise_failed(self, batch: int) -> None:
        error = self._failed.get(batch)
        if error is not None:
            raise error
