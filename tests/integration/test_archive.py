"""Ingest and archive (after_upload) through the daemon against the emulator."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd import report
from syncd.emulator import EmulatorServer
from tests.integration.conftest import Cli
from tests.integration.test_processing import quick_followup, wait_remote
from tests.running import Launcher, Running
from tests.support import wait_until, write_image


def archive_options(archive: Path, action: str = "archive", when: str = "ready") -> str:
    text = f'after_upload = "{action}"\nafter_upload_when = "{when}"\n'
    return text + (f'archive_path = "{archive}"\n' if action == "archive" else "")


def files_under(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def after_upload(run: Running) -> dict[str, int]:
    status = report.collect(run.config, now=time.time(), stale_after=15)
    return dict(status["after_upload"])


def test_archive_moves_files_once_ready_keeping_their_paths(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path, tmp_path: Path
) -> None:
    """A file stays while its asset processes, then moves to archive/<relpath>; no delete."""
    archive = tmp_path / "archive"
    emulator.set_processing(seconds=2.0)
    run = start_daemon(timers=quick_followup(), extra_folder=archive_options(archive))
    shoe = write_image(hot / "shoes" / "red" / "a.jpg", 1)
    bag = write_image(hot / "bags" / "b.jpg", 2)
    wait_until(lambda: len(emulator.assets()) == 2, 20, message="two uploads")
    assert {a["status"] for a in emulator.assets()} == {"processing"}
    assert set(files_under(hot)) == {"shoes/red/a.jpg", "bags/b.jpg"}  # not ready yet
    wait_until(lambda: files_under(hot) == {}, 30, message="the hot folder emptied")
    assert files_under(archive) == {"shoes/red/a.jpg": shoe, "bags/b.jpg": bag}
    assert all(a["status"] == "ready" for a in emulator.assets())
    assert len(emulator.assets()) == 2
    assert run.jobs("kind = 'delete'") == []
    assert after_upload(run) == {"archived_today": 2, "removed_today": 0, "leaving": 0}
    # The vanished paths' events, once worked off, must not delete anything either.
    wait_until(run.idle, 10, message="the events of the vanished paths worked off")
    assert len(emulator.assets()) == 2
    assert "DELETE /v1/assets/{id}" not in emulator.stats()["requests"]


def test_archive_never_overwrites_a_name_clash_gets_a_suffix(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path, tmp_path: Path
) -> None:
    """A file of the same name already archived stays; the newcomer gets "a (1).jpg"."""
    archive = tmp_path / "archive"
    (archive / "shoes").mkdir(parents=True)
    (archive / "shoes" / "a.jpg").write_bytes(b"an older shot")
    emulator.set_processing(seconds=0.1)
    run = start_daemon(timers=quick_followup(), extra_folder=archive_options(archive))
    data = write_image(hot / "shoes" / "a.jpg", 3)
    wait_until(lambda: files_under(hot) == {}, 30, message="the hot folder emptied")
    assert files_under(archive) == {"shoes/a.jpg": b"an older shot", "shoes/a (1).jpg": data}
    assert len(run.assets()) == 1


def test_remove_after_sent_leaves_the_asset(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path, tmp_path: Path
) -> None:
    """after_upload = "remove" with "sent": the file goes after the 201, the asset stays."""
    emulator.set_processing(seconds=60.0)
    run = start_daemon(
        timers=quick_followup(), extra_folder=archive_options(tmp_path, "remove", "sent")
    )
    write_image(hot / "x.jpg", 4)
    wait_until(lambda: not (hot / "x.jpg").exists(), 20, message="the file removed")
    [asset] = run.assets()
    assert asset["status"] == "processing"
    wait_until(lambda: after_upload(run)["removed_today"] == 1, 10, message="counted")
    wait_until(run.idle, 10, message="the removal's events worked off")
    assert run.jobs("kind = 'delete'") == []


def test_failed_processing_keeps_the_file(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path, tmp_path: Path
) -> None:
    """An asset whose processing failed is not "safely in the library": its file stays."""
    archive = tmp_path / "archive"
    emulator.set_processing(seconds=0.2, failure_rate=1.0)
    run = start_daemon(timers=quick_followup(), extra_folder=archive_options(archive))
    write_image(hot / "bad.jpg", 5)
    wait_remote(run, failed=1)
    time.sleep(0.5)  # a few after-upload rounds
    assert (hot / "bad.jpg").exists() and not archive.exists()


@pytest.fixture
def other_fs() -> Iterator[Path]:
    """A folder on another filesystem (tmpfs) than the test's temporary directory."""
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine")
    path = Path(tempfile.mkdtemp(prefix="syncd-archive-", dir="/dev/shm"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_archive_across_filesystems_copies_checks_and_unlinks(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path, other_fs: Path
) -> None:
    """An archive on another filesystem gets a verified copy; the original is then removed."""
    assert other_fs.stat().st_dev != hot.stat().st_dev
    emulator.set_processing(seconds=0.1)
    run = start_daemon(timers=quick_followup(), extra_folder=archive_options(other_fs))
    data = write_image(hot / "c" / "d.jpg", 6)
    wait_until(lambda: files_under(hot) == {}, 30, message="the hot folder emptied")
    assert files_under(other_fs) == {"c/d.jpg": data}
    assert len(run.assets()) == 1


@pytest.mark.parametrize("action", ["archive", "remove"])
def test_explain_says_where_a_file_that_left_went_and_when(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path, tmp_path: Path, cli: Cli,
    action: str,
) -> None:  # fmt: skip
    """`syncd explain` of an archived (or removed) file: where it went and when; --json too."""
    archive = tmp_path / "archive"
    emulator.set_processing(seconds=0.1)
    run = start_daemon(timers=quick_followup(), extra_folder=archive_options(archive, action))
    write_image(hot / "shoes" / "a.jpg", 7)
    wait_until(lambda: files_under(hot) == {}, 30, message="the file left the hot folder")
    [asset] = run.assets()
    answer = cli("explain", "-c", run.config_path, "--json", hot / "shoes" / "a.jpg")
    assert answer.returncode == 0, answer.stderr
    out = json.loads(answer.stdout)
    left = out["departure"]
    assert (left["action"], left["state"], left["reason"]) == (action, "done", None)
    assert left["to"] == (str(archive / "shoes" / "a.jpg") if action == "archive" else None)
    assert left["at"] and left["at"].endswith("Z")
    assert out["asset"]["asset_id"] == asset["asset_id"] and out["exists"] is False
    said = "archived to " + str(archive / "shoes" / "a.jpg") if action == "archive" else "removed"
    assert out["verdict"].startswith(f"{said} at {left['at']}")
    assert asset["asset_id"] in out["verdict"]
    text = cli("why", "-c", run.config_path, hot / "shoes" / "a.jpg").stdout
    assert f"verdict:  {said} at {left['at']}" in text
    assert f"left:     {action} done" in text
