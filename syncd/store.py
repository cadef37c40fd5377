"""The state database: connections, the lock, migrations, and every job transition.

SQLite in WAL mode with ``synchronous=FULL`` and a busy timeout; every write is one
record of a group commit (:mod:`syncd.groupcommit`), so an event, a claim or a job's
outcome is either all on disk or not at all, and on disk before its writer goes on. One
connection writes; each thread gets its own connection for reads. Only this module (and
``ledger``, which builds on it) sees sqlite.

Every job state change goes through :meth:`Store.move`, which checks the move against
``model.TRANSITIONS`` and against the attempt that claimed the job.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields as dataclass_fields
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.errors import (
    InvalidTransition,
    StaleAttempt,
    StoreCorrupt,
    StoreError,
    StoreFull,
    StoreLocked,
)
from syncd.groupcommit import GroupCommit
from syncd.model import (
    CLAIMABLE,
    IN_FLIGHT,
    INITIAL,
    LATE_POST,
    RECOVERY,
    FileStat,
    Job,
    JobKind,
    JobState,
    TrackedFile,
    allowed,
)
from syncd.plan import Seen, Segment
from syncd.schema import APPLICATION_ID, FUNCTIONS, MIGRATIONS, SCHEMA_VERSION, SHA_TYPE, sha_hex

if TYPE_CHECKING:
    import sqlite_utils

BUSY_TIMEOUT_MS = 15_000
#: A file job whose path another file job is hashing waits: one look at a path at a time.
_PATH_FREE = (
    " AND NOT EXISTS (SELECT 1 FROM jobs AS other WHERE other.kind = 'file'"
    " AND other.state = 'hashing' AND other.folder = jobs.folder"
    " AND other.relpath = jobs.relpath)"
)
#: The hot queries, one (kind, state) at a time so each is a seek in ``jobs_claim``
#: (never an OR over kinds, which SQLite answers by reading every pending row). The kind
#: is written into the text, not bound: SQLite compiles a statement that binds the kind
#: again at every run, as the value might make the partial index ``jobs_path`` usable.
CLAIM_SQL = {
    kind: f"SELECT * FROM jobs WHERE kind = '{kind}' AND state = ? AND not_before <= ?"  # noqa: S608
    + (_PATH_FREE if kind is JobKind.FILE else "")
    + " ORDER BY not_before, id LIMIT 1"
    for kind in JobKind
}
NEXT_DUE_SQL = {
    kind: f"SELECT min(not_before) FROM jobs WHERE kind = '{kind}' AND state = ?"  # noqa: S608
    for kind in JobKind
}
#: A job's columns as it is inserted, in the order of its values; one job's insert gives
#: the row back (``Store.new_job``).
_JOB_COLUMNS = (
    "kind, state, attempt, folder, relpath, asset_key, not_before, reason, created_at,"
    " updated_at, detail, intent_at"
)
_JOB_MARKS = ", ".join("?" * len(_JOB_COLUMNS.split(",")))
INSERT_JOB_SQL = f"INSERT INTO jobs ({_JOB_COLUMNS}) VALUES ({_JOB_MARKS}) RETURNING *"  # noqa: S608
#: A batch of paths' live file jobs (pending or failed: what a new change of the path
#: supersedes or joins), one seek in ``jobs_path`` per path. The index is named: on a
#: long queue SQLite would take ``jobs_claim`` for the ``IN`` list, and read every
#: pending job.
LIVE_FILE_JOBS_SQL = (
    "SELECT * FROM jobs INDEXED BY jobs_path WHERE kind = 'file' AND folder = ?"
    " AND relpath IN ({marks}) AND state IN ('pending', 'failed')"
)
#: Pending file jobs for a batch of paths (a JSON array) in one statement: one step of
#: SQLite for the batch, not one per row as ``executemany`` takes.
NEW_FILE_JOBS_SQL = (
    f"INSERT INTO jobs ({_JOB_COLUMNS})"  # noqa: S608 (constant columns)
    " SELECT 'file', ?, 0, ?, value, NULL, ?, NULL, ?, ?, ?, NULL FROM json_each(?)"
)
#: Paths per query of :meth:`Store.live_file_jobs` (SQLite takes 32,766 parameters).
LIVE_CHUNK = 500
Row = dict[str, Any]
Conn = sqlite3.Connection
#: Content hashes are read back as hex on every connection of the store (PARSE_DECLTYPES).
sqlite3.register_converter(SHA_TYPE, sha_hex)


def tracked_range_sql(columns: str, *, bounded: bool) -> str:
    """The rescan's one query: a folder's files with ``lo <= relpath (< hi)`` in relpath
    order, each row ``relpath`` then ``columns``: as it comes, it compares with what the
    walk saw (:data:`syncd.plan.Seen`)."""
    upper = " AND relpath < ?" if bounded else ""
    return (
        f"SELECT relpath, {columns} FROM files"  # noqa: S608 (constant columns)
        f" WHERE folder = ? AND relpath >= ?{upper} ORDER BY relpath LIMIT ?"
    )


#: What tells whether a file changed, in :data:`syncd.plan.Seen` order (after the name).
_SEEN_COLUMNS = "size, mtime_ns, inode"
_FILE_COLUMNS = "size, mtime_ns, inode, dev, sha256, asset_key, problem"


def _translate(exc: sqlite3.Error, path: Path | None = None) -> StoreError:
    text = str(exc)
    if "disk is full" in text or "database or disk is full" in text:
        return StoreFull(f"state database: the disk is full ({text}); nothing was lost")
    if "not a database" in text or "malformed" in text:
        return StoreCorrupt(
            f"state database {path or ''} is damaged or not a database ({text}); it was left "
            "untouched: move it aside to start afresh, or restore a backup"
        )
    if "locked" in text or "busy" in text:
        return StoreLocked(f"state database busy: {text}")
    return StoreError(f"state database error: {text}")


def row_to_job(row: Row) -> Job:
    return Job(
        id=row["id"],
        kind=JobKind(row["kind"]),
        state=JobState(row["state"]),
        attempt=row["attempt"],
        folder=row["folder"],
        relpath=row["relpath"],
        asset_key=row["asset_key"],
        not_before=row["not_before"],
        reason=row["reason"],
        intent_at=row["intent_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        detail=json.loads(row["detail"] or "{}"),
    )


def row_to_file(row: Row) -> TrackedFile:
    stat = FileStat(row["size"], row["mtime_ns"], row["inode"], row["dev"])
    return TrackedFile(
        row["folder"], row["relpath"], stat, row["sha256"], row["asset_key"], row.get("problem")
    )


class Store:
    """One state database. ``Store.open`` takes the single-writer lock; readers don't."""

    def __init__(
        self, path: Path, *, clock: Callable[[], float] = time.time, readonly: bool = False
    ) -> None:
        self.path = path
        self.clock = clock
        self.readonly = readonly
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._group = GroupCommit(
            lambda: self._connect(shared=True),
            self._committed,
            sync=self._sync_wal,
            on_lost=self._lost,
        )
        self._lock_fd: int | None = None
        self._on_queued: list[Callable[[Mapping[JobKind, int]], None]] = []
        self._on_lost: list[Callable[[list[Any]], None]] = []
        self._wal_synced: tuple[int, int] | None = None
        self._own_sync = False

    # -- opening ---------------------------------------------------------------------

    @classmethod
    def open(
        cls, path: Path, *, clock: Callable[[], float] = time.time, lock: bool = True
    ) -> Store:
        """Open (creating and migrating as needed); ``lock`` refuses a second daemon.

        What it creates is the owner's only: the folder 0700, the database 0600 (SQLite
        gives its -wal and -shm files the database's mode). The library it describes
        and the folders it names are nobody else's business, when run by hand too.
        """
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
        store = cls(path, clock=clock)
        if lock:
            store._take_lock()
        try:
            store._check_identity()
            store.migrate()
        except sqlite3.Error as exc:
            store.close()
            raise _translate(exc, path) from None
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """For ``status``: never creates, migrates or locks anything."""
        if not path.exists():
            raise StoreError(f"no state database at {path} (has syncd run yet?)")
        store = cls(path, readonly=True)
        store._check_identity()
        return store

    def _take_lock(self) -> None:
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreLocked(
                f"another syncd is already using {self.path} (lock {lock_path}); "
                "stop it first, or give this one its own [state] path"
            ) from None
        self._lock_fd = fd

    def _check_identity(self) -> None:
        """Refuse a file that is not ours (never overwrite it)."""
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        try:
            # A read-only look of its own: opening for writing would switch the file to WAL.
            with contextlib.closing(sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)) as conn:
                app_id = conn.execute("PRAGMA application_id").fetchone()[0]
                tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise StoreCorrupt(
                f"{self.path} is not a usable SQLite database ({exc}); it was left "
                "untouched: move it aside to start afresh, or restore a backup"
            ) from None
        if app_id != APPLICATION_ID and (app_id != 0 or tables):
            raise StoreCorrupt(
                f"{self.path} is not a syncd state database (application_id {app_id:#x}); "
                "it was left untouched: point [state] path at another file"
            )

    def conn(self) -> sqlite3.Connection:
        """This thread's connection for reads, opened on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
        return conn

    def db(self, conn: sqlite3.Connection | None = None) -> sqlite_utils.Database:
        """sqlite-utils over this thread's connection (inside its transaction, if any).

        Imported here: no hot path uses it, and loading it would slow every start.
        """
        import sqlite_utils  # noqa: PLC0415

        return sqlite_utils.Database(
            conn or self.conn(), execute_plugins=False, recursive_triggers=False
        )

    def close(self) -> None:
        self._group.close()
        with self._conns_lock:
            for conn in self._conns:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._conns.clear()
        self._local = threading.local()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- transactions ----------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One record (a claim, an outcome, a batch of events), durable when this returns.

        Records of all threads are committed together (:mod:`syncd.groupcommit`): each in
        a savepoint of its own, so one that raises leaves the others alone; sqlite errors
        leave as StoreError. Inside ``record(durable=False)`` it does not wait.
        """
        unwaited = getattr(self._local, "unwaited", None)
        self._local.unwaited = None  # for this record only, not the ones nested in it
        nested = getattr(self._local, "queued", None)
        queued = nested if nested is not None else Counter[JobKind]()
        self._local.queued = queued
        try:
            note = queued if nested is None else None
            lost = unwaited[0] if unwaited is not None else None
            with self._group.record(note, durable=unwaited is None, lost=lost) as conn:
                yield conn
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        finally:
            if nested is None:
                self._local.queued = None

    def record(
        self, *, durable: bool = True, lost: Any = None
    ) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """``write()``, or (``durable=False``) a record that does not wait for the disk.

        Only for a record nothing outside the process acts on before a later record that
        waits (``wait_durable``); ``lost`` goes to the ``on_lost`` listeners if it never
        reaches the disk. Goes through ``write()`` all the same.
        """
        if durable:
            return self.write()
        return self._unwaited(lost)

    @contextlib.contextmanager
    def _unwaited(self, lost: Any) -> Iterator[sqlite3.Connection]:
        self._local.unwaited = (lost,)
        try:
            with self.write() as conn:
                yield conn
        finally:
            self._local.unwaited = None

    def last_record(self) -> int:
        """Where this thread's latest record stands in the commit order (for ``wait_durable``)."""
        return self._group.last_record()

    def wait_durable(self, point: int) -> None:
        """Return once the record at ``point`` (and every one before it) is on disk."""
        try:
            self._group.wait(point)
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None

    def on_lost(self, listener: Callable[[list[Any]], None]) -> None:
        """Call ``listener`` with the ``lost`` tokens of records that did not wait for the
        disk and never reached it (a commit failed). It runs while the write connection is
        held: it must not write (hand the tokens to a thread that will)."""
        self._on_lost.append(listener)

    def _lost(self, tokens: list[Any]) -> None:
        for listener in self._on_lost:
            listener(list(tokens))

    def _sync_wal(self) -> None:
        """Make the committed WAL durable (the write connection commits without a sync).

        The first time, and whenever the WAL is a new file, its directory entry too.
        """
        if not self._own_sync:
            return  # not in WAL mode: each COMMIT syncs (synchronous=FULL)
        wal = self.path.with_name(self.path.name + "-wal")
        fd = os.open(wal, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fdatasync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if self._wal_synced != (st.st_dev, st.st_ino):
            dfd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
            self._wal_synced = (st.st_dev, st.st_ino)

    def _committed(self, notes: list[Any]) -> None:
        """A batch is on disk: tell the listeners what it made claimable."""
        queued = sum(notes, Counter[JobKind]())
        if queued:
            for listener in self._on_queued:
                listener(queued)

    def _connect(self, *, shared: bool = False) -> sqlite3.Connection:
        uri = f"file:{self.path}?mode=ro" if self.readonly else f"file:{self.path}"
        conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=not shared,
            detect_types=sqlite3.PARSE_DECLTYPES,
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if not self.readonly:
            wal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
            # The write connection's COMMIT only writes the WAL; the group commit syncs it
            # (``_sync_wal``) after giving the connection back, so the next batch is
            # written while this one goes to the disk. Checkpoints still sync (NORMAL).
            own_sync = shared and wal
            conn.execute(f"PRAGMA synchronous={'NORMAL' if own_sync else 'FULL'}")
            if shared:
                self._own_sync = own_sync
        with self._conns_lock:
            self._conns.append(conn)
        return conn

    def writer(self) -> sqlite3.Connection:
        """The connection records are written on (for tracing; write through ``write()``)."""
        return self._group.connection()

    @property
    def commits(self) -> int:
        """Write transactions committed by this process (each one fsync)."""
        return self._group.commits

    def on_queued(self, listener: Callable[[Mapping[JobKind, int]], None]) -> None:
        """Call ``listener`` after each commit that made jobs claimable (count per kind).

        Called once the work is durable, outside the write lock: an idle worker woken by
        it finds the job at once instead of at its next timeout.
        """
        self._on_queued.append(listener)

    def _queued(self, kind: JobKind, count: int = 1) -> None:
        queued: Counter[JobKind] | None = getattr(self._local, "queued", None)
        if queued is not None and count:
            queued[kind] += count

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        try:
            # Plain sqlite3 here: sqlite-utils' query() wraps every read in a savepoint,
            # a cost the workers' many small reads would pay on every job.
            return [dict(r) for r in self.conn().execute(sql, params).fetchall()]
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None

    def migrate(self) -> int:
        """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found.

        A migration's SQL may call the Python functions of ``schema.FUNCTIONS`` (a
        digest, a hex decode), registered on the connection that migrates.
        """
        found = int(self.conn().execute("PRAGMA user_version").fetchone()[0])
        if found > SCHEMA_VERSION:
            raise StoreCorrupt(
                f"{self.path} has schema {found}, newer than this syncd ({SCHEMA_VERSION}); "
                "upgrade syncd"
            )
        for version in range(found, SCHEMA_VERSION):
            with self.write() as conn:
                for name, function in FUNCTIONS.items():
                    conn.create_function(name, 1, function, deterministic=True)
                for statement in MIGRATIONS[version]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={version + 1}")
        return found

    def schema_version(self) -> int:
        return int(self.conn().execute("PRAGMA user_version").fetchone()[0])

    # -- the state machine -----------------------------------------------------------

    def move(self, conn: sqlite3.Connection, job: Job, to: JobState, **fields: Any) -> Job:
        """The one place a job changes state; inside the caller's transaction."""
        if not allowed(job.kind, job.state, to):
            raise InvalidTransition(f"{job.kind} job {job.id}: {job.state} -> {to} is not allowed")
        now = self.clock()
        values: dict[str, Any] = {"state": str(to), "updated_at": now, **fields}
        if "detail" in values and not isinstance(values["detail"], str):
            values["detail"] = json.dumps(values["detail"])
        sets = ", ".join(f"{k} = ?" for k in values)
        cur = conn.execute(
            f"UPDATE jobs SET {sets} WHERE id = ? AND state = ? AND attempt = ?",  # noqa: S608
            [*values.values(), job.id, str(job.state), job.attempt],
        )
        if cur.rowcount != 1:
            raise StaleAttempt(
                f"{job.kind} job {job.id} attempt {job.attempt} is no longer {job.state}"
            )
        if to is CLAIMABLE[job.kind]:
            self._queued(job.kind)
        moved = {k: v for k, v in fields.items() if k in _JOB_FIELDS and k != "detail"}
        detail = fields.get("detail", job.detail)
        if isinstance(detail, str):
            detail = json.loads(detail)
        return replace(job, **moved, state=to, updated_at=now, detail=detail)

    def transition(self, job: Job, to: JobState, **fields: Any) -> Job:
        """Move one job in a transaction of its own."""
        with self.write() as conn:
            return self.move(conn, job, to, **fields)

    def new_job(
        self,
        conn: sqlite3.Connection,
        kind: JobKind,
        folder: str,
        *,
        relpath: str | None = None,
        asset_key: str | None = None,
        not_before: float = 0.0,
        state: JobState | None = None,
        reason: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> Job:
        """Insert a job in its kind's initial state (or ``held`` for a delete); the job
        as inserted (one statement: ``RETURNING``).

        ``state`` may also be the kind's in-flight state: the job is then claimed by its
        creator (attempt 1; for an upload, its intent set), as a claim would leave it.
        """
        start = INITIAL[kind] if state is None else state
        if start != INITIAL[kind] and not allowed(kind, INITIAL[kind], start):
            raise InvalidTransition(f"a {kind} job cannot start as {start}")
        now = self.clock()
        claimed = start is IN_FLIGHT[kind]
        intent = now if claimed and kind is JobKind.UPLOAD else None
        row = conn.execute(
            INSERT_JOB_SQL,
            (str(kind), str(start), int(claimed), folder, relpath, asset_key, not_before, reason,
             now, now, json.dumps(detail or {}), intent),
        ).fetchone()  # fmt: skip
        if start is CLAIMABLE[kind]:
            self._queued(kind)
        return row_to_job(dict(row))

    def new_file_jobs(
        self,
        conn: sqlite3.Connection,
        folder: str,
        relpaths: Sequence[str],
        *,
        not_before: float,
        detail: dict[str, Any] | None = None,
    ) -> int:
        """Insert pending file jobs for many paths in one statement (a scan's findings)."""
        now = self.clock()
        state, text = str(INITIAL[JobKind.FILE]), json.dumps(detail or {})
        paths = json.dumps(list(relpaths), ensure_ascii=False)
        conn.execute(NEW_FILE_JOBS_SQL, (state, folder, not_before, now, now, text, paths))
        self._queued(JobKind.FILE, len(relpaths))
        return len(relpaths)

    def live_file_jobs(
        self, conn: sqlite3.Connection, folder: str, relpaths: Sequence[str]
    ) -> dict[str, list[Job]]:
        """The pending and failed file jobs of these paths, by path (most have none), in
        one statement per LIVE_CHUNK paths; each path's jobs in the order they were made."""
        live: dict[str, list[Job]] = {}
        for i in range(0, len(relpaths), LIVE_CHUNK):
            chunk = relpaths[i : i + LIVE_CHUNK]
            sql = LIVE_FILE_JOBS_SQL.format(marks=",".join("?" * len(chunk)))
            for row in conn.execute(sql, (folder, *chunk)):
                job = row_to_job(dict(row))
                live.setdefault(str(job.relpath), []).append(job)
        return live

    def jobs_where(self, conn: sqlite3.Connection, where: str, params: Sequence[Any]) -> list[Job]:
        rows = conn.execute(f"SELECT * FROM jobs WHERE {where}", params).fetchall()  # noqa: S608
        return [row_to_job(dict(r)) for r in rows]

    def claim(self, kinds: Sequence[JobKind], now: float | None = None) -> Job | None:
        """Take the next due job of these kinds: its in-flight state, ``attempt + 1``."""
        jobs = self.claim_batch(kinds, 1, now)
        return jobs[0] if jobs else None

    def claim_batch(
        self,
        kinds: Sequence[JobKind],
        limit: int,
        now: float | None = None,
        *,
        durable: bool = True,
    ) -> list[Job]:
        """Take up to ``limit`` due jobs of these kinds, earliest first, in one record.

        Each is looked for after the ones before it are moved (in the same transaction),
        so two file jobs of one path are never taken together. ``durable=False`` only for
        claims nothing outside acts on (file jobs: a claim lost is a pending job again).
        """
        now = self.clock() if now is None else now
        # A look without the write lock first: an idle worker's empty claim (most claims,
        # when workers outnumber due jobs) then never queues behind the writers.
        if not any(self._due(self.conn(), kind, now) for kind in kinds):
            # Nothing to do: first make durable what was recorded without waiting, so an
            # idle process has it on disk and its reads see it (a lost batch: on_lost).
            with contextlib.suppress(StoreError):
                self.wait_durable(self._group.latest())
            return []
        taken: list[Job] = []
        with self.record(durable=durable) as conn:
            while len(taken) < limit:
                due = [job for kind in kinds if (job := self._due(conn, kind, now)) is not None]
                if not due:
                    break
                job = min(due, key=lambda j: (j.not_before, j.id))
                fields: dict[str, Any] = {"attempt": job.attempt + 1}
                if job.kind is JobKind.UPLOAD:
                    # The intent: from here a POST may go out; a later attempt reconciles first.
                    fields["intent_at"] = job.intent_at or now
                taken.append(self.move(conn, job, IN_FLIGHT[job.kind], **fields))
        return taken

    @staticmethod
    def _due(conn: sqlite3.Connection, kind: JobKind, now: float) -> Job | None:
        """The earliest due job of one kind (a file job waits while its path is hashed)."""
        row = conn.execute(CLAIM_SQL[kind], (str(CLAIMABLE[kind]), now)).fetchone()
        return row_to_job(dict(row)) if row is not None else None

    def holds(self, job: Job) -> bool:
        """Whether the committed state has this job as this copy says (state, attempt)."""
        sql = "SELECT 1 FROM jobs WHERE id = ? AND state = ? AND attempt = ?"
        row = self.conn().execute(sql, (job.id, str(job.state), job.attempt)).fetchone()
        return row is not None

    def next_due(self, kinds: Sequence[JobKind]) -> float | None:
        """When the earliest claimable job of these kinds becomes due."""
        times = [
            row[0]
            for kind in kinds
            for row in self.conn().execute(NEXT_DUE_SQL[kind], (str(CLAIMABLE[kind]),))
            if row[0] is not None
        ]
        return float(min(times)) if times else None

    def recover(self) -> int:
        """After a crash: in-flight jobs fall back to where they can be claimed again."""
        with self.write() as conn:
            states = [str(s) for s in RECOVERY]
            marks = ",".join("?" * len(states))
            jobs = self.jobs_where(conn, f"state IN ({marks})", states)
            for job in jobs:
                # An upload cut off mid-POST may still be stored, late, like a timed-out one.
                late = (
                    {"detail": {**job.detail, LATE_POST: True}}
                    if job.kind is JobKind.UPLOAD
                    else {}
                )
                self.move(conn, job, RECOVERY[job.state], reason="interrupted; resumed", **late)
        return len(jobs)

    # -- tracked files ---------------------------------------------------------------

    def get_file(self, folder: str, relpath: str) -> TrackedFile | None:
        rows = self.query("SELECT * FROM files WHERE folder = ? AND relpath = ?", (folder, relpath))
        return row_to_file(rows[0]) if rows else None

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Row]:
        """Rows of a read, streamed in batches from one consistent snapshot.

        Runs on a connection of its own, inside one read transaction, so a long read
        (a scan, a verification) sees one state while the workers write elsewhere.
        """
        return (dict(zip(names, row, strict=True)) for names, row in self._stream(sql, params))

    def _snapshot(self) -> sqlite3.Connection:
        """A read-only connection of its own, inside a read transaction: one state to read
        however long the reading takes, while the workers write elsewhere."""
        conn = sqlite3.connect(
            f"file:{self.path}?mode=ro",
            uri=True,
            isolation_level=None,
            detect_types=sqlite3.PARSE_DECLTYPES,
        )
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(exc, self.path) from None
        return conn

    def _stream(
        self, sql: str, params: Sequence[Any]
    ) -> Iterator[tuple[list[str], tuple[Any, ...]]]:
        """Plain tuples (and the column names) of a streamed read: no object per row."""
        conn = self._snapshot()
        try:
            cur = conn.execute(sql, params)
            names = [d[0] for d in cur.description]
            while rows := cur.fetchmany(1000):
                for row in rows:
                    yield names, row
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        finally:
            conn.close()

    @contextlib.contextmanager
    def tracked(self, folder: str) -> Iterator[Tracked]:
        """A folder's tracked files by relpath range, all read from one snapshot.

        On a connection of its own, inside one read transaction, so a rescan compares
        the whole walk with one state while the workers write elsewhere.
        """
        conn = self._snapshot()
        try:
            yield Tracked(conn, folder, self.path)
        finally:
            conn.close()

    def find_moved(self, folder: str, stat: FileStat) -> TrackedFile | None:
        """A tracked file with this inode, size and mtime: a candidate for a move."""
        rows = self.query(
            "SELECT * FROM files WHERE inode = ? AND folder = ? AND size = ? AND mtime_ns = ?"
            " AND sha256 IS NOT NULL LIMIT 5",
            (stat.inode, folder, stat.size, stat.mtime_ns),
        )
        return next((row_to_file(r) for r in rows if r["dev"] in (0, stat.dev)), None)

    def tracks_several(self, folder: str) -> bool:
        """Whether two or more files of this folder are tracked (cheap at any size)."""
        return bool(self.query("SELECT 1 FROM files WHERE folder = ? LIMIT 1 OFFSET 1", (folder,)))

    def set_meta(self, key: str, value: str | None) -> None:
        with self.write() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )

    def get_meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def folder_row(self, key: str) -> Row | None:
        rows = self.query("SELECT * FROM folders WHERE key = ?", (key,))
        return rows[0] if rows else None

    def set_folder(self, key: str, **fields: Any) -> None:
        # Column names come from code, never from input; still, only plain names pass.
        if not all(name.isidentifier() for name in fields):
            raise ValueError(f"not a folder column: {sorted(fields)}")
        names = ["key", *fields]
        updates = ", ".join(f"{n} = excluded.{n}" for n in fields) or "key = excluded.key"
        sql = (
            f"INSERT INTO folders ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608
            f" ON CONFLICT (key) DO UPDATE SET {updates}"
        )
        with self.write() as conn:
            conn.execute(sql, [key, *fields.values()])


