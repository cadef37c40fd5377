"""Filesystem hints for one hot folder: watchdog events in, :class:`FsEvent` out.

The watcher only records; the store and the planner decide. What matters most:

* The handler never raises: an exception in a watchdog handler ends the observer's
  thread and every later event, so each failure is logged and becomes a ``RESCAN``.
* A root that goes away is one ``ROOT_GONE``, never per-file deletions (an unmounted
  disk must not read as "the user deleted everything"); then the watcher is silent and
  :meth:`FolderWatcher.alive` is false.
* Lost events are said out loud: an inotify queue overflow or the watch limit give a
  ``RESCAN``; the limit reached at start falls back to polling for that folder.

No watch is placed inside an ignored folder: the inotify emitter gets a guarded view of
its inotify instance that refuses those paths. A folder created or moved in arrives as
``CREATED`` with ``is_dir=True`` (scan it: its files may lack events of their own), a
folder renamed within the root as ``MOVED`` with ``is_dir=True``. :meth:`start` blocks
while watchdog walks the tree to place watches (inotify) or takes its first snapshot.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import structlog
from watchdog import events as wde
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver, ObservedWatch
from watchdog.observers.polling import PollingObserverVFS

from syncd.model import EventKind, FsEvent
from syncd.tags import Rules, is_storable, printable

log = structlog.get_logger(__name__)

Sink = Callable[[FsEvent], None]
Mode = Literal["inotify", "polling"]

_JOIN_SECONDS = 5.0
_LIMIT_ERRNOS = frozenset({errno.ENOSPC, errno.EMFILE})

# A file's content or metadata changed, or a writer closed it ("settled, maybe"): MODIFIED.
# Folder "modified" events only echo changes of their entries, and opens are noise.
_FILE_KINDS = {
    wde.EVENT_TYPE_CREATED: EventKind.CREATED,
    wde.EVENT_TYPE_DELETED: EventKind.DELETED,
    wde.EVENT_TYPE_MODIFIED: EventKind.MODIFIED,
    wde.EVENT_TYPE_ATTRIB: EventKind.MODIFIED,
    wde.EVENT_TYPE_CLOSED: EventKind.MODIFIED,
}
_DIR_KINDS = {wde.EVENT_TYPE_CREATED: EventKind.CREATED, wde.EVENT_TYPE_DELETED: EventKind.DELETED}

#: What the observer asks for. Leaving out opens and read-only closes keeps inotify from
#: queueing two events for every file syncd itself hashes (and overflowing during a scan).
_WANTED: list[type[FileSystemEvent]] = [
    *(wde.FileCreatedEvent, wde.FileDeletedEvent, wde.FileMovedEvent, wde.FileModifiedEvent),
    *(wde.FileAttribEvent, wde.FileClosedEvent),
    *(wde.DirCreatedEvent, wde.DirDeletedEvent, wde.DirMovedEvent),
]


class _RescanEvent(FileSystemEvent):
    """Put into the observer's own queue so the sink is only ever called by one thread."""

    event_type = "rescan"


class _Paths:
    """Absolute paths to relpaths, and whether the root is still the one we started on."""

    def __init__(self, root: Path, rules: Rules, max_depth: int | None = None) -> None:
        self.root_path = Path(root).absolute()
        self.root = str(self.root_path)
        self.rules = rules
        self.max_depth = max_depth
        self.identity: tuple[int, int] | None = None

    def too_deep(self, relpath: str) -> bool:
        """A folder below ``max_depth`` levels is not watched (the scan skips it too)."""
        return self.max_depth is not None and relpath.count("/") + 1 > self.max_depth

    def rel(self, path: bytes | str) -> str | None:
        text = os.fsdecode(path)
        if text == self.root:
            return ""
        if text.startswith(self.root + os.sep):
            return text[len(self.root) + 1 :].replace(os.sep, "/")
        return None

    def skips(self, relpath: str, *, is_dir: bool, parents_checked: bool = False) -> bool:
        """Ignored by the rules, or a name that could not be stored anyway."""
        if not is_storable(relpath):
            return True
        if is_dir:
            return self.rules.ignores_dir(relpath, parents_checked=parents_checked)
        return self.rules.ignores_file(relpath, parents_checked=parents_checked)

    def root_intact(self) -> bool:
        try:
            st = self.root_path.stat()
        except OSError:
            return False
        return stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == self.identity


