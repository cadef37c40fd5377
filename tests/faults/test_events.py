"""Lost events: an inotify overflow, an observer that dies, the watch limit, and changes no
event ever reported. Each is caught by a scan; nothing is uploaded twice or re-read for
nothing.

The daemon runs in this process (real watcher, real SQLite, real HTTP to the emulator); a
test reaches behind its back only to break the watcher the way the kernel or a bug would.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from syncd.config import load
from syncd.daemon import Daemon, Timers
from syncd.emulator import EmulatorServer
from tests.faults.conftest import FaultReport, pairs
from tests.integration.conftest import Running
from tests.support import config_text, image_bytes, wait_until, write_image

pytestmark = pytest.mark.faults

DELETES = "DELETE /v1/assets/{id}"
POSTS = "POST /v1/training-asset"

Pair = tuple[str, tuple[str, ...]]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def hot(tmp_path: Path) -> Path:
    path = tmp_path / "hot"
    path.mkdir()
    return path


@pytest.fixture
def launch(tmp_path: Path, emulator: EmulatorServer, hot: Path) -> Iterator[Callable[..., Running]]:
    """Start (and at teardown stop) daemons on ``hot``; ``max_watches`` caps its inotify watches."""
    made: list[Running] = []

    def start(*, max_watches: int | None = None, **options: Any) -> Running:
        conf = tmp_path / f"syncd{len(made)}.toml"
        conf.write_text(config_text(emulator.base_url, [hot], tmp_path / "state.db", **options))
        config = load(conf)
        timers = Timers(tick=0.05, heartbeat=0.5, key_probe=0.3)
        daemon = Daemon(config, timers=timers, max_watches=max_watches)
        daemon.start()
        thread = threading.Thread(target=daemon.run_forever, name="test-daemon", daemon=True)
        thread.start()
        wait_until(lambda: hot.as_posix() in daemon.watchers, 10, message="watcher started")
        run = Running(daemon, emulator, hot, config, thread)
        made.append(run)
        return run

    yield start
    for run in made:
        run.stop()


def converge(run: Running, want: set[Pair], timeout: float = 20.0) -> None:
    wait_until(
        lambda: set(pairs(run.emulator)) == want and run.idle(),
        timeout,
        message=f"exactly {len(want)} (content, tags) pairs and an idle queue",
    )


def finish(run: Running, report: FaultReport, want: set[Pair], note: str) -> None:
    """The invariants every case ends on, then its row in the figures table."""
    got = pairs(run.emulator)
    duplicates = sum(n - 1 for n in got.values() if n > 1)
    losses = len(want - set(got))
    report.record(run.emulator, duplicates=duplicates, losses=losses, note=note)
    assert run.thread.is_alive() and all(t.is_alive() for t in run.daemon.threads)
    assert (duplicates, losses, set(got) - want) == (0, 0, set())


def scans_after(logs: list[dict[str, Any]], start: int) -> list[dict[str, Any]]:
    """Full scans (no prefix) logged from position ``start`` on."""
    return [e for e in logs[start:] if e["event"] == "scan.done" and not e.get("prefix")]


def file_jobs_since(run: Running, since: float) -> list[str]:
    assert run.daemon.store is not None
    rows = run.daemon.store.query(
        "SELECT relpath FROM jobs WHERE kind = 'file' AND created_at >= ? ORDER BY id", (since,)
    )
    return [r["relpath"] for r in rows]


def test_inotify_overflow_rescan_finds_changes_no_event_reported(
    launch, hot: Path, tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport
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
        run: Running = launch()
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


def test_dead_observer_is_replaced_and_the_folder_rescanned(
    launch, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """The observer thread stops behind the daemon's back: noticed, replaced, rescanned."""
    with structlog.testing.capture_logs() as logs:
        run: Running = launch()
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
    launch, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """More folders than watches: a clear warning, polling takes over, every file uploads."""
    for name in ("a", "b"):
        (hot / name).mkdir()
    with structlog.testing.capture_logs() as logs:
        run: Running = launch(max_watches=3, extra_folder="poll_interval_seconds = 0.2")
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
    launch, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """With the watcher deaf, the periodic rescan queues exactly the new and changed files."""
    run: Running = launch(extra_api="[daemon]\nrescan_interval_seconds = 0.5")
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
