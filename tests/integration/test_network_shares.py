"""polling = "auto" through the daemon: an injected mount table, a real polled folder."""

from __future__ import annotations

import time
from pathlib import Path

from syncd import report
from syncd.emulator import EmulatorServer
from tests.running import Launcher
from tests.support import write_image


def test_auto_polls_a_folder_the_mount_table_puts_on_nfs(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path, tmp_path: Path
) -> None:
    """A hot folder on an NFS mount is polled, status says why, and new files go up."""
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        f"40 22 0:50 / {hot} rw - nfs4 nas:/products rw,vers=4.2\n"
    )
    run = start_daemon(mountinfo=info, extra_folder="poll_interval_seconds = 0.2\n")
    assert run.daemon.watchers[str(hot)].mode == "polling"
    write_image(hot / "shoes" / "a.jpg", 1)
    [asset] = run.wait_assets(1)
    assert "shoes" in asset["tags"]
    status = report.collect(run.config, now=time.time(), stale_after=15)
    [folder] = status["folders"]
    assert folder["polling"] == "auto"
    assert folder["watch_mode"] == "polling"
    assert "nfs4" in folder["watch_reason"]


def test_auto_uses_inotify_on_a_local_filesystem(
    start_daemon: Launcher, hot: Path, tmp_path: Path
) -> None:
    """The same folder on ext4 is watched with inotify, and status says so."""
    info = tmp_path / "mountinfo"
    info.write_text("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n")
    run = start_daemon(mountinfo=info)
    assert run.daemon.watchers[str(hot)].mode == "inotify"
    status = report.collect(run.config, now=time.time(), stale_after=15)
    assert status["folders"][0]["watch_reason"] == "auto: ext4 at / is local"