class _Handler(FileSystemEventHandler):
    """Turns watchdog events into FsEvents; swallows every failure as a RESCAN."""

    def __init__(self, folder: str, paths: _Paths, sink: Sink) -> None:
        self.folder = folder
        self.paths = paths
        self.sink = sink
        self.gone = False

    def dispatch(self, event: FileSystemEvent) -> None:
        try:
            for fs_event in self._translate(event):
                self.sink(fs_event)
        except Exception:  # noqa: BLE001 - a raising handler would kill the observer thread
            self._rescue(event)

    def _rescue(self, event: FileSystemEvent) -> None:
        """Log and ask for a RESCAN; nothing here may raise, not even the logging."""
        with contextlib.suppress(Exception):
            log.exception("watcher.handler_failed", folder=self.folder, source=repr(event))
        try:
            self.sink(FsEvent(self.folder, EventKind.RESCAN))
        except Exception:  # the daemon's periodic scan catches up
            with contextlib.suppress(Exception):
                log.exception("watcher.rescan_failed", folder=self.folder)

    def _translate(self, event: FileSystemEvent) -> list[FsEvent]:
        src = self.paths.rel(event.src_path)
        if self.gone or src is None:
            return []
        if isinstance(event, _RescanEvent):
            return [FsEvent(self.folder, EventKind.RESCAN)]
        kind, is_dir = event.event_type, event.is_directory
        if kind in (wde.EVENT_TYPE_DELETED, wde.EVENT_TYPE_MOVED) and (
            src == "" or not self.paths.root_intact()
        ):
            self.gone = True
            log.warning("watcher.root_gone", folder=self.folder)
            return [FsEvent(self.folder, EventKind.ROOT_GONE)]
        if kind == wde.EVENT_TYPE_MOVED:
            return self._moved(src, self.paths.rel(event.dest_path), is_dir=is_dir)
        return self._simple(kind, src, is_dir=is_dir)

    def _moved(self, src: str, dest: str | None, *, is_dir: bool) -> list[FsEvent]:
        """A rename; an ignored or outside destination makes it a deletion of the source."""
        if not dest or self.paths.skips(dest, is_dir=is_dir):
            return self._simple(wde.EVENT_TYPE_DELETED, src, is_dir=is_dir)
        if not is_storable(src):
            return self._simple(wde.EVENT_TYPE_CREATED, dest, is_dir=is_dir)
        # An ignored source (x.jpg.tmp renamed to x.jpg) still arrives as MOVED: the store
        # does not know the source, and a move from an unknown path is a create.
        return [FsEvent(self.folder, EventKind.MOVED, src, dest_relpath=dest, is_dir=is_dir)]

    def _simple(self, kind: str, src: str, *, is_dir: bool) -> list[FsEvent]:
        fs_kind = (_DIR_KINDS if is_dir else _FILE_KINDS).get(kind)
        if fs_kind is None or not src or self.paths.skips(src, is_dir=is_dir):
            return []
        return [FsEvent(self.folder, fs_kind, src, is_dir=is_dir)]


