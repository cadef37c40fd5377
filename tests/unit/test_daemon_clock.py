"""The daemon's intervals run on its injected monotonic clock, never on the wall clock."""

from __future__ import annotations

import threading
from pathlib import Path

from syncd import config as cfg
from syncd.daemon import Daemon
from syncd.intake import FIRST_SCAN_WAIT, Intake
from syncd.ledger import Ledger
from syncd.store import Store
from syncd.tags import Rules
from tests.support import FakeClock, config_text, wait_until


def _daemon(tmp_path: Path, ticks: FakeClock, wall: FakeClock) -> Daemon:
    hot = tmp_path / "hot"
    hot.mkdir()
    text = config_text("http://127.0.0.1:9", [hot], tmp_path / "state.db")
    text = "[daemon]\nrescan_interval_seconds = 600\n" + text
    return Daemon(cfg.parse(text, env={}), clock=wall, monotonic=ticks)


def test_periodic_rescan_is_due_by_the_injected_monotonic_clock(tmp_path: Path) -> None:
    """A rescan comes due when the injected clock has moved a period on, however the wall
    clock jumps in between (back an hour here)."""
    ticks, wall = FakeClock(100.0), FakeClock()
    daemon = _daemon(tmp_path, ticks, wall)
    folder = daemon.config.folders[0]
    daemon._last_scan[folder.key] = ticks()
    wall.now -= 3600
    ticks.sleep(599)
    daemon._periodic_rescan(folder)
    assert len(daemon.scan_requests) == 0
    ticks.sleep(1)
    daemon._periodic_rescan(folder)
    assert daemon.scan_requests.get(timeout=0) == (folder.key, "")
    assert daemon._last_scan[folder.key] == ticks()


def test_prune_runs_once_per_period_of_the_injected_clock(tmp_path: Path) -> None:
    """The hourly prune runs at the first pass, then not again until the clock says so."""
    ticks, wall = FakeClock(100.0), FakeClock()
    daemon = _daemon(tmp_path, ticks, wall)
    daemon.start()
    try:
        pruned: list[float] = []
        assert daemon.ctx is not None
        admin = daemon.ctx.admin
        inner = admin.prune

        def counted(before: float) -> int:
            pruned.append(before)
            return inner(before=before)

        admin.prune = counted  # type: ignore[method-assign]
        daemon._prune()
        ticks.sleep(3599)
        daemon._prune()
        assert len(pruned) == 1
        ticks.sleep(1)
        daemon._prune()
        assert len(pruned) == 2
    finally:
        daemon.stop()


def _intake(tmp_path: Path, ticks: FakeClock) -> tuple[Intake, list[str], Store]:
    hot = tmp_path / "hot"
    hot.mkdir(exist_ok=True)
    folder = cfg.FolderConfig(path=hot)
    store = Store.open(tmp_path / "state.db")
    scans: list[str] = []
    intake = Intake(
        Ledger(store, {folder.key: folder}),
        {folder.key: Rules(folder.include, folder.exclude)},
        request_scan=lambda key, prefix: scans.append(key),
        wake=lambda: None,
        monotonic=ticks,
    )
    return intake, scans, store


def test_a_folders_scan_is_asked_for_once_its_watch_is_placed(tmp_path: Path) -> None:
    """Not before: a scan that starts after the watch needs no second one."""
    intake, scans, store = _intake(tmp_path, FakeClock())
    folder = cfg.FolderConfig(path=tmp_path / "hot")
    try:
        intake.ensure_watcher(folder)
        assert wait_until(lambda: folder.key in intake.watchers, timeout=10)
        assert wait_until(lambda: scans == [folder.key], timeout=5)
        intake.ensure_watcher(folder)  # running: nothing more
        assert scans == [folder.key]
    finally:
        intake.stop_all()
        store.close()


def test_a_slow_watcher_holds_the_scan_back_no_longer_than_the_wait(tmp_path: Path) -> None:
    """While the watcher is still starting, the scan is asked for once the wait is over."""
    ticks = FakeClock()
    intake, scans, store = _intake(tmp_path, ticks)
    folder = cfg.FolderConfig(path=tmp_path / "hot")
    release = threading.Event()
    started = threading.Event()
    real_start = intake._start_watcher

    def slow_start(f: cfg.FolderConfig) -> None:
        started.set()
        release.wait(10)
        real_start(f)

    intake._start_watcher = slow_start  # type: ignore[method-assign]
    try:
        intake.ensure_watcher(folder)
        assert started.wait(5)
        ticks.sleep(FIRST_SCAN_WAIT - 0.1)
        intake.ensure_watcher(folder)
        assert scans == []
        ticks.sleep(0.1)
        intake.ensure_watcher(folder)
        intake.ensure_watcher(folder)
        assert scans == [folder.key]
        release.set()
        assert wait_until(lambda: len(scans) == 2, timeout=10)  # and again once it watches
    finally:
        release.set()
        intake.stop_all()
        store.close()
