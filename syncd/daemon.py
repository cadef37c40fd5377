"""Wiring: build everything from the config, run the threads, stop cleanly.

Threads (a fixed set, never one per file):

* one watchdog observer per folder and the recorder that writes their events to the
  store in batches (``intake``: nothing acts on an event before it is in SQLite);
* the scanner, which runs requested scans one at a time;
* two hash workers for ``file`` jobs and ``api.concurrency`` workers for uploads/deletes;
* the main thread: folder health, periodic rescans, the key probe, sd_notify.

Signal handlers only set a flag. On stop, workers finish their current job if they can
within the deadline; anything cut off is an in-flight job the next start recovers. A
thread that dies of an unexpected error is logged and stops the daemon with ``failed``
set, so ``syncd run`` exits 1 and systemd restarts it, rather than running on without it.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from syncd import beacon, summary
from syncd.admin import Admin
from syncd.alerts import Alerts
from syncd.api import AssetsClient
from syncd.archive import AfterUpload
from syncd.breaker import Breaker
from syncd.config import Config, FolderConfig, require_api_key
from syncd.context import Context
from syncd.dedupe import DedupeWorkflow
from syncd.deletions import DeleteWorkflow
from syncd.departures import Departures
from syncd.errors import ApiError, AuthError, PermanentError, StoreError
from syncd.fstype import MOUNTINFO
from syncd.handoff import Handoff
from syncd.intake import Intake, ScanRequests
from syncd.ledger import Ledger
from syncd.lifecycle import Lifecycle
from syncd.model import JobKind, Workflow
from syncd.notify import Notifier
from syncd.plan import LateAnswers
from syncd.processing import Pace, ProcessingFollowUp
from syncd.store import Store
from syncd.sweep import Sweeper
from syncd.tags import Rules
from syncd.uploader import FileWorkflow, UploadWorkflow
from syncd.verify import index_library
from syncd.watcher import FolderWatcher
from syncd.workers import API_KINDS, FILE_KINDS, STORE_RETRY_SECONDS, Workers

if TYPE_CHECKING:
    from syncd.metrics import Metrics

log = structlog.get_logger(__name__)

HASH_WORKERS = 2
#: Uploads handed from the hash workers to each API worker in memory, at most.
HANDOFF_PER_WORKER = 2
#: Finished jobs are kept this long (seconds) for `status` and for reconciliation.
PRUNE_AFTER = 30 * 86400
PRUNE_EVERY = 3600.0
STOP_DEADLINE = 8.0


@dataclass
class Timers:
    """Periods of the main loop; tests shorten them."""

    tick: float = 0.5
    heartbeat: float = 5.0
    key_probe: float = 30.0
    #: The first look at an upload's processing, doubled per look up to the config's cap.
    processing_first: float = 5.0


class Daemon:
    """One syncd: ``start()``, then ``run_forever()`` or ``sync_once()``; ``stop()``."""

    def __init__(
        self,
        config: Config,
        *,
        client: AssetsClient | None = None,
        notifier: Notifier | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        timers: Timers | None = None,
        max_watches: int | None = None,
        mountinfo: Path = MOUNTINFO,
    ) -> None:
        self.config = config
        self.mountinfo = mountinfo
        #: Wall-clock epoch seconds: what is recorded (jobs, heartbeats, the key probe).
        self.clock = clock
        #: Seconds that only go forward: every interval and deadline of the daemon's own
        #: (rescans, pruning, heartbeats, the stop deadline), untouched by a clock step.
        self.monotonic = monotonic
        self.timers = timers or Timers()
        self.max_watches = max_watches
        self.notifier = notifier or Notifier.from_env()
        self.folders = {f.key: f for f in config.folders}
        self.rules = {f.key: Rules(f.include, f.exclude) for f in config.folders}
        self._client = client
        self.stopping = threading.Event()
        #: Set when a thread died of an unexpected error; the daemon then stops.
        self.failed = False
        self.indexed = threading.Event()
        self.scan_requests = ScanRequests()
        self.threads: list[threading.Thread] = []
        self.store: Store | None = None
        self.ctx: Context | None = None
        self._scanning = threading.Event()
        self._last_scan: dict[str, float] = {}
        self._scan_retry: dict[str, float] = {}
        self._approval_scans: set[str] = set()
        self.workers: Workers | None = None
        self._last_probe = 0.0
        self._next_prune = 0.0
        #: ``run`` or ``sync``: what ``syncd status`` says holds the state database.
        self.role = "run"
        self.beacon: beacon.Beacon | None = None
        self.metrics: Metrics | None = None
        self.alerts: Alerts | None = None
        self._held = 0

    # -- start and stop -------------------------------------------------------------

    def start(self) -> None:
        """Open the store (refusing a second daemon), recover, build the workflows."""
        self.store = Store.open(self.config.state.path, clock=self.clock)
        self.beacon = beacon.Beacon(self.store, self.role, self.clock())
        recovered = self.store.recover()
        if recovered:
            log.info("store.recovered", jobs=recovered)
        client = self._client or AssetsClient(
            self.config.api.base_url,
            require_api_key(self.config).reveal,
            timeout=self.config.api.timeout_seconds,
        )
        self._client = client
        ledger = Ledger(self.store, self.folders)
        self.ctx = Context(
            ledger,
            client,
            self.folders,
            self.rules,
            Breaker(),
            identity_tag=self.config.api.identity_tag,
            clock=self.clock,
            admin=Admin(self.store),
            rand=random.random,
            late=LateAnswers(
                self.config.api.timeout_seconds,
                self.config.api.late_answer_seconds,
                self.config.api.late_answer_seconds_per_mb,
            ),
            handoff=Handoff(HANDOFF_PER_WORKER * self.config.api.concurrency),
        )
        self.intake = Intake(
            ledger,
            self.rules,
            request_scan=self.request_scan,
            wake=self._notify_all,
            max_watches=self.max_watches,
            mountinfo=self.mountinfo,
            monotonic=self.monotonic,
        )
        self.sweeper = Sweeper(self.ctx)
        pace = Pace(self.config.daemon.processing_requests_per_second, self.stopping.wait)
        after_upload = AfterUpload(self.ctx, Departures(self.store, self.folders), pace.turn)
        self.followup = ProcessingFollowUp(
            self.ctx,
            Lifecycle(self.store, self.folders),
            pace,
            first=self.timers.processing_first,
            cap=self.config.daemon.processing_check_max_seconds,
        )
        self.followup.after_round.append(after_upload.round)
        flows: dict[JobKind, Workflow] = {
            JobKind.FILE: FileWorkflow(self.ctx),
            JobKind.UPLOAD: UploadWorkflow(self.ctx),
            JobKind.DELETE: DeleteWorkflow(self.ctx),
            JobKind.DEDUPE: DedupeWorkflow(self.ctx),
        }
        self.workers = Workers(
            self.ctx,
            flows,
            stopping=self.stopping,
            indexed=self.indexed,
            clock=self.clock,
            claim_batch={FILE_KINDS: HASH_WORKERS},
        )
        self._start_extras()

    def _start_extras(self) -> None:
        """The opt-in metrics endpoint and notify command, when the config asks for them."""
        assert self.store is not None and self.ctx is not None
        if self.config.metrics.listen:
            # Only when asked for: prometheus-client is not loaded otherwise.
            from syncd.metrics import Metrics  # noqa: PLC0415

            self.metrics = Metrics(
                self.config.metrics.listen, self.store, self.ctx.breaker, list(self.folders)
            )
            self.metrics.start()
        if self.config.notify.command:
            self.alerts = Alerts(
                self.config.notify.command, min_interval=self.config.notify.min_interval_seconds
            )
            self.alerts.start()
        self._held = self.ctx.admin.held_count()

    def start_threads(self, *, watch: bool = True) -> None:
        self.start_scanner()
        self.start_workers(watch=watch)

    def start_scanner(self) -> None:
        """The scanner thread: it reads the library index of a new database first."""
        self._spawn("syncd-scanner", self._index_then_scan)

    def start_workers(self, *, watch: bool = True) -> None:
        """The recorder (when watching), the job workers and the processing follow-up."""
        if watch:
            self._spawn("syncd-recorder", lambda: self.intake.record_loop(self.stopping))
        workers = self.workers
        assert workers is not None, "start() builds the workers"
        for i in range(HASH_WORKERS):
            self._spawn(f"syncd-hash-{i}", lambda: workers.loop(FILE_KINDS))
        for i in range(self.config.api.concurrency):
            self._spawn(f"syncd-api-{i}", lambda: workers.loop(API_KINDS))
        self._spawn("syncd-processing", self._follow_processing)

    def _follow_processing(self) -> None:
        """Remote processing is followed once the library index (if any) is read."""
        while not self.indexed.wait(0.2):
            if self.stopping.is_set():
                return
        self.followup.loop(self.stopping.wait)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=self._guarded, args=(name, target), name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _guarded(self, name: str, target: Callable[[], None]) -> None:
        """Run a thread's loop; if it dies, say so (redacted, as every log) and stop.

        Left alone, a dead recorder or scanner would go unnoticed while files pile up.
        """
        try:
            target()
        except Exception:
            log.exception("thread.crashed", thread=name)
            self.failed = True
            self.request_stop()
            self._notify_all()

    def request_stop(self) -> None:
        """Safe from a signal handler: only sets a flag."""
        self.stopping.set()

    def stop(self) -> None:
        self.stopping.set()
        self.notifier.stopping()
        if self.ctx is not None:
            self.intake.stop_all()
        self._notify_all()
        deadline = self.monotonic() + STOP_DEADLINE
        for thread in self.threads:
            thread.join(max(0.0, deadline - self.monotonic()))
        if self.ctx is not None:
            self.intake.drain()
        if self.workers is not None:
            self.workers.put_back()
        if self._client is not None:
            self._client.close()
        if self.alerts is not None:
            self.alerts.stop()
        if self.metrics is not None:
            self.metrics.stop()
        if self.store is not None:
            self.store.close()
        unfinished = [t.name for t in self.threads if t.is_alive()]
        log.info("daemon.stopped", unfinished=unfinished, failed=self.failed)

    # -- the loops ------------------------------------------------------------------

    def run_forever(self) -> None:
        """The daemon: watch, scan, work, until asked to stop.

        READY is said as soon as the state is open and recovered and every folder's
        watcher (with its first scan) is asked for; the workers, pruning and the status
        line follow it: systemd (and whatever is ordered after syncd) need not wait for
        them. The scanner starts first, as before the watchers: a new database's library
        index (which uploads wait for) is under way by the time the folders are watched.
        """
        self.start_scanner()
        for folder in self.config.folders:
            self._isolated(self.intake.ensure_watcher, folder, folder=folder.key)
        self.notifier.ready(f"watching {len(self.folders)} folder(s)")
        log.info("daemon.ready", folders=list(self.folders))
        self.start_workers()
        self._maintain()
        self.notifier.status(self._status_text())
        last_beat = 0.0
        beat = min(self.timers.heartbeat, self.notifier.watchdog_interval() or float("inf"))
        while not self.stopping.wait(self.timers.tick):
            self._maintain()
            if self.monotonic() - last_beat >= beat:
                last_beat = self.monotonic()
                self._heartbeat()

    def _maintain(self) -> None:
        """One pass of housekeeping; each folder's failure is its own, none is fatal.

        Nothing a hot folder holds may delay another folder's watch or scan, the key
        probe or pruning: each step runs in its own ``try``.
        """
        for folder in self.config.folders:
            self._isolated(self._maintain_folder, folder, folder=folder.key)
        self._isolated(self._probe_key)
        self._isolated(self._prune)
        self._isolated(self._take_requests)
        self._isolated(self._publish)

    def _maintain_folder(self, folder: FolderConfig) -> None:
        self.intake.ensure_watcher(folder)
        self._periodic_rescan(folder)
        self._scan_if_approved(folder)

    @staticmethod
    def _isolated(step: Callable[..., None], *args: Any, **where: str) -> None:
        try:
            step(*args)
        except StoreError as exc:
            log.warning("daemon.maintain_failed", error=str(exc), **where)
        except Exception:
            log.exception("daemon.maintain_failed", **where)

    def _prune(self) -> None:
        """Once an hour, forget finished jobs older than a month: the queue stays small."""
        if self.monotonic() < self._next_prune:
            return
        self._next_prune = self.monotonic() + PRUNE_EVERY
        assert self.ctx is not None
        removed = self.ctx.admin.prune(before=self.clock() - PRUNE_AFTER)
        if removed:
            log.info("queue.pruned", jobs=removed)

    def _heartbeat(self, progress: dict[str, int] | None = None) -> None:
        healthy = all(t.is_alive() for t in self.threads)
        if healthy:
            self.notifier.watchdog()
        counts: dict[str, dict[str, int]] | None = None
        with contextlib.suppress(StoreError):  # _status_text says why
            counts = self._counts()
        self.notifier.status(self._status_text(counts))
        with contextlib.suppress(StoreError):
            assert self.store is not None and self.beacon is not None
            self.store.set_meta("heartbeat", f"{self.clock():.3f} {os.getpid()}")
            self.beacon.holder(progress)
            if counts is not None:
                self._watch_held(counts)

    def _counts(self) -> dict[str, dict[str, int]]:
        """Live jobs per kind and state: one count per heartbeat serves all its uses."""
        assert self.ctx is not None
        return self.ctx.admin.counts()

    def _watch_held(self, counts: dict[str, dict[str, int]]) -> None:
        """Say when more deletions are held than before (the notify command hears it)."""
        held = counts.get("delete", {}).get("held", 0)
        if held > self._held:
            log.warning("deletions.held", count=held, new=held - self._held)
        self._held = held

    def _publish(self) -> None:
        """The breaker's state for `syncd status`: written when it changes."""
        if self.beacon is not None and self.ctx is not None:
            self.beacon.outage(self.ctx.breaker.state)

    def _take_requests(self) -> None:
        """Rescans asked for by `syncd rescan` (None: every folder)."""
        assert self.store is not None
        for key in beacon.take_rescans(self.store):
            for folder in self.config.folders:
                if key is None or key == folder.key:
                    log.info("scan.requested", folder=folder.key, by="syncd rescan")
                    self.request_scan(folder.key)

    def status_line(self, counts: dict[str, dict[str, int]] | None = None) -> str:
        if self.ctx is None:
            return "starting"
        counts = self._counts() if counts is None else counts
        up = counts.get("upload", {})
        pending = up.get("pending", 0) + up.get("uploading", 0)
        failed = sum(c.get("failed", 0) for c in counts.values())
        held = counts.get("delete", {}).get("held", 0)
        text = f"uploads queued {pending}, {failed} failed, {held} deletions held"
        if self.ctx.breaker.auth_rejected_since is not None:
            text += "; PAUSED: the API key is not accepted"
        elif self.ctx.breaker.is_open:
            text += "; the API is unreachable, probing"
        return text

    def _status_text(self, counts: dict[str, dict[str, int]] | None = None) -> str:
        """The status line, or why there is none: an unreadable store is asked again later."""
        try:
            return self.status_line(counts)
        except StoreError as exc:
            log.warning("status.unavailable", error=str(exc))
            return f"state database unavailable: {exc}"

    @property
    def busy(self) -> int:
        """Jobs being worked on right now."""
        return 0 if self.workers is None else self.workers.busy

    @property
    def watchers(self) -> dict[str, FolderWatcher]:
        return self.intake.watchers

    def request_scan(self, folder: str, prefix: str = "") -> None:
        self.scan_requests.put(folder, prefix)

    def _index_then_scan(self) -> None:
        """A new database first learns what the library holds; uploads wait for that."""
        while not self.indexed.is_set() and not self.stopping.is_set():
            wait = self._index_once()
            if wait is None:
                break
            self.stopping.wait(wait)
        self.indexed.set()
        self._scan_loop()

    def _index_once(self) -> float | None:
        """Index the library unless done before; None when finished, else seconds to wait."""
        assert self.store is not None and self.ctx is not None
        try:
            if self.store.get_meta("library_indexed") is None:
                count = index_library(self.ctx.ledger, self.ctx.admin, self.ctx.client)
                log.info("library.indexed", assets=count)
        except AuthError as exc:
            self.ctx.breaker.auth_rejected(self.clock(), str(exc))
            return self.timers.key_probe
        except PermanentError as exc:
            # The list itself is refused: uploads go on; a lost database is the only
            # case where that could send something twice.
            log.exception("library.index_refused", error=str(exc))
        except StoreError as exc:
            log.warning("library.index_failed", error=str(exc))
            return STORE_RETRY_SECONDS
        except ApiError as exc:
            log.warning("library.index_failed", error=str(exc))
            return self.timers.key_probe
        except Exception:
            log.exception("library.index_crashed")
            return self.timers.key_probe
        return None

    def _scan_loop(self) -> None:
        while not self.stopping.is_set():
            request = self.scan_requests.get(timeout=0.2)
            if request is None or request[0] not in self.folders:
                continue
            key, prefix = request
            folder = self.folders[key]
            self._scanning.set()
            try:
                if not prefix:
                    # Before, not after: an overflow during the scan must ask for another.
                    self.intake.scanned(key)
                self.sweeper.scan(folder, prefix)
                if not prefix:
                    self._last_scan[key] = self.monotonic()
            except StoreError as exc:
                self._scan_failed(key, exc)
            except Exception:
                log.exception("scan.failed", folder=key)
            finally:
                self._scanning.clear()
            self._notify_all()

    def _scan_failed(self, key: str, error: StoreError) -> None:
        """What the scan found (and the events that asked for it) is not recorded: rescan."""
        log.error("scan.failed", folder=key, error=str(error))
        self._scan_retry[key] = self.monotonic() + STORE_RETRY_SECONDS

    def _notify_all(self) -> None:
        if self.workers is not None:
            self.workers.notify_all()

    # -- folders --------------------------------------------------------------------

    def _periodic_rescan(self, folder: FolderConfig) -> None:
        retry = self._scan_retry.get(folder.key)
        if retry is not None and self.monotonic() >= retry:
            del self._scan_retry[folder.key]
            self.request_scan(folder.key)
        period = self.config.daemon.rescan_interval_seconds
        last = self._last_scan.get(folder.key)
        if period > 0 and last is not None and self.monotonic() - last >= period:
            self._last_scan[folder.key] = self.monotonic()
            self.request_scan(folder.key)

    def _scan_if_approved(self, folder: FolderConfig) -> None:
        """Scan a guarded folder once ``syncd approve-deletes`` has accepted it.

        The command only writes to the database; without this, what the guard held back
        would wait for the next periodic rescan (an hour by default).
        """
        assert self.store is not None
        row = self.store.folder_row(folder.key) or {}
        approved = row.get("health") == "guarded" and bool(row.get("approved"))
        if approved and folder.key not in self._approval_scans:
            self._approval_scans.add(folder.key)
            log.info("folder.approved", folder=folder.key)
            self.request_scan(folder.key)
        elif not approved:
            self._approval_scans.discard(folder.key)

    def _probe_key(self) -> None:
        """While the key is rejected, try it now and then (a replaced key file is re-read)."""
        assert self.ctx is not None
        since = self.ctx.breaker.auth_rejected_since
        if since is None:
            return
        if self.store is not None and self.store.get_meta("auth_rejected_since") is None:
            self.store.set_meta("auth_rejected_since", str(since))
        if self.clock() - self._last_probe < self.timers.key_probe:
            return
        self._last_probe = self.clock()
        try:
            self.ctx.client.check_auth()
        except AuthError:
            log.warning("api.key_rejected", since=_iso(since))
            return
        except ApiError:
            return
        self.ctx.breaker.auth_accepted()
        resumed = self.ctx.ledger.resume_paused()
        log.info("api.key_accepted", resumed=resumed)
        if self.store is not None:
            self.store.set_meta("auth_rejected_since", None)
        self._notify_all()

    # -- one pass -------------------------------------------------------------------

    def sync_once(
        self, *, max_wait: float = 600.0, progress: Callable[[int, int], None] | None = None
    ) -> summary.Summary:
        """Scan every folder, work until nothing is due; the summary carries the exit code.

        A stop request (SIGTERM, Ctrl-C) ends the wait at once; what is left stays queued.
        A rejected key ends it at once too: waiting could not help.
        """
        assert self.ctx is not None and self.store is not None
        started = self.clock()
        self._heartbeat()
        for folder in self.config.folders:
            if not self.stopping.is_set():
                self.sweeper.scan(folder)
        self.start_threads(watch=False)
        stopped = self._work_until_done(self.monotonic() + max_wait, progress)
        if self.failed:
            stopped = "thread"
        result = summary.count(self.store, started, stopped)
        if result.queued or stopped:
            log.warning("sync.unfinished", jobs=result.queued, stopped=stopped)
        return result

    def _work_until_done(
        self, deadline: float, progress: Callable[[int, int], None] | None
    ) -> str | None:
        """Work until nothing is due; why it stopped early (signal, key, timeout) or None."""
        assert self.ctx is not None
        total = max(1, self.ctx.admin.outstanding())
        last_beat = 0.0
        while not self.stopping.is_set():
            if self.monotonic() >= deadline:
                return "timeout"
            if self.ctx.breaker.auth_rejected_since is not None:
                log.error("sync.key_rejected", error=self.ctx.breaker.state.last_error)
                return "key"
            left = self.ctx.admin.outstanding()
            total = max(total, left)
            if progress:
                progress(total - left, total)
            if self.monotonic() - last_beat >= 1.0:
                last_beat = self.monotonic()
                self._heartbeat({"done": total - left, "total": total})
                self._publish()
            if left == 0 and self.busy == 0 and not len(self.scan_requests):
                return None
            self.stopping.wait(0.1)
        return "signal"


def _iso(epoch: float) -> str:
    """Times in the log are read by people: ISO 8601 UTC, never a raw epoch."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