class _GuardedFD:
    """What the inotify emitter takes for its inotify instance: the real one, guarded.

    It refuses watches in ignored folders (watchdog skips a subfolder whose watch fails),
    keeps this folder within ``max_watches``, and taps the overflow and watch-limit news.
    """

    def __init__(
        self, fd: Any, paths: _Paths, max_watches: int | None, trouble: Callable[[str], None]
    ) -> None:
        self.fd = fd
        self.limit_hit = False
        self._paths = paths
        self._max_watches = max_watches
        self._trouble = trouble
        self._taps: dict[int, _Tap] = {}
        self._watches: set[int] = set()
        self._lock = threading.Lock()

    def add_callback(self, path: bytes, mask: int, callback: Any, id_: int) -> int:
        rel = self._paths.rel(path)
        if rel and self._paths.skips(rel, is_dir=True):
            raise OSError(errno.EPERM, "ignored folder: not watched", os.fsdecode(path))
        if rel and self._paths.too_deep(rel):
            raise OSError(errno.EPERM, "deeper than max_depth: not watched", os.fsdecode(path))
        with self._lock:
            full = self._max_watches is not None and len(self._watches) >= self._max_watches
        if full:
            self.reached_limit(path)
            raise OSError(errno.ENOSPC, "watch budget of this folder reached", os.fsdecode(path))
        tap = self._taps.setdefault(id_, _Tap(callback, self))
        try:
            wd: int = self.fd.add_callback(path, mask, tap, id_)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                self.reached_limit(path)
            raise
        with self._lock:
            self._watches.add(wd)
        return wd

    def remove_callbacks(self, callbacks: list[tuple[int, int]]) -> None:
        self.fd.remove_callbacks(callbacks)
        for wd, _ in callbacks:
            self.forget(wd)

    def forget(self, wd: int) -> None:
        with self._lock:
            self._watches.discard(wd)

    def reached_limit(self, path: bytes) -> None:
        if not self.limit_hit:
            self.limit_hit = True
            log.warning(
                "watcher.watch_limit",
                path=printable(os.fsdecode(path)),
                hint="raise fs.inotify.max_user_watches, or set polling = true for this folder",
            )
            self._trouble("watch limit")

    def overflowed(self) -> None:
        log.warning("watcher.queue_overflow", root=self._paths.root)
        self._trouble("inotify queue overflow")


class _Tap:
    """Stands in for one watch group at the inotify reader, to hear what it hears."""

    def __init__(self, group: Any, guard: _GuardedFD) -> None:
        self._group = group
        self._guard = guard

    def on_event(self, event: Any) -> None:
        self._group.on_event(event)

    def on_watch_deleted(self, wd: int) -> None:
        self._guard.forget(wd)
        self._group.on_watch_deleted(wd)

    def on_queue_overflow(self) -> None:
        self._guard.overflowed()
        self._group.on_queue_overflow()


def _inotify_observer(guard: Callable[[Any], _GuardedFD]) -> BaseObserver:
    """An inotify observer with its own inotify instance, seen through the guard."""
    from watchdog.observers.inotify import InotifyEmitter  # noqa: PLC0415 - Linux only
    from watchdog.observers.inotify_c import InotifyFD  # noqa: PLC0415 - Linux only

    class _InotifyObserver(BaseObserver):
        def __init__(self) -> None:
            self.inotify_fd = InotifyFD()
            self.inotify_fd.start()
            super().__init__(InotifyEmitter, inotify_fd=guard(self.inotify_fd))

        def on_thread_stop(self) -> None:
            super().on_thread_stop()
            self.inotify_fd.stop()
            if self.inotify_fd.is_alive():
                self.inotify_fd.join()

    return _InotifyObserver()


def _polling_observer(paths: _Paths, interval: float) -> BaseObserver:
    """A polling observer whose snapshots skip ignored names and never follow symlinks."""

    def stat_entry(path: str) -> os.stat_result:
        if path == paths.root:
            return paths.root_path.stat()
        return os.lstat(path)

    def listdir(path: str | None) -> Iterator[os.DirEntry[str]]:
        base = paths.rel(path or paths.root) or ""
        with os.scandir(path) as entries:
            for entry in entries:
                rel = f"{base}/{entry.name}" if base else entry.name
                is_dir = entry.is_dir(follow_symlinks=False)
                if is_dir and paths.too_deep(rel):
                    continue
                if not paths.skips(rel, is_dir=is_dir, parents_checked=True):
                    yield entry

    return PollingObserverVFS(stat_entry, listdir, polling_interval=interval)


