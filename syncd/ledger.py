"""What the store records when something happens: each method is one transaction.

The ledger keeps files, assets and jobs consistent with each other: a file linked to an
asset, an asset released when its last file goes, an upload's asset_id recorded in the
same transaction as the job's end. Job states change only through ``Store.move``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from syncd import plan
from syncd.admin import references
from syncd.config import FolderConfig
from syncd.model import (
    CLAIMABLE,
    EventKind,
    FileStat,
    FsEvent,
    Job,
    JobKind,
    JobState,
    RemoteAsset,
    asset_key,
    identity_tag,
)
from syncd.schema import sha_blob
from syncd.store import Conn, Store
from syncd.tags import asset_name

S = JobState
#: The reason a job carries while a rejected API key holds it back.
KEY_PAUSE = "paused: the API key is not accepted"


@dataclass(frozen=True, slots=True)
class Linked:
    """What linking a file to its asset did: ``queued`` an upload, or used an existing one.

    ``upload`` is the upload job when it was created already claimed (``handoff``).
    """

    key: str
    queued_upload: bool
    asset_id: str | None
    upload: Job | None = None


class Ledger:
    """Domain transactions over a :class:`Store`, with each folder's deletion policy.

    Reads and operator actions are :class:`~syncd.admin.Admin`'s; the two share a store.
    """

    #: How many files use an asset: the one count of references (:func:`admin.references`).
    _refcount = staticmethod(references)
    #: Takes a handed-over upload back if no API worker took it yet (the workers set it).
    unstarted: Callable[[int], bool] | None = None

    def __init__(self, store: Store, folders: Mapping[str, FolderConfig]) -> None:
        self.store = store
        self.folders = dict(folders)

    # -- events and enqueueing -------------------------------------------------------

    def record_events(self, events: Sequence[FsEvent]) -> list[tuple[str, str]]:
        """Record a batch of watcher events as jobs; return (folder, dir) subtrees to scan."""
        scans: list[tuple[str, str]] = []
        now = self.store.clock()
        with self.store.write() as conn:
            for event in plan.coalesce(events):
                scans.extend(self._apply_event(conn, event, now))
        return scans

    def _apply_event(self, conn: Conn, event: FsEvent, now: float) -> list[tuple[str, str]]:
        folder = self.folders.get(event.folder)
        if folder is None or event.kind in (EventKind.RESCAN, EventKind.ROOT_GONE):
            return []
        settle = now + folder.settle_seconds
        if event.is_dir:
            return self._apply_dir_event(conn, event)
        if event.kind is EventKind.MOVED and event.dest_relpath is not None:
            self._move_record(conn, event.folder, event.relpath, event.dest_relpath)
            self._enqueue(conn, event.folder, event.relpath, now)
            self._enqueue(conn, event.folder, event.dest_relpath, settle)
        else:
            # A deletion too waits out the settle time before it is confirmed: removing a
            # whole folder deletes its files one by one before the folder itself, and a
            # root that goes away meanwhile must be seen first (README, "Deletions").
            self._enqueue(conn, event.folder, event.relpath, settle)
        return []

    def _apply_dir_event(self, conn: Conn, event: FsEvent) -> list[tuple[str, str]]:
        if event.kind is EventKind.MOVED and event.dest_relpath is not None:
            moved = self._move_tree(conn, event.folder, event.relpath, event.dest_relpath)
            now = self.store.clock()
            for relpath in moved:
                self._enqueue(conn, event.folder, relpath, now)
            return [(event.folder, event.relpath), (event.folder, event.dest_relpath)]
        return [(event.folder, event.relpath)]

    def _move_record(self, conn: Conn, folder: str, src: str, dst: str) -> None:
        """A file renamed: its record follows it, so it is not read again."""
        if (
            src == dst
            or not conn.execute(
                "SELECT 1 FROM files WHERE folder = ? AND relpath = ?", (folder, src)
            ).fetchone()
        ):
            return
        old = conn.execute(
            "SELECT asset_key FROM files WHERE folder = ? AND relpath = ?", (folder, dst)
        ).fetchone()
        conn.execute("DELETE FROM files WHERE folder = ? AND relpath = ?", (folder, dst))
        conn.execute(
            "UPDATE files SET relpath = ? WHERE folder = ? AND relpath = ?", (dst, folder, src)
        )
        if old and old["asset_key"]:
            self._release(conn, folder, old["asset_key"])
        self._rename_unsent(conn, folder, dst)

    def _rename_unsent(self, conn: Conn, folder: str, dst: str) -> None:
        """A file renamed before its upload started is uploaded under its final name.

        Saved under a temporary name, then renamed: the asset must not be called
        ``tmpq1w2e3``. Once a POST may have gone out, the name stays (reconciliation
        matches on it); an asset that other files share keeps its name too.
        """
        row = conn.execute(
            "SELECT asset_key FROM files WHERE folder = ? AND relpath = ?", (folder, dst)
        ).fetchone()
        key = row["asset_key"] if row else None
        policy = self.folders.get(folder)
        if not key or self._refcount(conn, key) != 1 or (policy and policy.names == "follow"):
            return  # with "follow" the new name makes a new asset anyway
        started = self.store.jobs_where(
            conn,
            "kind = 'upload' AND asset_key = ? AND (state = 'uploading' OR intent_at IS NOT NULL)",
            (key,),
        )
        if not started or self._take_back(conn, started):
            conn.execute(
                "UPDATE assets SET name = ? WHERE key = ? AND asset_id IS NULL",
                (asset_name(dst), key),
            )

    def _take_back(self, conn: Conn, jobs: list[Job]) -> bool:
        """An upload handed to an API worker in memory but not taken yet has not started:
        taken back, it is pending again with no intent (True). Anything else may have sent."""
        if len(jobs) != 1 or jobs[0].state is not S.UPLOADING or jobs[0].attempt != 1:
            return False
        if self.unstarted is None or not self.unstarted(jobs[0].id):
            return False
        reason = "renamed before its upload started"
        self.store.move(conn, jobs[0], S.PENDING, attempt=0, intent_at=None, reason=reason)
        return True

    def _move_tree(self, conn: Conn, folder: str, src: str, dst: str) -> list[str]:
        """A directory renamed: move its records; their tags are looked at again."""
        rows = conn.execute(
            "SELECT relpath FROM files WHERE folder = ? AND relpath >= ? AND relpath < ?",
            (folder, src + "/", src + "0"),
        ).fetchall()
        moved = []
        for row in rows:
            new = dst + row["relpath"][len(src) :]
            self._move_record(conn, folder, row["relpath"], new)
            moved.append(new)
        return moved

    def enqueue_paths(
        self, folder: str, relpaths: Iterable[str], *, delay: float = 0.0, hold: bool = False
    ) -> int:
        """Queue file jobs for paths (a scan's findings), in one transaction.

        A scan queues up to a whole folder this way (a first start: every file), beside
        workers recording their outcomes: the paths' live jobs are looked up in one
        statement (an index seek per path, most finding none) and the new jobs inserted in
        one, so a batch holds the write connection for little more than SQLite's own work.
        """
        when = self.store.clock() + delay
        paths = list(dict.fromkeys(relpaths))
        detail = {"hold": True} if hold else None
        with self.store.write() as conn:
            live = self.store.live_file_jobs(conn, folder, paths)
            for relpath, jobs in live.items():
                self._enqueue_over(conn, jobs, folder, relpath, when, hold=hold)
            fresh = [p for p in paths if p not in live]
            self.store.new_file_jobs(conn, folder, fresh, not_before=when, detail=detail)
        return len(paths)

    def _enqueue(
        self, conn: Conn, folder: str, relpath: str, when: float, *, hold: bool = False
    ) -> None:
        """One live pending job per path: a newer event pushes its settle time out."""
        jobs = self.store.live_file_jobs(conn, folder, [relpath]).get(relpath, [])
        self._enqueue_over(conn, jobs, folder, relpath, when, hold=hold)

    def _enqueue_over(
        self, conn: Conn, jobs: list[Job], folder: str, relpath: str, when: float, *, hold: bool
    ) -> None:
        """Queue a path given its pending and failed file jobs (``_enqueue``'s rule).

        A pending job already due is left where it is in the queue: a scan that finds its
        path again (every path not yet hashed, when a second scan follows a first start
        closely) then costs a look, not a write per file.
        """
        now = self.store.clock()
        pending = [j for j in jobs if j.state is S.PENDING]
        for job in jobs:
            if job.state is S.FAILED:
                self.store.move(conn, job, S.CANCELLED, reason="superseded by a newer change")
        if pending:
            detail = {**pending[0].detail, **({"hold": True} if hold else {})}
            if detail == pending[0].detail and when <= max(pending[0].not_before, now):
                return  # queued, and due no later than this asks (a rescan's finding)
            conn.execute(
                "UPDATE jobs SET not_before = max(not_before, ?), detail = ? WHERE id = ?",
                (when, json.dumps(detail), pending[0].id),
            )
            return
        self.store.new_job(
            conn,
            JobKind.FILE,
            folder,
            relpath=relpath,
            not_before=when,
            detail={"hold": True} if hold else None,
        )

    # -- file job outcomes -----------------------------------------------------------

    def file_linked(
        self,
        job: Job,
        stat: FileStat,
        sha256: str,
        tags: tuple[str, ...],
        name: str,
        *,
        handoff: bool = False,
        durable: bool = True,
    ) -> Linked:
        """The file is hashed: record it against the asset of (content, tags).

        With ``handoff`` an upload it queues is created claimed, intent set, and returned
        for the caller to hand to an API worker in memory. ``durable=False``: the record
        is not waited for (whoever acts on it waits, ``Store.wait_durable``); if it is
        lost, the job goes to the store's ``on_lost`` listeners.
        """
        policy = self.folders.get(job.folder)
        key = asset_key(sha256, tags, name if policy and policy.names == "follow" else None)
        assert job.relpath is not None
        with self.store.record(durable=durable, lost=job) as conn:
            old = self._upsert_file(conn, job, stat, sha256=sha256, key=key, problem=None)
            self.store.move(conn, job, S.DONE, reason=None)
            asset = conn.execute(  # the asset's row, new or as it was, in one statement
                "INSERT INTO assets (key, sha256, tags, name) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (key) DO UPDATE SET key = key RETURNING *",
                (key, sha_blob(sha256), json.dumps(list(tags)), name),
            ).fetchone()
            # The asset's delete and upload jobs, in one look.
            jobs = self.store.jobs_where(
                conn, "asset_key = ? AND kind IN ('delete', 'upload')", (key,)
            )
            for other in jobs:
                if other.kind is JobKind.DELETE and other.state in (S.WAITING, S.HELD, S.FAILED):
                    self.store.move(conn, other, S.CANCELLED, reason="a file uses the asset again")
            if asset["asset_id"] is None and self._adopt_indexed(conn, key, asset):
                asset = conn.execute("SELECT * FROM assets WHERE key = ?", (key,)).fetchone()
            upload: Job | None = None
            queued = False
            if asset["asset_id"] is None and not any(
                j.kind is JobKind.UPLOAD and j.state in (S.PENDING, S.UPLOADING, S.FAILED)
                for j in jobs
            ):
                ask = _predates_rebuild(conn, stat)
                created = self.store.new_job(
                    conn,
                    JobKind.UPLOAD,
                    job.folder,
                    relpath=job.relpath,
                    asset_key=key,
                    state=S.UPLOADING if handoff else None,
                    detail={"ask_first": True} if ask else None,
                )
                queued = True
                upload = created if handoff else None
            if old and old != key:
                self._release(
                    conn, job.folder, old, hold=bool(job.detail.get("hold")), relpath=job.relpath
                )
        return Linked(key, queued, asset["asset_id"], upload)

    def _adopt_indexed(self, conn: Conn, key: str, asset: Any = None) -> str | None:
        """Take the asset_id of a library asset found by the index, instead of uploading.

        An index entry is used once: from then on the asset row speaks for it, and a
        later remote delete must not leave an entry pointing at an asset that is gone.
        ``asset``: the asset's row, when the caller has just read it.
        """
        index_key = _index_key(conn, key, asset)
        if index_key is None:
            return None  # the index knows no names: a name-bound asset is never adopted
        identity, tagset = index_key
        found = conn.execute(
            "SELECT asset_id FROM remote_index WHERE identity = ? AND tagset = ?",
            (identity, tagset),
        ).fetchone()
        if found is None:
            return None
        conn.execute(
            "UPDATE assets SET asset_id = ?, remote_status = 'indexed' WHERE key = ?",
            (found["asset_id"], key),
        )
        conn.execute(
            "DELETE FROM remote_index WHERE identity = ? AND tagset = ?", (identity, tagset)
        )
        return str(found["asset_id"])

    def upload_from_index(self, job: Job, asset: Any = None) -> str | None:
        """End an upload job whose asset the library index already holds; its asset_id.
        ``asset``: the asset's row, when the caller has just read it."""
        assert job.asset_key is not None
        index_key = _index_key(self.store.conn(), job.asset_key, asset)
        if index_key is None or not self.store.query(
            "SELECT 1 FROM remote_index WHERE identity = ? AND tagset = ?", index_key
        ):
            return None  # the usual case: no write transaction for nothing
        with self.store.write() as conn:
            asset_id = self._adopt_indexed(conn, job.asset_key)
            if asset_id is None:
                return None
            self.store.move(conn, job, S.DONE, reason="found in the library")
            self._release(conn, job.folder, job.asset_key)
        return asset_id

    def posted_before(self, job: Job) -> bool:
        """Whether this upload's outcome may be unknown: then the library is asked first.

        So: a later attempt of this job; a file that was there when a rebuild read the
        library and found nothing for it (the read may have missed it); or an earlier job
        for the same (content, tags) that may have sent a POST and never learned what came
        of it (cancelled, or failed after more than one attempt). A job that finished with
        its asset recorded, or was refused on its only attempt, leaves nothing unknown:
        a folder renamed away and back uploads again without asking.
        """
        if job.attempt > 1 or job.detail.get("ask_first"):
            return True
        rows = self.store.query(
            "SELECT 1 FROM jobs WHERE kind = 'upload' AND asset_key = ? AND id != ?"
            " AND intent_at IS NOT NULL AND state != 'done'"
            " AND NOT (state = 'failed' AND attempt <= 1) LIMIT 1",
            (job.asset_key, job.id),
        )
        return bool(rows)

    def remember_remote(
        self, found: Iterable[tuple[str, tuple[str, ...], str, str]]
    ) -> list[tuple[str, str]]:
        """Record library assets (identity tag, folder tags, asset_id, created_at) in one
        transaction; return (copy, kept) for second copies of one (content, tags): the
        oldest is kept.
        """
        copies: list[tuple[str, str]] = []
        with self.store.write() as conn:
            for identity, tags, asset_id, created in found:
                tagset = json.dumps(sorted(set(tags)))
                known = conn.execute(
                    "SELECT asset_id, created_at FROM remote_index"
                    " WHERE identity = ? AND tagset = ?",
                    (identity, tagset),
                ).fetchone()
                if known is not None and known["asset_id"] != asset_id:
                    older = (known["created_at"], known["asset_id"]) <= (created, asset_id)
                    pair = (asset_id, known["asset_id"]) if older else (known["asset_id"], asset_id)
                    copies.append(pair)
                    if older:
                        continue
                conn.execute(
                    "INSERT OR REPLACE INTO remote_index (identity, tagset, asset_id, created_at)"
                    " VALUES (?, ?, ?, ?)",
                    (identity, tagset, asset_id, created),
                )
        return copies

    def file_failed(self, job: Job, stat: FileStat | None, sha256: str | None, reason: str) -> None:
        """A file that cannot be uploaded: remembered with its problem, not read again."""
        assert job.relpath is not None
        with self.store.write() as conn:
            old = None
            if stat is not None:
                old = self._upsert_file(conn, job, stat, sha256=sha256, key=None, problem=reason)
            self.store.move(conn, job, S.FAILED, reason=reason)
            if old:
                self._release(conn, job.folder, old, relpath=job.relpath)

    def file_set_aside(self, job: Job, stat: FileStat, reason: str) -> None:
        """A file syncd leaves alone by design (camera raw): remembered, not a failure."""
        with self.store.write() as conn:
            old = self._upsert_file(conn, job, stat, sha256=None, key=None, problem=reason)
            self.store.move(conn, job, S.CANCELLED, reason=reason)
            if old:
                self._release(conn, job.folder, old)

    def file_gone(self, job: Job) -> bool:
        """The path is gone: untrack it and release its asset. True if it was tracked."""
        assert job.relpath is not None
        with self.store.write() as conn:
            row = conn.execute(
                "SELECT asset_key FROM files WHERE folder = ? AND relpath = ?",
                (job.folder, job.relpath),
            ).fetchone()
            conn.execute(
                "DELETE FROM files WHERE folder = ? AND relpath = ?", (job.folder, job.relpath)
            )
            self.store.move(conn, job, S.DONE, reason="gone")
            if row and row["asset_key"]:
                self._release(
                    conn,
                    job.folder,
                    row["asset_key"],
                    hold=bool(job.detail.get("hold")),
                    relpath=job.relpath,
                )
        return row is not None

    def file_forget(self, job: Job, reason: str) -> None:
        """Stop tracking a path without releasing its asset (it became excluded)."""
        with self.store.write() as conn:
            conn.execute(
                "DELETE FROM files WHERE folder = ? AND relpath = ?", (job.folder, job.relpath)
            )
            self.store.move(conn, job, S.CANCELLED, reason=reason)

    def _upsert_file(
        self,
        conn: Conn,
        job: Job,
        stat: FileStat,
        *,
        sha256: str | None,
        key: str | None,
        problem: str | None,
    ) -> str | None:
        """Write a file's record; return the asset key it had before."""
        folder, relpath = job.folder, job.relpath
        row = conn.execute(
            "SELECT asset_key FROM files WHERE folder = ? AND relpath = ?", (folder, relpath)
        ).fetchone()
        sha = sha_blob(sha256)
        conn.execute(
            "INSERT OR REPLACE INTO files (folder, relpath, size, mtime_ns, inode, dev, sha256,"
            " asset_key, problem) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (folder, relpath, stat.size, stat.mtime_ns, stat.inode, stat.dev, sha, key, problem),
        )
        return row["asset_key"] if row else None

    # -- releasing assets ------------------------------------------------------------

    def _asset_jobs(
        self, conn: Conn, kind: JobKind, key: str, states: Sequence[JobState]
    ) -> list[Job]:
        marks = ",".join("?" * len(states))
        return self.store.jobs_where(  # the kind in the text: see store.CLAIM_SQL
            conn,
            f"asset_key = ? AND kind = '{kind}' AND state IN ({marks})",
            [key, *(str(s) for s in states)],
        )

    def _release(
        self, conn: Conn, folder: str, key: str, *, hold: bool = False, relpath: str | None = None
    ) -> None:
        """No tracked file uses ``key`` any more: cancel its upload or schedule its delete.

        ``relpath`` is the file that let it go: the delete job keeps it, so the log, ``held``
        and ``explain`` can name the file a deletion is for.
        """
        if self._refcount(conn, key):
            return
        asset = conn.execute("SELECT * FROM assets WHERE key = ?", (key,)).fetchone()
        if asset is None:
            return
        if asset["asset_id"] is None:
            # A pending upload that already tried may have stored the asset: it stays, to
            # look first, and to record (and so mirror the deletion of) what it finds.
            looks = False
            for job in self._asset_jobs(conn, JobKind.UPLOAD, key, (S.PENDING, S.FAILED)):
                if job.state is S.PENDING and job.attempt > 0:
                    looks = True
                    continue
                self.store.move(conn, job, S.CANCELLED, reason="no file needs this asset now")
            if not looks and not self._asset_jobs(conn, JobKind.UPLOAD, key, (S.UPLOADING,)):
                conn.execute("DELETE FROM assets WHERE key = ?", (key,))
            return
        policy = self.folders.get(folder)
        if policy is None or not policy.mirror_deletes:
            return
        if self._asset_jobs(conn, JobKind.DELETE, key, (S.WAITING, S.HELD, S.DELETING)):
            return
        self._schedule_delete(conn, policy, key, hold=hold, relpath=relpath)

    def _schedule_delete(
        self, conn: Conn, policy: FolderConfig, key: str, *, hold: bool, relpath: str | None
    ) -> None:
        waiting, held = conn.execute(
            "SELECT sum(state = 'waiting'), sum(state = 'held') FROM jobs"
            " WHERE kind = 'delete' AND folder = ? AND state IN ('waiting', 'held')",
            (policy.key,),
        ).fetchone()
        if plan.hold_deletes(waiting or 0, 1, policy.max_deletes, held=bool(hold or held)):
            reason = (
                f"held: more than {policy.max_deletes} deletions at once in this folder; "
                "check the folder, then run `syncd approve-deletes`"
            )
            if waiting:
                for job in self.store.jobs_where(
                    conn, "kind = 'delete' AND folder = ? AND state = 'waiting'", (policy.key,)
                ):
                    self.store.move(conn, job, S.HELD, reason=reason)
            self.store.new_job(
                conn,
                JobKind.DELETE,
                policy.key,
                relpath=relpath,
                asset_key=key,
                state=S.HELD,
                reason=reason,
            )
            return
        self.store.new_job(
            conn,
            JobKind.DELETE,
            policy.key,
            relpath=relpath,
            asset_key=key,
            not_before=self.store.clock() + policy.delete_grace_seconds,
        )

    # -- upload and delete outcomes ---------------------------------------------------

    def upload_done(
        self,
        job: Job,
        remote: RemoteAsset,
        adapted: str | None = None,
        *,
        recheck_after: float | None = None,
        durable: bool = True,
    ) -> None:
        """Record the asset_id in the same transaction as the job's end.

        ``recheck_after``: an earlier POST of this job timed out and may still land; a
        ``dedupe`` job looks for that copy once the seconds are over. ``durable=False``:
        not waited for; lost, the job stays in flight on disk, and start-up recovery (or
        the ``on_lost`` listener) makes it pending with its intent, so the next attempt
        finds the asset by looking before any POST.
        """
        assert job.asset_key is not None
        now = self.store.clock()
        with self.store.record(durable=durable, lost=job) as conn:
            self.store.move(conn, job, S.DONE, reason=None)
            if recheck_after is not None:
                self.store.new_job(
                    conn,
                    JobKind.DEDUPE,
                    job.folder,
                    asset_key=job.asset_key,
                    not_before=now + recheck_after,
                )
            conn.execute(
                "UPDATE assets SET asset_id = ?, remote_status = ?, uploaded_at = ?, adapted = ?,"
                " remote_size = ?, remote_reason = NULL, remote_next = NULL, remote_tries = 0"
                " WHERE key = ?",
                (remote.asset_id, remote.status, now, adapted, remote.file_size, job.asset_key),
            )
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('last_upload', ?)", (str(now),)
            )
            self._release(conn, job.folder, job.asset_key)

    def upload_cancelled(self, job: Job, reason: str) -> bool:
        """Cancel an upload no file needs, checked and done in one transaction.

        A file may have linked to the asset since the caller looked: then the job goes
        back to the queue instead (True: cancelled; False: still needed, re-queued).
        """
        assert job.asset_key is not None
        with self.store.write() as conn:
            if self._refcount(conn, job.asset_key):
                self.store.move(conn, job, S.PENDING, not_before=0.0, reason="needed again")
                return False
            self.store.move(conn, job, S.CANCELLED, reason=reason)
            conn.execute("DELETE FROM assets WHERE key = ? AND asset_id IS NULL", (job.asset_key,))
        return True

    def delete_cancelled_if_used(self, job: Job) -> bool:
        """Cancel a delete whose asset a file uses again, checked and done in one transaction."""
        assert job.asset_key is not None
        with self.store.write() as conn:
            if not self._refcount(conn, job.asset_key):
                return False
            self.store.move(conn, job, S.CANCELLED, reason="a file uses the asset")
        return True

    def delete_done(self, job: Job) -> None:
        """The asset is gone remotely; if a file took it up meanwhile, upload it again."""
        assert job.asset_key is not None
        with self.store.write() as conn:
            self.store.move(conn, job, S.DONE, reason=None)
            if self._refcount(conn, job.asset_key):
                conn.execute(
                    "UPDATE assets SET asset_id = NULL, remote_status = NULL WHERE key = ?",
                    (job.asset_key,),
                )
                self.store.new_job(conn, JobKind.UPLOAD, job.folder, asset_key=job.asset_key)
            else:
                conn.execute("DELETE FROM assets WHERE key = ?", (job.asset_key,))

    def reupload(self, key: str) -> None:
        """The library lost this asset (deleted by hand): forget its id and upload again."""
        with self.store.write() as conn:
            conn.execute(
                "UPDATE assets SET asset_id = NULL, remote_status = NULL WHERE key = ?", (key,)
            )
            live = (S.PENDING, S.UPLOADING, S.FAILED)
            if not self._asset_jobs(conn, JobKind.UPLOAD, key, live):
                row = conn.execute(
                    "SELECT folder, relpath FROM files WHERE asset_key = ? LIMIT 1", (key,)
                ).fetchone()
                if row is not None:
                    self.store.new_job(
                        conn, JobKind.UPLOAD, row["folder"], relpath=row["relpath"], asset_key=key
                    )

    def retry_later(
        self, job: Job, delay: float, reason: str, *, detail: dict[str, object] | None = None
    ) -> Job:
        """Back to the claimable state of its kind, due after ``delay`` seconds; ``detail``
        is added to the job's."""
        extra = {"detail": {**job.detail, **detail}} if detail else {}
        return self.store.transition(
            job, CLAIMABLE[job.kind], not_before=self.store.clock() + delay, reason=reason, **extra
        )

    def resume_paused(self) -> int:
        """The key is accepted again: jobs paused for it are due now, not after their wait."""
        with self.store.write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET not_before = ? WHERE state IN ('pending', 'waiting')"
                " AND substr(reason, 1, ?) = ?",
                (self.store.clock(), len(KEY_PAUSE), KEY_PAUSE),
            )
        return cur.rowcount

    def resume_after_outage(self) -> int:
        """The API answers again: jobs waiting out a backoff for an outage are due now.

        Their backoff grew with every failed attempt during the outage; without this the
        queue would stay idle for minutes after the API came back.
        """
        with self.store.write() as conn:
            cur = conn.execute(
                "UPDATE jobs SET not_before = ? WHERE kind IN ('upload', 'delete')"
                " AND state IN ('pending', 'waiting') AND not_before > ?"
                " AND (reason LIKE 'TransientError:%' OR reason LIKE 'OutcomeUnknown:%')",
                (self.store.clock(), self.store.clock()),
            )
        return cur.rowcount


def _predates_rebuild(conn: Conn, stat: FileStat) -> bool:
    """Whether a file was already there when a rebuild read the library (and found ours).

    Such a file found no asset in the index; if the read missed a page, it has one all
    the same. A file written after the rebuild is new, and needs no look.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = 'library_rebuilt'").fetchone()
    return row is not None and stat.mtime_ns / 1e9 <= float(row["value"])


def _index_key(conn: Conn, key: str, row: Any = None) -> tuple[str, str] | None:
    """The library index's key (identity tag, sorted tag set) for a store asset key (its
    row read here unless given).

    None when the asset is not known, or is bound to its name (a ``names = "follow"``
    folder's, whose key holds the name too): the index knows no names.
    """
    if row is None:
        row = conn.execute("SELECT sha256, tags FROM assets WHERE key = ?", (key,)).fetchone()
    if row is None:
        return None
    tags = json.loads(row["tags"])
    if asset_key(row["sha256"], tags) != key:
        return None
    return identity_tag(row["sha256"]), json.dumps(sorted(set(tags)))
