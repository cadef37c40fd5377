"""The asset's life after its upload, as the store records it: each method one transaction.

An uploaded asset is ``processing`` until the library says ``ready`` or ``failed``; an
asset adopted from the library index (``indexed``) is followed the same way, since its
state was not read. The follow-up is scheduled per asset (``remote_next``), backing off
from a few seconds to a cap. ``deleted`` marks an asset someone else removed from the
library: it is reported and never re-uploaded behind the user's back.

A failed asset of a folder with ``on_processing_failed = "reupload"`` is sent once more:
its row forgets the asset_id and remembers it in ``replaces``, an upload is queued under
the usual exactly-once rules, and the failed asset is deleted only once the new one exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from syncd.config import FolderConfig
from syncd.model import JobKind
from syncd.store import Row, Store

#: Remote states still being followed.
FOLLOWED = ("processing", "indexed")
DELETED_REASON = (
    "deleted from the library by someone else; `syncd verify --repair` uploads it again"
)
_FOLLOWED_SQL = "remote_status IN ('processing', 'indexed') AND asset_id IS NOT NULL"
_CHUNK = 500


class Lifecycle:
    """Follow-up bookkeeping over a :class:`Store`, with each folder's failure policy."""

    def __init__(self, store: Store, folders: Mapping[str, FolderConfig]) -> None:
        self.store = store
        self.folders = folders

    # -- what is due ------------------------------------------------------------------

    def due(self, now: float, first: float, limit: int) -> list[Row]:
        """Followed assets whose next look is due: the first ``first`` s after upload."""
        return self.store.query(
            f"SELECT key, asset_id FROM assets WHERE {_FOLLOWED_SQL}"  # noqa: S608 - fixed
            " AND coalesce(remote_next, uploaded_at + ?, 0) <= ? LIMIT ?",
            (first, now, limit),
        )

    def count_followed(self, limit: int) -> int:
        """How many assets are followed, counted up to ``limit``."""
        rows = self.store.query(
            f"SELECT count(*) AS n FROM (SELECT 1 FROM assets WHERE {_FOLLOWED_SQL} LIMIT ?)",  # noqa: S608
            (limit,),
        )
        return int(rows[0]["n"])

    def next_due(self, first: float) -> float | None:
        """When the next followed asset is due, or None when nothing is followed."""
        rows = self.store.query(
            f"SELECT min(coalesce(remote_next, uploaded_at + ?, 0)) AS at FROM assets"  # noqa: S608
            f" WHERE {_FOLLOWED_SQL}",
            (first,),
        )
        return None if not rows or rows[0]["at"] is None else float(rows[0]["at"])

    def followed(self, uploaded_before: float) -> Iterable[list[Row]]:
        """Every followed asset uploaded before a moment, in chunks (keyset paging)."""
        after = ""
        while True:
            rows = self.store.query(
                f"SELECT key, asset_id FROM assets WHERE {_FOLLOWED_SQL}"  # noqa: S608 - fixed
                " AND coalesce(uploaded_at, 0) < ? AND key > ? ORDER BY key LIMIT ?",
                (uploaded_before, after, _CHUNK),
            )
            if not rows:
                return
            yield rows
            after = rows[-1]["key"]

    # -- outcomes -----------------------------------------------------------------------

    def still_processing(self, keys: Sequence[str], now: float, first: float, cap: float) -> None:
        """Look again later: ``first`` doubled per look, never more than ``cap``."""
        with self.store.write() as conn:
            conn.executemany(
                "UPDATE assets SET remote_status = 'processing', remote_tries = remote_tries + 1,"
                " remote_next = ? + min(?, ? * (1 << min(remote_tries + 1, 20)))"
                " WHERE key = ? AND asset_id IS NOT NULL",
                [(now, cap, first, key) for key in keys],
            )

    def ready(self, keys: Sequence[str]) -> None:
        with self.store.write() as conn:
            conn.executemany(
                "UPDATE assets SET remote_status = 'ready', remote_reason = NULL,"
                " remote_next = NULL WHERE key = ? AND asset_id IS NOT NULL",
                [(key,) for key in keys],
            )

    def deleted(self, key: str, asset_id: str) -> None:
        """Someone else deleted it: say so; nothing is uploaded again by itself."""
        with self.store.write() as conn:
            conn.execute(
                "UPDATE assets SET remote_status = 'deleted', remote_reason = ?,"
                " remote_next = NULL WHERE key = ? AND asset_id = ?",
                (DELETED_REASON, key, asset_id),
            )

    def failed(self, key: str, asset_id: str, reason: str) -> bool:
        """Record a failed processing; True when a re-upload was queued instead.

        A re-upload happens once per asset, only for a folder that asks for it, and only
        while a tracked file still stands for the asset.
        """
        with self.store.write() as conn:
            asset = conn.execute(
                "SELECT reuploads FROM assets WHERE key = ? AND asset_id = ?", (key, asset_id)
            ).fetchone()
            if asset is None:
                return False
            source = self._source(conn, key)
            if source is not None and not asset["reuploads"]:
                conn.execute(
                    "UPDATE assets SET replaces = asset_id, asset_id = NULL, remote_status = NULL,"
                    " remote_reason = ?, reuploads = reuploads + 1, remote_next = NULL,"
                    " remote_tries = 0 WHERE key = ?",
                    (reason, key),
                )
                self.store.new_job(
                    conn, JobKind.UPLOAD, source["folder"], relpath=source["relpath"], asset_key=key
                )
                return True
            conn.execute(
                "UPDATE assets SET remote_status = 'failed', remote_reason = ?, remote_next = NULL"
                " WHERE key = ?",
                (reason, key),
            )
        return False

    def _source(self, conn: Any, key: str) -> Row | None:
        """A tracked file of a folder that re-uploads failed assets, or None."""
        for row in conn.execute(
            "SELECT folder, relpath FROM files WHERE asset_key = ? LIMIT 20", (key,)
        ):
            folder = self.folders.get(row["folder"])
            if folder is not None and folder.on_processing_failed == "reupload":
                return dict(row)
        return None

    # -- replaced failures ----------------------------------------------------------------

    def replaced(self) -> list[Row]:
        """Failed assets whose re-upload now exists: they may be deleted."""
        return self.store.query(
            "SELECT key, replaces FROM assets WHERE replaces IS NOT NULL AND asset_id IS NOT NULL"
            " LIMIT 100"
        )

    def forget_replaced(self, key: str, asset_id: str) -> None:
        with self.store.write() as conn:
            conn.execute(
                "UPDATE assets SET replaces = NULL WHERE key = ? AND replaces = ?", (key, asset_id)
            )

    # -- for status -----------------------------------------------------------------------

    def summary(self, limit: int) -> dict[str, Any]:
        """Counts over the assets syncd holds, and the failed and deleted ones by path."""
        counts = {
            row["remote_status"]: row["n"]
            for row in self.store.query(
                "SELECT remote_status, count(*) AS n FROM assets WHERE asset_id IS NOT NULL"
                " GROUP BY remote_status"
            )
        }
        return {
            "processing": sum(counts.get(s, 0) for s in FOLLOWED),
            "ready": counts.get("ready", 0),
            "failed": counts.get("failed", 0),
            "deleted": counts.get("deleted", 0),
            "failed_files": self._listed("failed", limit),
            "deleted_files": self._listed("deleted", limit),
        }

    def _listed(self, state: str, limit: int) -> list[dict[str, Any]]:
        rows = self.store.query(
            "SELECT a.asset_id, a.remote_reason AS reason,"
            " (SELECT f.folder || '/' || f.relpath FROM files AS f WHERE f.asset_key = a.key"
            "  LIMIT 1) AS path FROM assets AS a WHERE a.remote_status = ? AND a.asset_id IS"
            " NOT NULL ORDER BY a.uploaded_at DESC LIMIT ?",
            (state, limit),
        )
        return [{"path": r["path"], "asset_id": r["asset_id"], "reason": r["reason"]} for r in rows]
