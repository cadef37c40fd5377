"""The scan workflow: walk a folder, compare it with the store, queue what differs.

The scan is the truth and watcher events are hints: it runs at start, when events may
have been lost, when a folder comes back, and periodically. It streams: the walk and the
store are merge-joined in relpath order, and findings are queued in batches. Unchanged
files are never opened.

Guards: a root that is missing or unreadable is not scanned at all; a root that is empty
where files were tracked, or on another device than before, is scanned for new files but
nothing in it is read as deleted until an operator approves. A scan that finds more files
gone than the folder's ``max_deletes`` queues them with their deletions held.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import structlog

from syncd import plan, scanner
from syncd.config import FolderConfig
from syncd.context import Context
from syncd.model import FileStat

log = structlog.get_logger(__name__)

BATCH = 500


@dataclass
class ScanReport:
    folder: str
    prefix: str = ""
    skipped: str | None = None
    new: int = 0
    changed: int = 0
    gone: int = 0
    gone_held: int = 0
    guard: str | None = None
    unreadable_dirs: list[str] = field(default_factory=list)


class Sweeper:
    """Runs scans; one at a time (the daemon's scan thread, or ``syncd sync``)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def scan(self, folder: FolderConfig, prefix: str = "") -> ScanReport:
        ctx = self.ctx
        store = ctx.ledger.store
        report = ScanReport(folder.key, prefix)
        row = store.folder_row(folder.key) or {}
        health = scanner.root_health(folder.path, expected_dev=row.get("dev"))
        if not health.ok and (health.reason or "").startswith(("missing", "unreadable", "not a")):
            store.set_folder(folder.key, health="unavailable", reason=health.reason)
            report.skipped = health.reason
            log.warning("scan.skipped", folder=folder.key, reason=health.reason)
            return report
        report.guard = ctx.root_problem(folder)
        rules = ctx.rules[folder.key]
        if prefix and (rules.ignores_dir(prefix) or not _real_folder(folder.path, prefix)):
            seen: Iterator[tuple[str, FileStat]] = iter(())
            walk = None
        else:
            walk = scanner.walk(
                folder.path / prefix if prefix else folder.path,
                rules,
                on_skip=lambda p, why: log.info("scan.skip", path=p, reason=why),
            )
            seen = ((f"{prefix}/{e.relpath}" if prefix else e.relpath, e.stat) for e in walk)

        def unreadable(relpath: str) -> bool:
            if walk is None:
                return False
            rel = relpath[len(prefix) + 1 :] if prefix else relpath
            return rel in walk.unreadable_files or any(
                rel.startswith(d + "/") for d in walk.unreadable_dirs
            )

        diffs = plan.diff(
            seen,
            store.iter_tracked(folder.key, prefix),
            unreadable=unreadable,
        )
        self._queue(folder, diffs, report)
        if walk is not None:
            report.unreadable_dirs = list(walk.unreadable_dirs)
        if report.guard is None:
            # An approval covers this root until it holds files again.
            approved = int(bool(row.get("approved")) and scanner.is_empty(folder.path, rules))
            store.set_folder(
                folder.key,
                dev=health.dev,
                health="ok",
                reason=None,
                approved=approved,
                last_scan=ctx.clock(),
            )
        else:
            store.set_folder(folder.key, health="guarded", reason=report.guard)
        log.info(
            "scan.done",
            folder=folder.key,
            prefix=prefix or None,
            new=report.new,
            changed=report.changed,
            gone=report.gone,
            gone_held=report.gone_held,
            guard=report.guard,
            unreadable=len(report.unreadable_dirs),
        )
        return report

    def _queue(
        self, folder: FolderConfig, diffs: Iterator[plan.Difference], report: ScanReport
    ) -> None:
        """Queue findings in batches; gone files wait until their count is known."""
        ledger = self.ctx.ledger
        gone: list[str] = []
        hold = False
        while batch := list(islice(diffs, BATCH)):
            paths = []
            for d in batch:
                if d.change is plan.Change.GONE:
                    if _still_there_but_skipped(folder, d):
                        continue
                    if report.guard:
                        report.gone_held += 1
                        continue
                    report.gone += 1
                    gone.append(d.relpath)
                else:
                    setattr(report, str(d.change), getattr(report, str(d.change)) + 1)
                    paths.append(d.relpath)
            ledger.enqueue_paths(folder.key, paths)
            if len(gone) > folder.max_deletes:
                hold = True
            if hold and gone:
                ledger.enqueue_paths(folder.key, gone, hold=True)
                gone.clear()
        if gone:
            ledger.enqueue_paths(folder.key, gone, hold=hold)


def _real_folder(root: Path, prefix: str) -> bool:
    """A folder reached without a symlink: a link to a folder is never followed (it may loop)."""
    path = root / prefix
    return path.is_dir() and Path(os.path.realpath(path)) == Path(os.path.realpath(root)) / prefix


def _still_there_but_skipped(folder: FolderConfig, difference: plan.Difference) -> bool:
    """A remembered bad file the walk skips (a FIFO, a link to a folder) is not gone."""
    tracked = difference.tracked
    return (
        tracked is not None
        and tracked.problem is not None
        and os.path.lexists(folder.path / difference.relpath)
    )
