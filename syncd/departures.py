"""Files leaving a hot folder after their upload, as the store records it (``after_upload``).

A departure is written *before* the file is touched, in the same transaction that stops
tracking it (its asset stays: this is not a deletion, and none is mirrored). From then on
the departure is ``moving`` until the file is in exactly one place, which a restart
completes; then ``done`` (or ``cancelled`` when the file changed meanwhile and stays).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from syncd.config import FolderConfig
from syncd.store import Row, Store

#: What a departure did, in words, by (action, state).
SAID = {
    ("archive", "done"): "archived",
    ("remove", "done"): "removed",
    ("archive", "moving"): "on its way to the archive",
    ("remove", "moving"): "being removed",
}

#: Remote states in which a file may leave, per ``after_upload_when``.
LEAVE_WHEN = {"ready": ("ready",), "sent": ("processing", "indexed", "ready")}


class Departures:
    """Departure bookkeeping over a :class:`Store`."""

    def __init__(self, store: Store, folders: Mapping[str, FolderConfig]) -> None:
        self.store = store
        self.folders = folders

    def candidates(self, folder: FolderConfig, limit: int) -> list[Row]:
        """Tracked files of ``folder`` whose asset is far enough along to let them go."""
        states = json.dumps(LEAVE_WHEN[folder.after_upload_when])
        return self.store.query(
            "SELECT f.folder, f.relpath, f.size, f.mtime_ns, f.inode, f.sha256, f.asset_key,"
            " a.asset_id, a.remote_size, a.adapted FROM files AS f JOIN assets AS a"
            " ON a.key = f.asset_key WHERE f.folder = ? AND f.problem IS NULL"
            " AND a.asset_id IS NOT NULL"
            " AND a.remote_status IN (SELECT value FROM json_each(?)) LIMIT ?",
            (folder.key, states, limit),
        )

    def begin(self, row: Row, action: str, dest: str | None) -> int | None:
        """Stop tracking the file and record where it goes; None when it changed meanwhile.

        Refused while a file job is reading the path (it would track it again) or when
        its record is no longer the one the caller saw.
        """
        now = self.store.clock()
        with self.store.write() as conn:
            same = conn.execute(
                "SELECT 1 FROM files WHERE folder = ? AND relpath = ? AND size = ? AND"
                " mtime_ns = ? AND inode = ? AND asset_key = ?",
                (row["folder"], row["relpath"], row["size"], row["mtime_ns"], row["inode"],
                 row["asset_key"]),
            ).fetchone()  # fmt: skip
            busy = conn.execute(
                "SELECT 1 FROM jobs WHERE kind = 'file' AND state = 'hashing' AND folder = ?"
                " AND relpath = ?",
                (row["folder"], row["relpath"]),
            ).fetchone()
            if same is None or busy is not None or self._open(conn, row):
                return None
            conn.execute(
                "DELETE FROM files WHERE folder = ? AND relpath = ?",
                (row["folder"], row["relpath"]),
            )
            cur = conn.execute(
                "INSERT INTO departures (folder, relpath, action, dest, state, size, mtime_ns,"
                " inode, sha256, asset_key, created_at) VALUES (?, ?, ?, ?, 'moving', ?, ?, ?,"
                " ?, ?, ?)",
                (row["folder"], row["relpath"], action, dest, row["size"], row["mtime_ns"],
                 row["inode"], row["sha256"], row["asset_key"], now),
            )  # fmt: skip
        return cur.lastrowid

    def _open(self, conn: Any, row: Row) -> bool:
        found = conn.execute(
            "SELECT 1 FROM departures WHERE state = 'moving' AND folder = ? AND relpath = ?",
            (row["folder"], row["relpath"]),
        ).fetchone()
        return found is not None

    def moving(self, limit: int = 100) -> list[Row]:
        """Departures begun and not finished (after a crash, or a failed step)."""
        return self.store.query(
            "SELECT * FROM departures WHERE state = 'moving' ORDER BY id LIMIT ?", (limit,)
        )

    def departing(self, folder: str, relpath: str) -> bool:
        """Whether the path is on its way out: a file job must not track it again."""
        return bool(
            self.store.query(
                "SELECT 1 FROM departures WHERE state = 'moving' AND folder = ? AND relpath = ?",
                (folder, relpath),
            )
        )

    def set_dest(self, departure: int, dest: str) -> None:
        """Another name, recorded before it is tried (the first one clashed)."""
        with self.store.write() as conn:
            conn.execute("UPDATE departures SET dest = ? WHERE id = ?", (dest, departure))

    def note(self, departure: int, reason: str) -> None:
        """Why a step failed; the departure stays open and is tried again."""
        with self.store.write() as conn:
            conn.execute("UPDATE departures SET reason = ? WHERE id = ?", (reason, departure))

    def finish(self, departure: int, *, state: str = "done", reason: str | None = None) -> None:
        with self.store.write() as conn:
            conn.execute(
                "UPDATE departures SET state = ?, reason = ?, done_at = ? WHERE id = ?",
                (state, reason, self.store.clock(), departure),
            )

    def remote_size(self, key: str, size: int) -> None:
        """The size the library reports for an asset, learnt after the fact."""
        with self.store.write() as conn:
            conn.execute("UPDATE assets SET remote_size = ? WHERE key = ?", (size, key))

    def since(self, moment: float) -> dict[str, int]:
        """Files archived and removed since ``moment``, and those still on their way."""
        rows = self.store.query(
            "SELECT sum(action = 'archive' AND state = 'done' AND done_at >= ?) AS archived,"
            " sum(action = 'remove' AND state = 'done' AND done_at >= ?) AS removed,"
            " sum(state = 'moving') AS moving FROM departures"
            " WHERE state = 'moving' OR done_at >= ?",
            (moment, moment, moment),
        )
        row = rows[0] if rows else {}
        return {name: int(row.get(name) or 0) for name in ("archived", "removed", "moving")}


def last_departure(store: Store, folder: str, relpath: str) -> Row | None:
    """The newest departure of a path (``syncd explain``): where it went, and when."""
    rows = store.query(
        "SELECT * FROM departures WHERE folder = ? AND relpath = ? ORDER BY id DESC LIMIT 1",
        (folder, relpath),
    )
    return rows[0] if rows else None
