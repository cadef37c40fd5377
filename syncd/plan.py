"""Pure decisions: what a difference between disk and store means, and when to retry.

Plain values in, plain values out: no OS, clock, HTTP or SQLite, so every rule here is
tested without a disk.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from syncd.model import EventKind, FileStat, FsEvent, RemoteAsset, TrackedFile


class Change(StrEnum):
    NEW = "new"
    CHANGED = "changed"
    GONE = "gone"


@dataclass(frozen=True, slots=True)
class Difference:
    """One path whose disk state differs from the store's."""

    change: Change
    relpath: str
    stat: FileStat | None = None
    tracked: TrackedFile | None = None


#: A file as the rescan compares it: (relpath, size, mtime_ns, inode). These are the
#: fields :meth:`FileStat.same_content_as` compares, so a tuple equal to the stored one
#: is an unchanged file.
Seen = tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class Segment:
    """The files a walk found in one relpath range of a folder: ``lo <= relpath < hi``.

    A segment holds files of one directory (``base``, ``""`` or ``"a/b/"``), in relpath
    order; ``hi`` None is the end of the folder. Segments of one walk partition the
    walked part of the folder, so every stored row falls in exactly one: a stored row
    deeper than ``base`` lies in a folder the walk did not enter.
    """

    base: str
    lo: str
    hi: str | None
    seen: list[Seen] = field(default_factory=list)
    #: The device of each seen file (not part of the comparison).
    devs: list[int] = field(default_factory=list)


#: Stored rows read at once for a segment at most: a range holding many more (a big
#: folder the walk left out, all of it gone) is compared a page at a time.
PAGE = 5000


class TrackedSource(Protocol):
    """What the store knows of a segment's range, read from one snapshot."""

    def contents(self, segment: Segment, *, limit: int) -> list[Seen]:
        """The first ``limit`` stored files in the range as :data:`Seen` tuples, in
        relpath order."""

    def files(self, segment: Segment) -> dict[str, TrackedFile]:
        """The stored files in the range, by relpath."""


def diff(
    segments: Iterable[Segment],
    tracked: TrackedSource,
    *,
    unreadable: Callable[[str], bool] = lambda _relpath: False,
) -> Iterator[Difference]:
    """What differs between a walk and the store, segment by segment, in relpath order.

    An unchanged segment costs one comparison of two lists of tuples; records are made
    only for the files that differ. Unchanged files (same size, mtime and inode) yield
    nothing and are never re-read. A tracked file under a directory that could not be
    listed is not gone: it is unknown.
    """
    for segment in segments:
        yield from _compare(segment, tracked, unreadable)


def _compare(
    segment: Segment, tracked: TrackedSource, unreadable: Callable[[str], bool]
) -> Iterator[Difference]:
    stored = tracked.contents(segment, limit=PAGE)
    while len(stored) == PAGE:  # maybe more: compare up to the last row read, go on
        head, segment = _cut(segment, stored[-1][0] + "\0")  # the next relpath after it
        if head.seen != stored:
            yield from _differences(head, stored, tracked, unreadable)
        stored = tracked.contents(segment, limit=PAGE)
    if segment.seen != stored:
        yield from _differences(segment, stored, tracked, unreadable)


def _cut(segment: Segment, at: str) -> tuple[Segment, Segment]:
    """The segment as two: up to ``at``, and from it."""
    i = bisect_left(segment.seen, (at,))
    base, seen, devs = segment.base, segment.seen, segment.devs
    return (
        Segment(base, segment.lo, at, seen[:i], devs[:i]),
        Segment(base, at, segment.hi, seen[i:], devs[i:]),
    )


def changes(seen: Sequence[Seen], stored: Sequence[Seen]) -> list[tuple[str, Change]]:
    """The relpaths that differ between what was seen and what is stored, in order."""
    if seen == stored:
        return []
    seen_odd = {t[0] for t in set(seen).difference(stored)}
    stored_odd = {t[0] for t in set(stored).difference(seen)}
    found = [(n, Change.NEW) for n in seen_odd - stored_odd]
    found += [(n, Change.CHANGED) for n in seen_odd & stored_odd]
    found += [(n, Change.GONE) for n in stored_odd - seen_odd]
    return sorted(found)


def _differences(
    segment: Segment,
    stored: list[Seen],
    tracked: TrackedSource,
    unreadable: Callable[[str], bool],
) -> Iterator[Difference]:
    found = changes(segment.seen, stored)
    if not found:
        return
    index = {t[0]: i for i, t in enumerate(segment.seen)}
    records = tracked.files(segment) if any(c is not Change.NEW for _, c in found) else {}
    for relpath, change in found:
        if change is Change.GONE:
            if not unreadable(relpath):
                yield Difference(change, relpath, tracked=records[relpath])
            continue
        i = index[relpath]
        _, size, mtime_ns, inode = segment.seen[i]
        stat = FileStat(size, mtime_ns, inode, segment.devs[i])
        yield Difference(change, relpath, stat, records.get(relpath))


def coalesce(events: Sequence[FsEvent]) -> list[FsEvent]:
    """A batch of watcher events with each run of adjacent plain file events on one path
    (created, modified, deleted: no folder, no rename) as one event.

    Every such event queues its path for the same moment, now plus the settle time (a
    deletion too), so the run is recorded as its last event. A copy writes a file as a
    created and a few modified events in a row; recorded one by one, each cost a lookup
    of the path's jobs.
    """
    out: list[FsEvent] = []
    for event in events:
        last = out[-1] if out else None
        if (
            last is not None
            and _plain(event)
            and _plain(last)
            and (event.folder, event.relpath) == (last.folder, last.relpath)
        ):
            out[-1] = event
            continue
        out.append(event)
    return out


