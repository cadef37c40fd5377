"""The closing summary of ``syncd sync``: what this pass did, and why it exits as it does.

Counted from the queue's own history (jobs touched since the pass began), so it says the
same thing as the database: uploaded, linked to an asset already there, deleted, failed
(with reasons), held for a person, still queued. The exit code is derived from it here
and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syncd.store import Store

#: Exit codes of ``syncd sync`` (the CLI's table says the same).
OK, UNFINISHED, KEY_REJECTED = 0, 1, 2
#: How many failures are named in the summary (the count is complete).
FAILURES_NAMED = 20


@dataclass
class Summary:
    """One pass, counted; ``stopped`` says why it ended early, if it did."""

    uploaded: int = 0
    linked: int = 0
    deleted: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    failed_count: int = 0
    failed_before: int = 0
    held: int = 0
    queued: int = 0
    stopped: str | None = None

    @property
    def exit_code(self) -> int:
        """2: the key was refused; 1: this pass left failures or queued work; else 0.

        Failures from earlier passes that this one did not touch are reported, not
        counted: they are old news, and ``syncd retry`` is the way to try them again.
        """
        if self.stopped == "key":
            return KEY_REJECTED
        return UNFINISHED if self.failed_count or self.queued or self.stopped else OK

    def lines(self) -> list[str]:
        """For people: one line of counts, then each failure and what to do."""
        out = [
            f"sync: {self.uploaded} uploaded, {self.linked} linked to assets already there, "
            f"{self.deleted} deleted, {self.failed_count} failed, {self.held} deletion(s) held, "
            f"{self.queued} still queued"
        ]
        out += [f"  failed: {f['folder']}/{f['path'] or '?'}: {f['reason']}" for f in self.failed]
        if self.failed_count > len(self.failed):
            out.append(f"  ... and {self.failed_count - len(self.failed)} more failures")
        if self.failed_before:
            out.append(
                f"  {self.failed_before} job(s) failed in an earlier pass and were not retried:"
                " `syncd status` lists them, `syncd retry` tries them again"
            )
        if self.held:
            out.append("  held deletions wait for `syncd held` / `syncd approve-deletes`")
        out.append(f"exit {self.exit_code}: {self._why()}")
        return out

    def _why(self) -> str:
        reasons = {
            "key": "the API key was rejected; put a valid key in place (`syncd check`)",
            "signal": "stopped by a signal; what is left stays queued",
            "timeout": "gave up after --max-wait while the API kept failing; jobs stay queued",
            "thread": "a worker thread died (see the log)",
        }
        if self.stopped:
            return reasons[self.stopped]
        if self.failed_count:
            return "some files failed (reasons above)"
        if self.queued:
            return "jobs are still queued"
        if self.held:
            return "done; the held deletions wait for a person"
        return "everything is in sync"

    def as_dict(self) -> dict[str, Any]:
        return {
            "uploaded": self.uploaded,
            "linked": self.linked,
            "deleted": self.deleted,
            "failed": self.failed_count,
            "failures": self.failed,
            "failed_before": self.failed_before,
            "held": self.held,
            "queued": self.queued,
            "stopped": self.stopped,
            "exit_code": self.exit_code,
        }


def count(store: Store, since: float, stopped: str | None) -> Summary:
    """What the queue says happened from ``since`` on."""
    q = store.query
    done = {
        (r["kind"], r["reason"] or ""): r["n"]
        for r in q(
            "SELECT kind, reason, count(*) AS n FROM jobs WHERE state = 'done'"
            " AND updated_at >= ? GROUP BY kind, reason",
            (since,),
        )
    }
    failures = q(
        "SELECT j.kind, j.folder, coalesce(j.relpath, f.relpath) AS path, j.reason FROM jobs j"
        " LEFT JOIN files f ON f.asset_key = j.asset_key AND j.relpath IS NULL"
        " WHERE j.state = 'failed' AND j.updated_at >= ? GROUP BY j.id ORDER BY j.id",
        (since,),
    )
    states = {
        r["state"]: r["n"]
        for r in q(
            "SELECT state, count(*) AS n FROM jobs WHERE state IN"
            " ('pending', 'hashing', 'uploading', 'waiting', 'deleting', 'held', 'failed')"
            " GROUP BY state"
        )
    }
    queued = sum(states.get(s, 0) for s in ("pending", "hashing", "uploading", "waiting"))
    return Summary(
        uploaded=done.get(("upload", ""), 0),
        linked=_linked(store, since),
        deleted=done.get(("delete", ""), 0),
        failed=[dict(f) for f in failures[:FAILURES_NAMED]],
        failed_count=len(failures),
        failed_before=states.get("failed", 0) - len(failures),
        held=states.get("held", 0),
        queued=queued + states.get("deleting", 0),
        stopped=stopped,
    )


def _linked(store: Store, since: float) -> int:
    """Files read in this pass whose (content, tags) was in the library before it began."""
    rows = store.query(
        "SELECT count(*) AS n FROM jobs j JOIN files f ON f.folder = j.folder"
        " AND f.relpath = j.relpath JOIN assets a ON a.key = f.asset_key"
        " WHERE j.kind = 'file' AND j.state = 'done' AND j.reason IS NULL"
        " AND j.updated_at >= ? AND a.asset_id IS NOT NULL"
        " AND (a.uploaded_at IS NULL OR a.uploaded_at < ?)",
        (since, since),
    )
    return int(rows[0]["n"])
