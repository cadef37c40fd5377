"""Names follow files: a file renamed before its upload started goes up under its final name."""

from __future__ import annotations

from pathlib import Path

from syncd.emulator import EmulatorServer, Faults
from tests.running import Launcher
from tests.support import noise_jpeg, wait_until, write_image


def test_renamed_before_its_upload_started_gets_the_final_name(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """cp x tmpq1w2e3.jpg, settle, mv to rocket.jpg while the upload waits: named "rocket"."""
    run = start_daemon(concurrency=1)
    emulator.set_faults(Faults(latency=1.5))  # the one upload worker is kept busy
    (hot / "first.jpg").write_bytes(noise_jpeg(1))
    wait_until(lambda: run.jobs("kind = 'upload' AND state = 'uploading'"), 10,
               message="the worker busy")  # fmt: skip
    write_image(hot / "tmpq1w2e3.jpg", 2)
    wait_until(
        lambda: run.jobs("kind = 'upload' AND state = 'pending' AND intent_at IS NULL"),
        10,
        message="the second upload queued, not started",
    )
    (hot / "tmpq1w2e3.jpg").rename(hot / "rocket.jpg")
    assets = run.wait_assets(2, timeout=30)
    assert sorted(a["name"] for a in assets) == ["first", "rocket"]


def test_a_rename_after_the_upload_keeps_the_asset_and_its_name(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """names = "first" (the default): once sent, a rename uploads nothing again."""
    run = start_daemon()
    write_image(hot / "tmpq1w2e3.jpg", 3)
    run.wait_assets(1)
    (hot / "tmpq1w2e3.jpg").rename(hot / "rocket.jpg")
    wait_until(lambda: run.daemon.store.get_file(str(hot), "rocket.jpg"), 10,  # type: ignore[union-attr]
               message="the record followed the file")  # fmt: skip
    [asset] = run.wait_assets(1)
    assert asset["name"] == "tmpq1w2e3"
    assert emulator.stats()["requests"]["POST /v1/training-asset"] == 1


def test_names_follow_reuploads_under_the_new_name_and_releases_the_old(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """names = "follow": a rename to a new stem uploads "rocket", then deletes "tmpq1w2e3"."""
    run = start_daemon(extra_folder='names = "follow"\n')
    write_image(hot / "tmpq1w2e3.jpg", 5)
    [first] = run.wait_assets(1)
    assert first["name"] == "tmpq1w2e3"
    (hot / "tmpq1w2e3.jpg").rename(hot / "rocket.jpg")
    wait_until(
        lambda: [a["name"] for a in emulator.assets()] == ["rocket"] and run.idle(),
        20,
        message="the asset renamed by re-upload",
    )
    requests = emulator.stats()["requests"]
    assert requests["POST /v1/training-asset"] == 2
    assert requests["DELETE /v1/assets/{id}"] == 1