class Tracked:
    """What the store knows of one folder's files, range by range, from one read snapshot
    (a :class:`syncd.plan.TrackedSource`): plain tuples for the comparison, records only
    for the ranges that differ."""

    def __init__(self, conn: Conn, folder: str, path: Path) -> None:
        self._conn = conn
        self.folder = folder
        self._path = path

    def contents(self, segment: Segment, *, limit: int) -> list[Seen]:
        return self._rows(_SEEN_COLUMNS, segment, limit)

    def files(self, segment: Segment) -> dict[str, TrackedFile]:
        rows = self._rows(_FILE_COLUMNS, segment, -1)
        folder = self.folder
        return {r[0]: TrackedFile(folder, r[0], FileStat(*r[1:5]), r[5], r[6], r[7]) for r in rows}

    def _rows(self, columns: str, segment: Segment, limit: int) -> list[Any]:
        """Rows of the segment's range, ``limit`` at most (-1: all of them)."""
        params: tuple[Any, ...] = (self.folder, segment.lo)
        if segment.hi is not None:
            params += (segment.hi,)
        params += (limit,)
        sql = tracked_range_sql(columns, bounded=segment.hi is not None)
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, self._path) from None


_JOB_FIELDS = frozenset(f.name for f in dataclass_fields(Job))
