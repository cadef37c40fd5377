"""Folders that come and go: a root missing at start, a drive unmounted at run time, a
mount point left empty, a network share that drops out, a file replaced within its grace
period, a burst of deletions. A guess never deletes anything remotely.

The daemon runs in this process unless the behaviour is about the process itself; either
way with a real watcher, real SQLite and real HTTP to the emulator.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd import report
from syncd.emulator import EmulatorServer
from tests.faults.conftest import (
    DELETES,
    POSTS,
    DaemonProcess,
    FaultReport,
    Pair,
    converge,
    finish,
    pairs,
    sha,
    syncd,
)
from tests.running import Running
from tests.support import image_bytes, wait_until, write_image

pytestmark = pytest.mark.faults


def deletes(emulator: EmulatorServer) -> int:
    return emulator.stats()["requests"].get(DELETES, 0)


def status(run: Running) -> dict[str, Any]:
    """What ``syncd status --json`` prints, gathered from the running daemon's database."""
    assert run.daemon.store is not None
    return report.gather(run.daemon.store, run.config.folders, now=time.time(), stale_after=30)


def folder_status(run: Running, root: Path) -> dict[str, Any]:
    return next(f for f in status(run)["folders"] if f["path"] == root.as_posix())


def cli(run: Running, *args: str) -> str:
    """Another ``syncd`` command against the running daemon's config; what it printed."""
    result = syncd(run.config_path, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def files(root: Path, count: int, seed: int) -> set[Pair]:
    return {(sha(write_image(root / f"f{i}.jpg", seed + i)), ("studio",)) for i in range(count)}


def synced(run: Running, count: int, seed: int) -> set[Pair]:
    """``count`` files in the hot folder, uploaded: where most cases begin."""
    want = files(run.hot, count, seed)
    converge(run, want)
    return want


# --- roots that are not there ------------------------------------------------------------


def test_root_missing_at_start_waits_and_uploads_once_it_appears(
    daemon_process: Callable[..., DaemonProcess],
    tmp_path: Path,
    emulator: EmulatorServer,
    fault_report: FaultReport,
) -> None:
    """`syncd run` with one root missing: starts, serves the other, picks the root up later."""
    present, missing = tmp_path / "present", tmp_path / "later"
    want = files(present, 2, 200)
    proc = daemon_process([present, missing]).start()
    wait_until(lambda: set(pairs(emulator)) == want, 30, 0.1, "the present folder uploaded")

    def missing_folder() -> dict[str, Any]:
        folders = proc.status()["folders"]
        return next(f for f in folders if f["path"] == missing.as_posix())

    seen = wait_until(lambda: (f := missing_folder())["health"] == "unavailable" and f, 20, 0.2)
    assert seen["reason"] == "missing"
    assert proc.status()["daemon"]["running"] is True
    # The root appears whole, files and all, as a mounted drive does.
    staged = tmp_path / "staged"
    want |= files(staged, 2, 210)
    staged.rename(missing)
    wait_until(lambda: set(pairs(emulator)) == want, 30, 0.1, "the late root uploaded")
    wait_until(lambda: missing_folder()["health"] == "ok", 20, 0.2, "the late root healthy")
    assert proc.alive() and deletes(emulator) == 0
    fault_report.check(emulator, want, "root appeared later")
    assert proc.stop() == 0


def test_root_renamed_away_holds_and_resumes_when_it_returns(
    start_daemon, hot: Path, tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """A drive unmounted at run time: unavailable, nothing deleted; back, its new files go up."""
    run: Running = start_daemon()
    want = synced(run, 3, 220)
    away = tmp_path / "mounted-elsewhere"
    hot.rename(away)
    wait_until(lambda: folder_status(run, hot)["health"] == "unavailable", 10, message="held")
    assert folder_status(run, hot)["reason"] in (
        "missing",
        "root disappeared (unmounted?); holding",
    )
    want.add((sha(write_image(away / "new" / "while-away.jpg", 230)), ("studio", "new")))
    away.rename(hot)
    converge(run, want)
    wait_until(lambda: folder_status(run, hot)["health"] == "ok", 10, message="healthy again")
    assert deletes(emulator) == 0
    assert run.daemon.ctx is not None and run.daemon.ctx.admin.summary()["tracked_files"] == 4
    finish(run, fault_report, want, "root renamed away and back: 0 deletes")


def test_mount_point_left_empty_deletes_nothing_until_approved(
    start_daemon, hot: Path, tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """An empty root where files were tracked: guarded and shown; approve-deletes lets go."""
    run: Running = start_daemon()
    synced(run, 4, 240)
    hot.rename(tmp_path / "disk")  # unmounted: the mount point stays, empty
    hot.mkdir()
    wait_until(lambda: folder_status(run, hot)["health"] == "guarded", 10, message="guarded")
    shown = json.loads(cli(run, "status", "--json"))
    (folder,) = shown["folders"]
    assert folder["health"] == "guarded" and "empty" in folder["reason"]
    assert run.idle() and deletes(emulator) == 0 and len(emulator.assets()) == 4
    assert run.daemon.ctx is not None and run.daemon.ctx.admin.summary()["tracked_files"] == 4

    cli(run, "approve-deletes")
    converge(run, set())
    assert deletes(emulator) == 4
    finish(run, fault_report, set(), "empty mount point: held until approved")


def test_polling_share_that_vanishes_holds_and_its_observer_is_replaced(
    start_daemon, hot: Path, tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """A polled share drops out: read as root gone (hold), a new observer once it is back."""
    run: Running = start_daemon(extra_folder="polling = true\npoll_interval_seconds = 0.2")
    key = hot.as_posix()
    first = run.daemon.watchers[key]
    assert first.mode == "polling"
    want = synced(run, 3, 250)
    outage = tmp_path / "unreachable"
    hot.rename(outage)
    wait_until(lambda: folder_status(run, hot)["health"] == "unavailable", 10, message="held")
    want.add((sha(write_image(outage / "meanwhile.jpg", 260)), ("studio",)))
    outage.rename(hot)
    converge(run, want)
    second = run.daemon.watchers[key]
    assert second is not first and second.alive() and second.mode == "polling"
    (hot / "after.jpg").write_bytes(data := image_bytes(261))  # the new observer hears it
    want.add((sha(data), ("studio",)))
    converge(run, want)
    assert deletes(emulator) == 0
    finish(run, fault_report, want, "polled share outage: 0 deletes, observer replaced")


# --- deletions ---------------------------------------------------------------------------


def test_file_recreated_within_the_grace_period_keeps_its_new_content(
    start_daemon, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Deleted, then back before the delete runs: new bytes replace the asset; same bytes stay."""
    run: Running = start_daemon(grace=3.0)
    old = write_image(hot / "edited.jpg", 270)
    same = write_image(hot / "saved.jpg", 271)
    other = write_image(hot / "other.jpg", 273)  # an emptied root would hold every deletion
    converge(run, {(sha(data), ("studio",)) for data in (old, same, other)})
    store = run.daemon.store
    assert store is not None
    (hot / "edited.jpg").unlink()
    (hot / "saved.jpg").unlink()
    wait_until(
        lambda: (
            len(store.query("SELECT id FROM jobs WHERE kind = 'delete' AND state = 'waiting'")) == 2
        ),
        10,
        message="both deletions waiting out their grace period",
    )
    new = write_image(hot / "edited.jpg", 272)
    (hot / "saved.jpg").write_bytes(same)  # an editor saving the same bytes again
    assert deletes(emulator) == 0, "both came back within the grace period"
    want = {(sha(data), ("studio",)) for data in (new, same, other)}
    converge(run, want)
    wait_until(lambda: deletes(emulator) == 1 and run.idle(), 10, message="old bytes deleted")
    assert emulator.stats()["requests"][POSTS] == 4
    finish(run, fault_report, want, "re-created in grace: new kept, old deleted once")


def test_burst_over_max_deletes_is_held_until_approved(
    start_daemon, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Five deletions, max_deletes 3: all five held and listed; approve-deletes runs them."""
    run: Running = start_daemon(max_deletes=3, grace=5.0)
    want = synced(run, 6, 280)
    for i in range(1, 6):
        (hot / f"f{i}.jpg").unlink()
    wait_until(lambda: status(run)["held_deletions"]["count"] == 5, 10, message="5 held")
    shown = json.loads(cli(run, "status", "--json"))
    assert shown["held_deletions"]["count"] == 5
    reasons = {item["reason"] for item in shown["held_deletions"]["items"]}
    assert len(reasons) == 1 and "more than 3 deletions" in reasons.pop()
    assert deletes(emulator) == 0 and len(emulator.assets()) == 6

    cli(run, "approve-deletes")
    want = {(sha((hot / "f0.jpg").read_bytes()), ("studio",))}
    converge(run, want)
    assert deletes(emulator) == 5 and status(run)["held_deletions"]["count"] == 0
    finish(run, fault_report, want, "burst of 5 > max_deletes 3: held, approved, deleted")
