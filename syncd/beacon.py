"""What a running syncd tells the operator, and what it takes from them, via the database.

The state database is the one channel between a running ``syncd run``/``syncd sync`` and
the commands a person types: the daemon publishes who holds the database (run or sync,
its pid, its progress) and the API's outage (since when, next probe, last error), and
picks up rescan requests that ``syncd rescan`` left in the ``requests`` table. Nobody
but the process holding the lock scans, so a request is never a second writer of files.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from syncd.breaker import BreakerState
from syncd.store import Store

HOLDER, OUTAGE = "holder", "api_outage"
RESCAN = "rescan"


@dataclass
class Beacon:
    """Publishes a process's state into ``meta``; writes only when something changed."""

    store: Store
    role: str
    started: float
    _last: dict[str, str | None] = field(default_factory=dict)

    def publish(self, key: str, value: dict[str, Any] | None) -> None:
        text = None if value is None else json.dumps(value, sort_keys=True)
        if self._last.get(key, "unset") != text:
            self.store.set_meta(key, text)
            self._last[key] = text

    def holder(self, progress: dict[str, int] | None = None) -> None:
        """Who holds the database: ``run`` or ``sync``, pid, since when, how far along."""
        value: dict[str, Any] = {"role": self.role, "pid": os.getpid(), "started": self.started}
        if progress is not None:
            value["progress"] = progress
        self.publish(HOLDER, value)

    def outage(self, state: BreakerState) -> None:
        """The breaker's open circuit, as status shows it; cleared when it closes."""
        if state.open_since is None:
            self.publish(OUTAGE, None)
            return
        self.publish(
            OUTAGE,
            {
                "since": state.open_since,
                "next_probe": state.next_probe,
                "last_error": state.last_error,
            },
        )


def request_rescan(store: Store, folder: str | None) -> None:
    """Leave a rescan request (one folder, or every folder) for the running daemon."""
    with store.write() as conn:
        conn.execute(
            "INSERT INTO requests (kind, folder, at) VALUES (?, ?, ?)",
            (RESCAN, folder, store.clock()),
        )


def take_rescans(store: Store) -> list[str | None]:
    """The rescan requests waiting (None: every folder), removed as they are taken.

    Asked every tick: a look without the write connection first, so that an empty one
    (nearly all) never waits for its turn behind a scan's or the workers' records.
    """
    if not store.query("SELECT 1 FROM requests WHERE kind = ? LIMIT 1", (RESCAN,)):
        return []
    with store.write() as conn:
        rows = conn.execute(
            "SELECT id, folder FROM requests WHERE kind = ? ORDER BY id", (RESCAN,)
        ).fetchall()
        if rows:
            conn.execute("DELETE FROM requests WHERE id <= ?", (rows[-1]["id"],))
    return [row["folder"] for row in rows]


def read(store: Store, key: str) -> dict[str, Any] | None:
    """A published value, or None (absent or unreadable)."""
    text = store.get_meta(key)
    try:
        value = json.loads(text) if text else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
