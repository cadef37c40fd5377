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

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import structlog

from syncd import plan, scanner
from syncd.config import FolderConfig
from syncd.context import Context
from syncd.errors import RootUnavailable
from syncd.safepath import Root
from syncd.tags import Rules, printable

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
    too_deep: list[str] = field(default_factory=list)


class Sweeper:
    """Runs scans; one at a time (the daemon's scan thread, or ``syncd sync``)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def scan(self, folder: FolderConfig, prefix: str = "") -> ScanReport:
        store = self.ctx.ledger.store
        report = ScanReport(folder.key, prefix)
        row = store.folder_row(folder.key) or {}
        health = scanner.root_health(
            folder.path, expected_dev=row.get("dev"), expected_ino=row.get("ino")
        )
        if health.absent:
            store.set_folder(folder.key, health="unavailable", reason=health.reason)
            return _skipped(folder, report, health.reason)
        report.guard = self.ctx.root_problem(folder, row=row, health=health)
        try:
            root = self.ctx.open_root(folder)
        except RootUnavailable as exc:  # another folder now: root_problem said how it shows
            return _skipped(folder, report, exc.reason)
        with root:
            self._walk_root(folder, root, row, report)
        return report

    def _walk_root(
        self,
        folder: FolderConfig,
        root: Root,
        row: dict[str, Any],
        report: ScanReport,
    ) -> None:
        """Walk beneath the held root and queue what differs from the store."""
        store = self.ctx.ledger.store
        prefix = report.prefix
        walk = _walk(root, folder, prefix, self.ctx.rules[folder.key])
        seen = _Found(_segments(walk, prefix))
        with store.tracked(folder.key) as tracked:
            diffs = plan.diff(seen, tracked, unreadable=_unseen(walk, prefix))
            self._queue(folder, root, diffs, report)
        if walk is not None:
            report.unreadable_dirs = list(walk.unreadable_dirs)
            report.too_deep = list(walk.too_deep)
        # A full scan has just walked the whole root: whether it is empty is known.
        self._record(folder, root, row, report, empty=None if prefix else not seen.any)
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
            too_deep=len(report.too_deep),
        )

    def _record(
        self,
        folder: FolderConfig,
        root: Root,
        row: dict[str, Any],
        report: ScanReport,
        *,
        empty: bool | None,
    ) -> None:
        """The folder's health after the scan; ``empty`` None when the root was not walked."""
        store = self.ctx.ledger.store
        if report.guard is not None:
            store.set_folder(folder.key, health="guarded", reason=report.guard)
            return
        # An approval covers this root until it holds files again.
        approved = bool(row.get("approved"))
        if approved and empty is None:
            empty = scanner.is_empty(root, self.ctx.rules[folder.key])
        dev, ino = root.identity
        store.set_folder(
            folder.key,
            dev=dev,
            ino=ino,
            replaced=0,
            health="ok",
            reason=_too_deep(folder, report.too_deep),
            approved=int(approved and bool(empty)),
            last_scan=self.ctx.clock(),
        )

    def _queue(
        self,
        folder: FolderConfig,
        root: Root,
        diffs: Iterator[plan.Difference],
        report: ScanReport,
    ) -> None:
        """Queue findings in batches; gone files wait until their count is known, and
        are looked at again (with their root) only after the folder's settle time."""
        ledger = self.ctx.ledger
        settle = folder.settle_seconds
        gone: list[str] = []
        hold = False
        while batch := list(islice(diffs, BATCH)):
            paths = []
            for d in batch:
                if d.change is plan.Change.GONE:
                    if _still_there_but_skipped(root, d):
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
            hold = plan.hold_deletes(0, len(gone), folder.max_deletes, held=hold)
            if hold and gone:
                ledger.enqueue_paths(folder.key, gone, delay=settle, hold=True)
                gone.clear()
        if gone:
            ledger.enqueue_paths(folder.key, gone, delay=settle, hold=hold)


def _skipped(folder: FolderConfig, report: ScanReport, reason: str | None) -> ScanReport:
    report.skipped = reason
    log.warning("scan.skipped", folder=folder.key, reason=reason)
    return report


def _walk(root: Root, folder: FolderConfig, prefix: str, rules: Rules) -> scanner.Scan | None:
    """The walk of the folder (or of ``prefix`` in it, reached without a symlink: a link
    to a folder is never followed); None when there is none to walk."""
    if prefix and rules.ignores_dir(prefix):
        return None
    return scanner.walk(
        root,
        rules,
        prefix=prefix,
        max_depth=folder.max_depth,
        on_skip=lambda p, why: log.info("scan.skip", path=p, reason=why),
    )


def _too_deep(folder: FolderConfig, skipped: list[str]) -> str | None:
    """The folder's reason in status when the walk left folders out for their depth."""
    if not skipped:
        return None
    first = printable(skipped[0])
    return (
        f"{len(skipped)} folder(s) deeper than max_depth ({folder.max_depth}) skipped, e.g. {first}"
    )


def _segments(walk: scanner.Scan | None, prefix: str) -> Iterator[plan.Segment]:
    """What the walk finds, segment by segment; a prefix it may not walk (an ignored
    folder) is one empty segment: what is tracked there is gone."""
    if walk is not None:
        return walk.segments()
    return iter([plan.Segment(prefix + "/", prefix + "/", prefix + "0")])


class _Found:
    """The walk's segments, passed on; ``any`` says whether one held a file."""

    def __init__(self, segments: Iterator[plan.Segment]) -> None:
        self._segments = segments
        self.any = False

    def __iter__(self) -> Iterator[plan.Segment]:
        for segment in self._segments:
            self.any = self.any or bool(segment.seen)
            yield segment


def _unseen(walk: scanner.Scan | None, prefix: str) -> Callable[[str], bool]:
    """Whether a tracked path lies where the walk could not look: unknown, not gone.

    The walk names its own top ``""`` when it cannot list it; that hides every path.
    """

    def unseen(relpath: str) -> bool:
        if walk is None:
            return False
        dirs = walk.unreadable_dirs
        rel = relpath[len(prefix) + 1 :] if prefix else relpath
        return (
            "" in dirs
            or rel in walk.unreadable_files
            or any(rel.startswith(d + "/") for d in (*dirs, *walk.too_deep))
        )

    return unseen


def _still_there_but_skipped(root: Root, difference: plan.Difference) -> bool:
    """A remembered bad file the walk skips (a FIFO, a link to a folder) is not gone."""
    tracked = difference.tracked
    return tracked is not None and tracked.problem is not None and root.lexists(difference.relpath)
