"""Lost events: an inotify overflow, an observer that dies, the watch limit, and changes no
event ever reported. Each is caught by a scan; nothing is uploaded twice or re-read for
nothing.

The daemon runs in this process (real watcher, real SQLite, real HTTP to the emulator); a
test reaches behind its back only to break the watcher the way the kernel or a bug would.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog

from syncd.emulator import EmulatorServer
from syncd.model import EventKind, FsEvent
from syncd.sweep import ScanReport
from tests.faults.conftest import DELETES, POSTS, FaultReport, converge, finish, sha
from tests.running import Running
from tests.support import image_bytes, wait_until, write_image

pytestmark = pytest.mark.faults


def scans_after(logs: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """Full scans (no prefix) logged from position ``start`` on."""
    return [e for e in logs[start:] if e["event"] == "scan.done" and not e.get("prefix")]


def file_jobs_since(run: Running, since: float) -> list[str]:
    jobs = run.jobs("kind = 'file' AND created_at >= ? ORDER BY id", (since,))
    return [job["relpath"] for job in jobs]


def test_inotify_overflow_rescan_finds_changes_no_event_reported(
    start_daemon, hot: Path, tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """IN_Q_OVERFLOW: the daemon rescans, and changes whose events were lost are uploaded."""
    from watchdog.observers.inotify_c import InotifyConstants, InotifyEvent, WatchDescriptor

    names = [f"p{i}.jpg" for i in range(4)]
    for i, name in enumerate(names):
        write_image(hot / name, 100 + i)
    # Writes through a second link in another folder reach the files but give the hot
    # folder's watch no event: changes the watcher cannot report, as after an overflow.
    (tmp_path / "links").mkdir()
    for name in names[:2]:
        os.link(hot / name, tmp_path / "links" / name)
    with structlog.testing.capture_logs() as logs:
        run: Running = start_daemon()
        run.wait_assets(4)
        new = {name: image_bytes(110 + i) for i, name in enumerate(names[:2])}
        for name, data in new.items():
            with (tmp_path / "links" / name).open("r+b") as fh:
                fh.truncate(0)
                fh.write(data)
        mark = len(logs)
        # The kernel cannot be made to overflow on demand without a system-wide sysctl, so
        # the real inotify reader is handed the record the kernel sends then (wd -1).
        reader = run.daemon.watchers[hot.as_posix()]._observer.inotify_fd  # type: ignore[union-attr]
        reader.handle_event(
            InotifyEvent(WatchDescriptor(-1), InotifyConstants.IN_Q_OVERFLOW, 0, b"")
        )
        want = {(sha(data), ("studio",)) for data in new.values()}
        want |= {(sha((hot / n).read_bytes()), ("studio",)) for n in names[2:]}
        converge(run, want)
    assert any(e["event"] == "watcher.queue_overflow" for e in logs[mark:])
    assert any(e["changed"] == 2 and e["new"] == 0 for e in scans_after(logs, mark))
    assert emulator.stats()["requests"][DELETES] == 2  # the replaced contents
    finish(run, fault_report, want, "overflow: 2 unseen changes found by the rescan")


class AlwaysFull(queue.Queue[FsEvent]):
    """The event queue as a burst bigger than it leaves it: every put finds it full."""

    def put(self, item: FsEvent, block: bool = True, timeout: float | None = None) -> None:
        raise queue.Full


def overflow_intake(run: Running) -> None:
    """One event meets a full event queue (the recorder goes on with the real one)."""
    intake = run.daemon.intake
    real, intake.events = intake.events, AlwaysFull()
    try:
        intake.sink(FsEvent(run.hot.as_posix(), EventKind.MODIFIED, "burst.jpg"))
    finally:
        intake.events = real


def test_events_dropped_during_the_overflow_scan_get_a_scan_of_their_own(
    start_daemon, hot: Path, tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """A second overflow while the first one's scan runs asks for another scan at once."""
    write_image(hot / "p.jpg", 170)
    (tmp_path / "links").mkdir()
    os.link(hot / "p.jpg", tmp_path / "links" / "p.jpg")
    run: Running = start_daemon()
    run.wait_assets(1)
    fresh = image_bytes(171)
    scan = run.daemon.sweeper.scan
    done = threading.Event()

    def scan_then_overflow(folder: Any, prefix: str = "") -> ScanReport:
        """The full scan ends; then a change goes unreported and the queue overflows again."""
        report = scan(folder, prefix)
        if not prefix and not done.is_set():
            done.set()
            with (tmp_path / "links" / "p.jpg").open("r+b") as fh:  # no event for the hot folder
                fh.truncate(0)
                fh.write(fresh)
            overflow_intake(run)
        return report

    run.daemon.sweeper.scan = scan_then_overflow  # type: ignore[method-assign]
    with structlog.testing.capture_logs() as logs:
        overflow_intake(run)
        want = {(sha(fresh), ("studio",))}
        converge(run, want, timeout=15)
    assert [e["event"] for e in logs].count("events.overflow") == 2
    assert len(scans_after(logs, 0)) == 2
    finish(run, fault_report, want, "overflow during the overflow's scan: scanned again")