class FolderWatcher:
    """One observer (and its few threads) for one hot folder; see the module docstring.

    ``sink`` is called from the observer's thread only, one event at a time; it should
    hand the event on quickly (a queue, a store insert), as stop() waits for it.

    ``max_watches`` caps the inotify watches this folder may take, so one huge tree
    falls back to polling instead of starving the other folders of the system's pool.
    """

    def __init__(
        self,
        folder_key: str,
        root: Path,
        rules: Rules,
        sink: Sink,
        *,
        polling: bool = False,
        poll_interval: float = 5.0,
        max_watches: int | None = None,
        max_depth: int | None = None,
    ) -> None:
        self.folder_key = folder_key
        self._paths = _Paths(root, rules, max_depth)
        self._polling = polling or sys.platform != "linux"
        self._poll_interval = poll_interval
        self._max_watches = max_watches
        self._observer: BaseObserver | None = None
        self._watch: ObservedWatch | None = None
        self._handler = _Handler(folder_key, self._paths, sink)
        self._guard: _GuardedFD | None = None
        self._mode: Mode = "polling" if self._polling else "inotify"

    @property
    def mode(self) -> Mode:
        """How events are found now: after a fallback this says "polling"."""
        return self._mode

    def start(self) -> bool:
        """Watch the folder; False when its root is missing or cannot be watched (retry later)."""
        if self._observer is not None:
            return True
        try:
            st = self._paths.root_path.stat()
        except OSError as exc:
            log.warning("watcher.root_unavailable", folder=self.folder_key, error=exc.strerror)
            return False
        if not stat.S_ISDIR(st.st_mode):
            log.warning("watcher.root_not_a_directory", folder=self.folder_key)
            return False
        self._paths.identity = (st.st_dev, st.st_ino)
        self._handler.gone = False
        self._guard = None
        self._mode = "polling" if self._polling else "inotify"
        if self._polling:
            return self._launch(lambda: _polling_observer(self._paths, self._poll_interval))
        return self._start_inotify()

    def _guarded(self, fd: Any) -> _GuardedFD:
        self._guard = _GuardedFD(fd, self._paths, self._max_watches, self._trouble)
        return self._guard

    def _start_inotify(self) -> bool:
        try:
            started = self._launch(lambda: _inotify_observer(self._guarded), fallible=True)
        except OSError as exc:
            return self._fall_back(exc.strerror or str(exc))
        except RecursionError:
            # watchdog walks the tree recursively (os.walk); the polling snapshot below
            # stops at max_depth instead.
            return self._fall_back("folder tree too deep for the inotify walk")
        if started and self._guard is not None and self._guard.limit_hit:
            self.stop()
            return self._fall_back("inotify watch limit reached")
        return started

    def _fall_back(self, reason: str) -> bool:
        log.warning(
            "watcher.polling_fallback",
            folder=self.folder_key,
            reason=reason,
            hint="raise fs.inotify.max_user_watches / max_user_instances",
        )
        self._mode = "polling"
        started = self._launch(lambda: _polling_observer(self._paths, self._poll_interval))
        if started:
            self._trouble("fell back to polling")
        return started

    def _launch(self, build: Callable[[], BaseObserver], *, fallible: bool = False) -> bool:
        """Build, schedule and start an observer; limit errors re-raise when ``fallible``."""
        observer: BaseObserver | None = None
        try:
            observer = build()
            self._watch = observer.schedule(
                self._handler, self._paths.root, recursive=True, event_filter=_WANTED
            )
            self._observer = observer
            observer.start()
        except BaseException as exc:
            self._observer = None
            _halt(observer)
            if not isinstance(exc, OSError) or (fallible and exc.errno in _LIMIT_ERRNOS):
                raise
            log.warning("watcher.start_failed", folder=self.folder_key, error=exc.strerror)
            return False
        log.info("watcher.started", folder=self.folder_key, mode=self._mode)
        return True

    def _trouble(self, reason: str) -> None:
        """Events may have been lost: queue a RESCAN behind whatever is already queued."""
        observer, watch = self._observer, self._watch
        if observer is None or watch is None:
            return
        log.info("watcher.rescan_needed", folder=self.folder_key, reason=reason)
        observer.event_queue.put((_RescanEvent(self._paths.root), watch))

    def stop(self) -> None:
        """Stop the observer and wait for its threads; safe to call more than once."""
        observer, self._observer = self._observer, None
        _halt(observer)

    def alive(self) -> bool:
        """Whether events still flow: threads running, root the same, nothing given up."""
        observer = self._observer
        if observer is None or self._handler.gone:
            return False
        if self._mode == "inotify" and self._guard is not None and self._guard.limit_hit:
            return False
        if not observer.is_alive() or not all(e.is_alive() for e in list(observer.emitters)):
            return False
        return self._paths.root_intact()


def _halt(observer: BaseObserver | None) -> None:
    if observer is None:
        return
    observer.stop()
    if observer.is_alive():
        observer.join(_JOIN_SECONDS)
        if observer.is_alive():
            log.warning("watcher.stop_timeout", seconds=_JOIN_SECONDS)
