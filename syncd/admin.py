"""The queue as people and status see it, and what an operator may do to it.

Figures (counts by kind and state, what is outstanding), failures and held deletions,
the read-only views the workflows need (an asset, its reference count, its files), and
the operator's actions: approve held deletions, retry failures, prune old history.
The workflows' transactions are :class:`~syncd.ledger.Ledger`'s, a class of its own; the
reference count both need has its one home here (:func:`references`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from syncd.model import CLAIMABLE, Job, JobKind, JobState
from syncd.store import Conn, Row, Store, row_to_job

S = JobState
#: Finished jobs move from the queue to the compact history this long after they end
#: (until then ``syncd status`` and people looking at the queue see them as they were).
HISTORY_AFTER = 600.0
#: How many finished jobs the history keeps, whatever their age: state stays bounded.
HISTORY_KEEP = 10_000
_FINISHED = (
    "state IN ('done', 'cancelled') AND updated_at < ?"
    " AND NOT (kind = 'upload' AND state = 'cancelled' AND intent_at IS NOT NULL)"
)
#: A file linked, an asset uploaded: the files and assets rows (``uploaded_at``) and the
#: log tell that; the history keeps the jobs that ended any other way (deletions, files
#: gone, cancellations, anything with a reason), which nothing else remembers.
_PLAIN = "kind IN ('file', 'upload') AND state = 'done' AND reason IS NULL"
_TO_HISTORY = (
    "INSERT OR REPLACE INTO job_history (id, kind, state, folder, relpath, reason, finished_at)"  # noqa: S608
    " SELECT id, kind, state, folder, relpath, reason, updated_at FROM jobs"
    " WHERE " + _FINISHED + " AND updated_at >= ? AND NOT (" + _PLAIN + ")"
)
_DROP_FINISHED = "DELETE FROM jobs WHERE " + _FINISHED  # noqa: S608


def references(conn: Conn, key: str) -> int:
    """How many tracked files stand for the asset ``key``: the one count of references."""
    return int(conn.execute("SELECT count(*) FROM files WHERE asset_key = ?", (key,)).fetchone()[0])


class Admin:
    """Reads and operator actions over a :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # -- reads -----------------------------------------------------------------------

    def asset(self, key: str) -> Row | None:
        rows = self.store.query("SELECT * FROM assets WHERE key = ?", (key,))
        return rows[0] if rows else None

    def records(self, asset_id: str) -> bool:
        """Whether any asset of the store (under any key) is this library asset."""
        found = self.store.query("SELECT 1 FROM assets WHERE asset_id = ? LIMIT 1", (asset_id,))
        return bool(found)

    def refcount(self, key: str) -> int:
        return references(self.store.conn(), key)

    def uploaded_assets(self) -> Iterator[Row]:
        """Every asset with a remote asset_id (key, asset_id, tags, sha256), streamed."""
        return self.store.stream(
            "SELECT key, asset_id, tags, sha256 FROM assets WHERE asset_id IS NOT NULL"
        )

    def files_for_asset(self, key: str, limit: int = 5) -> list[Row]:
        return self.store.query(
            "SELECT * FROM files WHERE asset_key = ? ORDER BY folder, relpath LIMIT ?", (key, limit)
        )

    # -- operator actions --------------------------------------------------------------

    def approve_deletes(self, folder: str | None = None) -> tuple[int, list[str]]:
        """Release held deletions (of one folder or all) and accept guarded roots.

        Returns how many deletions were released and which guarded folders were accepted.
        """
        where, params = ("kind = 'delete' AND state = 'held'", [])
        if folder:
            where, params = where + " AND folder = ?", [folder]
        now = self.store.clock()
        with self.store.write() as conn:
            jobs = self.store.jobs_where(conn, where, params)
            for job in jobs:
                self.store.move(conn, job, S.WAITING, not_before=now, reason="approved")
            guarded = [
                row["key"]
                for row in conn.execute(
                    "SELECT key FROM folders WHERE health = 'guarded' AND (? IS NULL OR key = ?)",
                    (folder, folder),
                )
            ]
            if folder:
                guarded += self._accept_replaced(conn, folder)
            # Only a guarded root (empty, or on a new device) is accepted: approving must
            # never switch the guard off for a root that is missing right now.
            conn.execute(
                "UPDATE folders SET approved = 1"
                " WHERE health = 'guarded' AND (? IS NULL OR key = ?)",
                (folder, folder),
            )
        return len(jobs), guarded

    @staticmethod
    def _accept_replaced(conn: Any, folder: str) -> list[str]:
        """Accept a root that now resolves to another folder (named with ``--folder`` only).

        Its recorded identity is forgotten and it becomes guarded and approved: the next
        scan records the folder it is now, and the guard's usual rules apply from there.
        """
        done = conn.execute(
            "UPDATE folders SET ino = NULL, dev = NULL, replaced = 0, health = 'guarded',"
            " approved = 0, reason = 'accepted as replaced; waiting for its scan'"
            " WHERE key = ? AND replaced = 1",
            (folder,),
        ).rowcount
        return [folder] if done else []

    def retry_failed(self, relpaths: Sequence[str] = ()) -> int:
        """Put failed jobs (all, or those for these paths) back in the queue."""
        with self.store.write() as conn:
            jobs = self.store.jobs_where(conn, "state = 'failed'", [])
            if relpaths:
                wanted = set(relpaths)
                jobs = [
                    j for j in jobs if j.relpath in wanted or f"{j.folder}/{j.relpath}" in wanted
                ]
            for job in jobs:
                if job.kind is JobKind.FILE and job.relpath is not None:
                    conn.execute(
                        "UPDATE files SET problem = NULL, sha256 = NULL"
                        " WHERE folder = ? AND relpath = ?",
                        (job.folder, job.relpath),
                    )
                self.store.move(conn, job, CLAIMABLE[job.kind], not_before=0.0, reason="retry")
        return len(jobs)

    def prune(self, before: float, *, keep: int = HISTORY_KEEP) -> int:
        """Keep the queue to live work and the history small; returns jobs taken out.

        Finished jobs last touched before ``before`` are forgotten; those finished more
        than :data:`HISTORY_AFTER` ago move to ``job_history`` (compact, unindexed), which
        keeps the newest ``keep``; a plain success (a file linked, an asset uploaded) is
        not kept there, its rows say it. A cancelled upload that had sent a POST stays in
        the queue: a later upload of the same (content, tags) must know to reconcile first
        (see :meth:`posted_before`).
        """
        compact_before = max(before, self.store.clock() - HISTORY_AFTER)
        with self.store.write() as conn:
            conn.execute(_TO_HISTORY, (compact_before, before))
            cur = conn.execute(_DROP_FINISHED, (compact_before,))
            conn.execute("DELETE FROM job_history WHERE finished_at < ?", (before,))
            conn.execute(
                "DELETE FROM job_history WHERE id <= (SELECT id FROM job_history"
                " ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (keep,),
            )
        return int(cur.rowcount)

    def failures(self, limit: int = 20) -> list[Job]:
        rows = self.store.query(
            "SELECT * FROM jobs WHERE state = 'failed' ORDER BY updated_at DESC LIMIT ?", (limit,)
        )
        return [row_to_job(r) for r in rows]

    def held_count(self) -> int:
        """Deletions held (one count in the (kind, state) index: asked before READY)."""
        rows = self.store.query(
            "SELECT count(*) AS n FROM jobs WHERE kind = 'delete' AND state = 'held'"
        )
        return int(rows[0]["n"])

    def held(self, limit: int = 20) -> list[Job]:
        rows = self.store.query(
            "SELECT * FROM jobs WHERE state = 'held' ORDER BY id LIMIT ?", (limit,)
        )
        return [row_to_job(r) for r in rows]

    def counts(self) -> dict[str, dict[str, int]]:
        """Live jobs per kind and state (the daemon's status line, every heartbeat).

        Naming the kinds lets SQLite count in the covering (kind, state) index alone: with
        only the states it reads every queued job's row and sorts them (5x slower at 100k).
        """
        kinds = ", ".join(f"'{kind}'" for kind in JobKind)
        rows = self.store.query(
            f"SELECT kind, state, count(*) AS n FROM jobs WHERE kind IN ({kinds}) AND state IN"  # noqa: S608
            " ('pending', 'hashing', 'uploading', 'waiting', 'held', 'deleting', 'checking',"
            " 'failed')"
            " GROUP BY kind, state"
        )
        out: dict[str, dict[str, int]] = {}
        for row in rows:
            out.setdefault(row["kind"], {})[row["state"]] = row["n"]
        return out

    def outstanding(self) -> int:
        """Jobs that still need work (not done, cancelled, failed or held).

        A ``dedupe`` look, due well after its upload, is not counted: ``sync`` does not
        wait for it; the daemon, or the next ``sync``, does it when it is due.
        """
        rows = self.store.query(
            "SELECT count(*) AS n FROM jobs WHERE state IN"
            " ('pending', 'hashing', 'uploading', 'waiting', 'deleting') AND kind != 'dedupe'"
        )
        return int(rows[0]["n"])

    def relink(self, key: str, asset_id: str) -> None:
        """The recorded asset is gone but a copy of it is in the library: record that one."""
        with self.store.write() as conn:
            conn.execute("UPDATE assets SET asset_id = ? WHERE key = ?", (asset_id, key))

    def duplicates_removed(self, count: int) -> None:
        """Count copies of syncd's own assets removed from the library (shown by status)."""
        with self.store.write() as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('duplicates_removed', ?)"
                " ON CONFLICT (key) DO UPDATE"
                " SET value = CAST(value AS INTEGER) + CAST(excluded.value AS INTEGER)",
                (count,),
            )

    def summary(self) -> dict[str, Any]:
        """Figures for status output."""
        q = self.store.query
        return {
            "tracked_files": q("SELECT count(*) AS n FROM files")[0]["n"],
            "assets": q("SELECT count(*) AS n FROM assets WHERE asset_id IS NOT NULL")[0]["n"],
            "problems": q("SELECT count(*) AS n FROM files WHERE problem IS NOT NULL")[0]["n"],
            "duplicates_removed": int(self.store.get_meta("duplicates_removed") or 0),
        }