def _plain(event: FsEvent) -> bool:
    return not event.is_dir and event.kind not in (
        EventKind.MOVED,
        EventKind.RESCAN,
        EventKind.ROOT_GONE,
    )


def needs_hash(tracked: TrackedFile | None, stat: FileStat) -> bool:
    """A file is re-read only when it is new or its size, mtime or inode changed."""
    return tracked is None or tracked.sha256 is None or not tracked.stat.same_content_as(stat)


def backoff(attempt: int, *, base: float = 2.0, cap: float = 300.0, jitter: float = 0.5) -> float:
    """Capped exponential backoff; ``jitter`` in [0, 1) is supplied by the caller."""
    return float(min(cap, base * (2 ** max(0, attempt - 1))) * (0.5 + jitter / 2))


def retry_delay(attempt: int, retry_after: float | None, jitter: float) -> float:
    """The job-level wait after a transient failure: backoff, but never before Retry-After."""
    return max(backoff(attempt, jitter=jitter), retry_after or 0.0)


@dataclass(frozen=True, slots=True)
class LateAnswers:
    """How long a server may still be working on a POST we stopped waiting for.

    A request that timed out (or met a gateway's 504) may still be stored, later: the
    server reads a large body slowly and then processes it. Reconciling before that
    moment finds nothing and sends the image a second time. So the look comes no sooner
    than the request timeout (or ``floor``, if longer), plus ``per_mb`` seconds per MB
    of body.
    """

    timeout: float = 30.0
    floor: float = 0.0
    per_mb: float = 5.0

    def wait(self, size: int) -> float:
        return max(self.timeout, self.floor) + self.per_mb * size / 1_000_000


def matches_intent(
    remote: RemoteAsset,
    *,
    name: str,
    tags: Iterable[str],
    since: float | None = None,
    created_at: float | None = None,
    file_size: int | None = None,
    size: int | None = None,
) -> bool:
    """Whether a listed asset is the one an interrupted upload may have created.

    Name and the exact tag set must match (checked here, never by the server's filter);
    without an identity tag, the asset must also be created at or after the attempt and,
    when the caller fetched it, have the same size.
    """
    if remote.name != name or set(remote.tags) != set(tags):
        return False
    if since is not None and created_at is not None and created_at + 2.0 < since:
        return False
    return not (size is not None and file_size is not None and size != file_size)


def hold_deletes(waiting: int, new: int, max_deletes: int, *, held: bool = False) -> bool:
    """Whether ``new`` deletions join the held ones: the one home of the ``max_deletes`` rule.

    A burst of events or a scan that would delete more than ``max_deletes`` assets of a
    folder is held (with the ``waiting`` ones) until an operator approves; once deletions
    of a folder are ``held``, later ones join them rather than slip past.
    """
    return held or waiting + new > max_deletes


#: A file is read a little after it has settled, not on the very edge.
SETTLE_MARGIN = 0.05


def settle_wait(age: float, settle: float, *, seen_unchanged: bool) -> float | None:
    """How long a file must still be left alone before it is read; None once it has settled.

    ``age`` is seconds since its mtime. A file changed ``settle`` seconds ago or earlier
    is still. An mtime in the future (a camera card in local time, a NAS with a fast
    clock) says nothing: such a file must look the same twice, one settle apart.
    """
    if age >= settle:
        return None
    if age >= 0:
        return settle - age + SETTLE_MARGIN
    return None if seen_unchanged else settle


@dataclass(frozen=True, slots=True)
class RootFacts:
    """What is known of a folder's root when deciding whether deletions may be mirrored."""

    absent: bool
    other_device: bool
    approved: bool
    reason: str | None = None
    #: The root's path now names another folder than the one recorded (its inode).
    replaced: bool = False
    #: The root lists empty where several files were tracked, or (a replaced root) at all
    #: (None: not looked at).
    emptied: bool | None = None


EMPTY_ROOT = "root is empty where files were tracked (unmounted?)"


def root_problem(facts: RootFacts) -> tuple[str, str] | None:
    """(problem, folder health) when deletions must not be mirrored now, or None.

    Missing or unreadable: unavailable. On another device, or empty where several files
    were tracked (what an unmounted drive looks like), until an operator approves:
    guarded. One tracked file leaving an empty root is an ordinary last deletion. A root
    replaced by another folder holding files is not ours to read: unavailable until
    accepted; replaced by an empty one, it is what an unmounted drive's mount point looks
    like: guarded as such.
    """
    if facts.absent:
        return facts.reason or "root unavailable", "unavailable"
    if facts.approved:
        return None
    if facts.replaced and not facts.emptied:
        return facts.reason or "root replaced", "unavailable"
    if facts.other_device:
        return facts.reason or "root on another device", "guarded"
    if facts.emptied:
        return EMPTY_ROOT, "guarded"
    return None


def root_needs_listing(facts: RootFacts) -> bool:
    """Whether :func:`root_problem` still needs to know if the root was emptied."""
    return not (facts.absent or facts.approved or facts.other_device)