def test_dead_observer_is_replaced_and_the_folder_rescanned(
    start_daemon, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """The observer thread stops behind the daemon's back: noticed, replaced, rescanned."""
    with structlog.testing.capture_logs() as logs:
        run: Running = start_daemon()
        want = {(sha(write_image(hot / "before.jpg", 120)), ("studio",))}
        run.wait_assets(1)
        key = hot.as_posix()
        old = run.daemon.watchers[key]
        observer = old._observer
        assert observer is not None
        observer.stop()  # as if its thread had died: no event arrives any more
        observer.join(5)
        mark = len(logs)
        want |= {(sha(write_image(hot / f"during{i}.jpg", 121 + i)), ("studio",)) for i in range(3)}
        converge(run, want)
        new = run.daemon.watchers[key]
        assert new is not old and new.alive()
        (hot / "after.jpg").write_bytes(data := image_bytes(125))  # heard by the new one
        want.add((sha(data), ("studio",)))
        converge(run, want)
    assert any(e["event"] == "watcher.dead" for e in logs)
    assert scans_after(logs, mark), "a full scan after the replacement"
    finish(run, fault_report, want, "observer stopped: replaced, rescanned")


def test_watch_limit_falls_back_to_polling_and_files_still_go_up(
    start_daemon, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """More folders than watches: a clear warning, polling takes over, every file uploads."""
    for name in ("a", "b"):
        (hot / name).mkdir()
    with structlog.testing.capture_logs() as logs:
        run: Running = start_daemon(max_watches=3, extra_folder="poll_interval_seconds = 0.2")
        key = hot.as_posix()
        assert run.daemon.watchers[key].mode == "inotify"
        want = {(sha(write_image(hot / "a" / "1.jpg", 130)), ("studio", "a"))}
        for i, name in enumerate(("c", "d", "e/f")):  # three more folders than fit
            data = write_image(hot / name / "x.jpg", 131 + i)
            want.add((sha(data), ("studio", *name.split("/"))))
        converge(run, want)
        wait_until(lambda: run.daemon.watchers[key].mode == "polling", 10, message="polling")
        data = write_image(hot / "e" / "f" / "g" / "late.jpg", 140)  # found by polling
        want.add((sha(data), ("studio", "e", "f", "g")))
        converge(run, want)
    fallback = [e for e in logs if e["event"] == "watcher.polling_fallback"]
    assert fallback and "max_user_watches" in fallback[0]["hint"]
    assert fallback[0]["log_level"] == "warning"
    assert any(e["event"] == "watcher.watch_limit" for e in logs)
    finish(run, fault_report, want, "watch limit: polling fallback")


def test_periodic_rescan_finds_unreported_changes_and_rereads_nothing_else(
    start_daemon, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """With the watcher deaf, the periodic rescan queues exactly the new and changed files."""
    run: Running = start_daemon(extra_api="[daemon]\nrescan_interval_seconds = 0.5")
    want = {(sha(write_image(hot / f"s{i}.jpg", 150 + i)), ("studio",)) for i in range(6)}
    converge(run, want)
    key = hot.as_posix()
    observer = run.daemon.watchers[key]._observer
    assert observer is not None
    # Unscheduled, the observer runs on and looks healthy but hears nothing: events lost
    # without a sign, as with changes made on the server side of a network share.
    observer.unschedule_all()
    paused = time.time()
    with structlog.testing.capture_logs() as logs:
        added = write_image(hot / "added.jpg", 160)
        changed = write_image(hot / "s0.jpg", 161)  # a new file renamed over the old one
        want = {(sha(added), ("studio",)), (sha(changed), ("studio",))} | {
            (sha((hot / f"s{i}.jpg").read_bytes()), ("studio",)) for i in range(1, 6)
        }
        converge(run, want)
    assert sorted(file_jobs_since(run, paused)) == ["added.jpg", "s0.jpg"]
    finding = [e for e in scans_after(logs, 0) if e["new"] or e["changed"] or e["gone"]]
    found = [sum(e[k] for e in finding) for k in ("new", "changed", "gone")]
    assert found == [1, 1, 0]
    assert emulator.stats()["requests"][POSTS] == 8
    finish(run, fault_report, want, "deaf watcher: periodic rescan, 2 of 7 files re-read")
