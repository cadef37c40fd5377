"""Remote processing followed to the end, through the daemon against the emulator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from syncd import report
from syncd.daemon import Timers
from syncd.emulator import EmulatorServer
from tests.running import Launcher, Running
from tests.support import wait_until, write_image


def quick_followup() -> Timers:
    """Fast timers whose first look at processing comes after 0.2 s."""
    return Timers(tick=0.05, heartbeat=0.5, key_probe=0.3, processing_first=0.2)


def remote(run: Running) -> dict[str, Any]:
    status = report.collect(run.config, now=time.time(), stale_after=15)
    return dict(status["remote"])


def wait_remote(run: Running, timeout: float = 30.0, **want: int) -> dict[str, Any]:
    return wait_until(
        lambda: (r := remote(run)) and all(r[k] == v for k, v in want.items()) and r,
        timeout,
        message=f"remote counts {want}",
    )


def test_assets_turn_ready_and_status_counts_them(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """Uploaded assets are followed from processing to ready; status --json counts them."""
    emulator.set_processing(seconds=1.0)
    run = start_daemon(timers=quick_followup())
    for i in range(3):
        write_image(hot / f"shot{i}.jpg", i)
    wait_until(lambda: remote(run)["processing"] >= 1, 20, message="a processing asset")
    got = wait_remote(run, ready=3, processing=0, failed=0)
    assert got["failed_files"] == []
    assert all(a["status"] == "ready" for a in emulator.assets())


def test_many_pending_are_listed_not_asked_one_by_one(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """With many assets processing, the follow-up lists the library instead of one GET each."""
    emulator.set_processing(seconds=2.0)
    for i in range(15):
        write_image(hot / f"card{i:02}.jpg", 100 + i)
    run = start_daemon(timers=quick_followup())
    wait_remote(run, ready=15, processing=0)
    requests = emulator.stats()["requests"]
    assert requests.get("GET /v1/assets/{id}", 0) < 15
    assert requests.get("GET /v1/my-uploaded-assets", 0) >= 1


def test_failed_processing_is_reported_with_its_reason(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """A failed asset is listed by path with the server's reason; it is not sent again."""
    emulator.set_processing(seconds=0.3, failure_rate=1.0, reasons=("no product found",))
    run = start_daemon(timers=quick_followup())
    write_image(hot / "bags" / "tote.jpg", 7)
    got = wait_remote(run, failed=1, processing=0)
    [item] = got["failed_files"]
    assert item["path"] == f"{hot}/bags/tote.jpg"
    assert item["reason"] == "no product found"
    assert item["asset_id"] == emulator.assets()[0]["asset_id"]
    assert emulator.stats()["requests"]["POST /v1/training-asset"] == 1


def test_reupload_sends_once_and_deletes_the_failed_asset_after(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """on_processing_failed = "reupload" sends again once; the failed asset goes afterwards."""
    emulator.set_processing(seconds=0.5, failure_rate=1.0)
    run = start_daemon(timers=quick_followup(), extra_folder='on_processing_failed = "reupload"\n')
    write_image(hot / "shoe.jpg", 3)
    [first] = run.wait_assets(1)
    emulator.set_processing(failure_rate=0.0)  # the outcome is drawn at upload time
    got = wait_remote(run, ready=1, failed=0, processing=0)

    def replaced() -> list[dict[str, Any]] | None:
        assets = emulator.assets()
        return (
            assets
            if [a["asset_id"] for a in assets] not in ([], [first["asset_id"]]) and len(assets) == 1
            else None
        )

    [asset] = wait_until(replaced, 20, message="the failed asset replaced")
    assert asset["status"] == "ready"
    assert emulator.stats()["requests"]["POST /v1/training-asset"] == 2
    assert got["failed_files"] == []


def test_reupload_happens_once_only(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """A re-upload that fails again is reported, not sent a third time."""
    emulator.set_processing(seconds=0.3, failure_rate=1.0, reasons=("blank",))
    run = start_daemon(timers=quick_followup(), extra_folder='on_processing_failed = "reupload"\n')
    write_image(hot / "shoe.jpg", 4)
    got = wait_remote(run, failed=1, processing=0)
    assert got["failed_files"][0]["reason"] == "blank"
    # the first failed asset is deleted once the second exists; the second stays
    wait_until(lambda: len(emulator.assets()) == 1, 20, message="the first asset deleted")
    assert emulator.assets()[0]["status"] == "failed"
    assert emulator.stats()["requests"]["POST /v1/training-asset"] == 2


def test_asset_deleted_remotely_is_reported_never_reuploaded(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path, api_key: str
) -> None:
    """A 404 on follow-up marks the asset deleted in status; nothing is uploaded again."""
    emulator.set_processing(seconds=30.0)
    run = start_daemon(timers=quick_followup())
    write_image(hot / "gone.jpg", 5)
    [asset] = run.wait_assets(1)
    response = httpx.delete(
        f"{emulator.base_url}/v1/assets/{asset['asset_id']}",
        headers={"Authorization": f"Bearer {api_key}"},
    )
    assert response.status_code == 204
    got = wait_remote(run, deleted=1, processing=0)
    assert got["deleted_files"][0]["path"] == f"{hot}/gone.jpg"
    assert "someone else" in got["deleted_files"][0]["reason"]
    assert run.idle()
    assert emulator.assets() == []
    assert emulator.stats()["requests"]["POST /v1/training-asset"] == 1


def test_status_text_shows_remote_counts_and_failures(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path, cli: Any
) -> None:
    """`syncd status` prints the processing counts and each failed file with its reason."""
    emulator.set_processing(seconds=0.2, failure_rate=1.0, reasons=("too small",))
    run = start_daemon(timers=quick_followup())
    write_image(hot / "tiny.jpg", 9)
    wait_remote(run, failed=1)
    result = cli("status", "-c", run.config_path)
    assert result.returncode == 0, result.stderr
    assert "0 ready, 0 processing, 1 failed" in result.stdout
    assert "tiny.jpg: too small" in result.stdout
    result = cli("status", "--json", "-c", run.config_path)
    assert '"failed_files"' in result.stdout
