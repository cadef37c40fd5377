"""Filesystem hints in: one watcher per folder, a bounded queue, the store in batches.

The watchdog handler only puts events on a bounded queue (it must never block or raise);
the recorder thread writes them to SQLite in batches, so nothing acts on an event before
it is durable. A full queue, a dead observer or a root that vanished never loses a
change: each one asks for a scan, and the scan is the truth.

Watchers are started, replaced and retired only by the daemon's main loop
(:meth:`Intake.ensure_watcher`); the recorder thread merely notes a root that went away.
Starting one walks the folder's whole tree, so it runs on a thread of its own (one per
folder at most): a huge or hostile tree delays no other folder. The folder's scan is
asked for once the watch is placed (a scan that starts after it misses nothing, so no
second one is needed: on a first start with 100k files that is a second full walk and a
look per file saved), or after ``FIRST_SCAN_WAIT`` if the watcher is slower than that
or fails, whatever the watcher then does.
The scans all this asks for wait in :class:`ScanRequests`, each at most once.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import structlog

from syncd import fstype, scanner
from syncd.config import FolderConfig
from syncd.errors import StoreError
from syncd.ledger import Ledger
from syncd.model import EventKind, FsEvent
from syncd.tags import Rules
from syncd.watcher import FolderWatcher

log = structlog.get_logger(__name__)

EVENT_QUEUE_SIZE = 20_000
BATCH = 1000
#: How soon a watcher that failed to start is tried again (seconds).
WATCH_RETRY_SECONDS = 30.0
#: How long a folder's scan waits for its watcher to be placed, at most (seconds).
FIRST_SCAN_WAIT = 5.0


class ScanRequests:
    """Scans asked for and not yet started, each (folder, prefix) queued once.

    A burst of folder events would otherwise queue a prefix scan per event. A full scan
    covers every prefix scan of its folder, so none is queued beside it, and one already
    queued is dropped when it comes up. A request is forgotten as its scan starts: a
    change during the scan may ask for the same scan again, and must get it.
    """

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._pending: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def put(self, folder: str, prefix: str = "") -> bool:
        """Queue a scan unless it (or a full scan of the folder) already waits."""
        with self._lock:
            if (folder, "") in self._pending or (folder, prefix) in self._pending:
                return False
            self._pending.add((folder, prefix))
        self._queue.put((folder, prefix))
        return True

    def get(self, timeout: float) -> tuple[str, str] | None:
        """The next scan to run, or None if none came within ``timeout`` seconds."""
        while True:
            try:
                folder, prefix = self._queue.get(timeout=timeout)
            except queue.Empty:
                return None
            with self._lock:
                self._pending.discard((folder, prefix))
                if not prefix or (folder, "") not in self._pending:
                    return folder, prefix

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)


class Intake:
    """Watchers, the event queue and the recorder; ``request_scan`` and ``wake`` go out."""

    def __init__(
        self,
        ledger: Ledger,
        rules: Mapping[str, Rules],
        *,
        request_scan: Callable[[str, str], None],
        wake: Callable[[], None],
        max_watches: int | None = None,
        mountinfo: Path = fstype.MOUNTINFO,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.mountinfo = mountinfo
        #: Seconds that only go forward: when to retry a watcher, when to stop waiting.
        self.monotonic = monotonic
        self.ledger = ledger
        self.rules = rules
        self.request_scan = request_scan
        self.wake = wake
        # Caps each folder's inotify watches (None: the system's limit is the only one).
        self.max_watches = max_watches
        self.events: queue.Queue[FsEvent] = queue.Queue(EVENT_QUEUE_SIZE)
        self.watchers: dict[str, FolderWatcher] = {}
        self._overflowed: set[str] = set()
        self._gone_roots: set[str] = set()
        self._starting: set[str] = set()
        self._retry_at: dict[str, float] = {}
        #: Folders whose watcher is starting: when their scan stops waiting for it.
        self._scan_due: dict[str, float] = {}
        self._closed = False
        self._lock = threading.Lock()

    # -- the watchdog side -------------------------------------------------------------

    def sink(self, event: FsEvent) -> None:
        """Called on watchdog's thread: never blocks for long, never raises."""
        try:
            self.events.put_nowait(event)
        except queue.Full:
            with self._lock:
                first = event.folder not in self._overflowed
                self._overflowed.add(event.folder)
            if first:
                log.warning("events.overflow", folder=event.folder)
                self.request_scan(event.folder, "")

    def scanned(self, folder: str) -> None:
        """A full scan ran: events dropped for this folder before it are accounted for."""
        with self._lock:
            self._overflowed.discard(folder)

    # -- the recorder ------------------------------------------------------------------

    def record_loop(self, stopping: threading.Event) -> None:
        """Write queued events to the store in batches until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                first = self.events.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            with contextlib.suppress(queue.Empty):
                while len(batch) < BATCH:
                    batch.append(self.events.get_nowait())
            self.record(batch)

    def drain(self) -> None:
        """At stop: record what is still queued (what is lost here, the next scan finds)."""
        batch: list[FsEvent] = []
        with contextlib.suppress(queue.Empty):
            while True:
                batch.append(self.events.get_nowait())
        if batch:
            with contextlib.suppress(Exception):
                self.record(batch)

    def record(self, batch: list[FsEvent]) -> None:
        for event in batch:
            if event.kind is EventKind.RESCAN:
                self.request_scan(event.folder, "")
            elif event.kind is EventKind.ROOT_GONE:
                self._root_gone(event.folder)
        try:
            scans = self.ledger.record_events(batch)
        except StoreError as exc:
            log.warning("events.not_recorded", error=str(exc), count=len(batch))
            for folder in {e.folder for e in batch}:
                self.request_scan(folder, "")
            return
        for folder, prefix in scans:
            self.request_scan(folder, prefix)
        self.wake()

    # -- watchers (main loop only) -----------------------------------------------------

    def ensure_watcher(self, folder: FolderConfig) -> None:
        """Start a watcher where none runs; replace a dead or retired one (and rescan)."""
        if self._still_starting(folder.key):
            return
        with self._lock:
            watcher = self.watchers.get(folder.key)
            retired = folder.key in self._gone_roots
            self._gone_roots.discard(folder.key)
        if watcher is not None and watcher.alive() and not retired:
            return
        if watcher is not None:
            if not retired:
                log.warning("watcher.dead", folder=folder.key)
            self._stop_watcher(folder.key)
        health = scanner.root_health(folder.path, expected_dev=None)
        if not health.ok:
            self._mark_unavailable(folder.key, health.reason or "unavailable")
            return
        if self.monotonic() < self._retry_at.get(folder.key, 0.0):
            return
        with self._lock:
            self._starting.add(folder.key)
            self._scan_due[folder.key] = self.monotonic() + FIRST_SCAN_WAIT
        threading.Thread(
            target=self._start_watcher, args=(folder,), name="syncd-watch-start", daemon=True
        ).start()

    def _still_starting(self, key: str) -> bool:
        """Whether the folder's watcher is being started; past ``FIRST_SCAN_WAIT`` its scan
        is asked for without it (once)."""
        with self._lock:
            if key not in self._starting:
                return False
            due = self._scan_due.get(key)
            overdue = due is not None and self.monotonic() >= due
            if overdue:
                del self._scan_due[key]
        if overdue:
            self.request_scan(key, "")
        return True

    def _start_watcher(self, folder: FolderConfig) -> None:
        """On its own thread: walk the tree and place the watches; failures are this folder's."""
        choice = fstype.choose(folder.polling, folder.path, fstype.read_mounts(self.mountinfo))
        watcher = FolderWatcher(
            folder.key,
            folder.path,
            self.rules[folder.key],
            self.sink,
            polling=choice.polling,
            poll_interval=folder.poll_interval_seconds,
            max_watches=self.max_watches,
            max_depth=folder.max_depth,
        )
        try:
            started = watcher.start()
        except Exception:
            log.exception("watcher.start_failed", folder=folder.key)
            started = False
        with self._lock:
            self._starting.discard(folder.key)
            self._scan_due.pop(folder.key, None)
            keep = started and not self._closed
            if keep:
                self.watchers[folder.key] = watcher
            elif not started:
                self._retry_at[folder.key] = self.monotonic() + WATCH_RETRY_SECONDS
        if not keep:
            watcher.stop()
            if not started:  # no watch: the scan (merged if still queued) is the only look
                self.request_scan(folder.key, "")
            return
        reason = choice.reason if watcher.mode == choice.mode else "the inotify watch limit"
        log.info("watcher.mode", folder=folder.key, mode=watcher.mode, why=reason)
        if choice.network and not choice.polling:
            log.warning("watcher.network_inotify", folder=folder.key, why=choice.reason)
        # Events from before the watch may be missed: scan (merged if still queued).
        # Asked for before the store is written: a failed write must not lose the scan.
        self.request_scan(folder.key, "")
        try:
            self.ledger.store.set_folder(folder.key, watch_mode=watcher.mode, watch_reason=reason)
        except StoreError as exc:
            log.warning("folder.not_marked", folder=folder.key, error=str(exc))

    def stop_all(self) -> None:
        with self._lock:
            self._closed = True
        for key in list(self.watchers):
            self._stop_watcher(key)

    def _stop_watcher(self, key: str) -> None:
        with self._lock:
            watcher = self.watchers.pop(key, None)
        if watcher is not None:
            with contextlib.suppress(Exception):
                watcher.stop()

    def _root_gone(self, key: str) -> None:
        """Heard on the recorder thread; the main loop retires the watcher."""
        with self._lock:
            self._gone_roots.add(key)
        try:
            self._mark_unavailable(key, "root disappeared (unmounted?); holding")
        except StoreError as exc:
            # Not fatal to the recorder: retiring the watcher, the main loop finds the root
            # missing and marks it, pass after pass until the store takes the write.
            log.warning("folder.not_marked", folder=key, error=str(exc))

    def _mark_unavailable(self, key: str, reason: str) -> None:
        store = self.ledger.store
        row = store.folder_row(key) or {}
        if row.get("health") != "unavailable":
            log.warning("folder.unavailable", folder=key, reason=reason)
            store.set_folder(key, health="unavailable", reason=reason)
