"""Bad files and awkward names: each one uploads correctly or fails with a reason people
can act on, and the daemon goes on with everything else.

Every case runs the real daemon (real watcher, real SQLite, real HTTP to the emulator),
in this process unless the behaviour is about the process itself.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import structlog

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
    status_json,
)
from tests.running import Running
from tests.support import image_bytes, noise_jpeg, wait_until, write_image

pytestmark = pytest.mark.faults

MB = 1024 * 1024


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def oversize_jpeg() -> bytes:
    """Random pixels compress badly: 2500x2500 at quality 100 is about 11.8 MB."""
    return noise_jpeg(2500, side=2500, quality=100)


def failed_reasons(run: Running) -> dict[str, str]:
    """Failed jobs by path (file jobs and upload jobs alike), from the state database."""
    return {job["relpath"]: job["reason"] for job in run.jobs("state = 'failed'")}


# --- contents that cannot go up --------------------------------------------------------------


def test_bad_contents_fail_with_reasons_and_the_rest_goes_on(
    start_daemon, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Text, truncated JPEG/PNG, empty, oversize, a FIFO, a folder link: failed with reasons."""
    (hot / "sub").mkdir()
    run: Running = start_daemon()
    jpeg, png = image_bytes(1, size=(300, 200)), image_bytes(2, "PNG", size=(300, 200))
    bad = {
        "text.jpg": b"Shot list for Monday\nshoes, bags, belts\n" * 4,
        "cut.jpg": jpeg[: len(jpeg) // 2],
        "cut.png": png[: len(png) // 2],
        "empty.jpg": b"",
        "big.jpg": oversize_jpeg(),
    }
    for name, data in bad.items():
        (hot / name).write_bytes(data)
    os.mkfifo(hot / "pipe.jpg")  # a reader that opens it blocks until a writer comes
    (hot / "sub" / "up.jpg").symlink_to("..")  # a link to a folder, named like an image
    # In a new folder the link may be listed before the folder is watched, and then
    # it is reported as a folder of its own: it must not be scanned through either.
    (hot / "fresh").mkdir()
    (hot / "fresh" / "back.jpg").symlink_to("..")
    good = {f"good/{i}.jpg": write_image(hot / "good" / f"{i}.jpg", 10 + i) for i in range(3)}
    want = {(sha(data), ("studio", "good")) for data in good.values()}
    expected = {
        "text.jpg": "not an image: the file is named .jpg but the content is not JPEG",
        "cut.jpg": "truncated or corrupt image",
        "cut.png": "truncated or corrupt image",
        "empty.jpg": "empty file",
        "big.jpg": "too large: 11",
        "pipe.jpg": "not a regular file",
        "sub/up.jpg": "not a regular file",
    }
    wait_until(
        lambda: set(failed_reasons(run)) >= set(expected) and run.idle(),
        30,
        message="every bad file failed and the queue idle",
    )
    converge(run, want)
    failed = failed_reasons(run)
    assert set(failed) - set(expected) <= {"fresh/back.jpg"}
    if "fresh/back.jpg" in failed:
        expected["fresh/back.jpg"] = "not a regular file"
    status = status_json(run.config_path)
    shown = {item["path"]: item["reason"] for item in status["failures"]["items"]}
    assert status["failures"]["count"] == len(expected)
    for path, reason in expected.items():
        assert shown[path].startswith(reason), (path, shown[path])
    assert "it looks like text" in shown["text.jpg"]
    assert 'oversize = "downscale"' in shown["big.jpg"]

    # Changing a failed file queues it again: fixed files go up, the broken upload is dropped.
    fixed = {"text.jpg": image_bytes(20), "cut.jpg": image_bytes(21), "empty.jpg": png}
    for name, data in fixed.items():
        with (hot / name).open("r+b") as fh:  # in place: same inode, new content
            fh.truncate(0)
            fh.write(data)
    want |= {(sha(data), ("studio",)) for data in fixed.values()}
    converge(run, want)
    assert set(failed_reasons(run)) == set(expected) - set(fixed)
    assert run.emulator.stats()["requests"].get(DELETES, 0) == 0
    finish(run, fault_report, want, f"{len(expected)} bad files failed, 3 fixed and uploaded")


def test_unreadable_file_fails_and_a_permission_fix_requeues_it(
    daemon_process: Callable[..., DaemonProcess],
    hot: Path,
    emulator: EmulatorServer,
    fault_report: FaultReport,
) -> None:
    """A file the daemon may not read (mode 000): failed 'permission denied'; chmod fixes it."""
    locked = write_image(hot / "locked.jpg", 30)
    (hot / "locked.jpg").chmod(0)
    ok = write_image(hot / "ok.jpg", 31)
    proc = daemon_process([hot], kind=UnprivilegedDaemon).start()

    def failure() -> dict[str, Any] | None:
        if proc.log.exists() and "daemon.ready" not in proc.log.read_text(errors="replace"):
            return None
        items = proc.status()["failures"]["items"]
        return next((i for i in items if i["path"] == "locked.jpg"), None)

    item = wait_until(failure, 30, interval=0.2, message="a failure for locked.jpg")
    assert item["reason"] == "unreadable: permission denied"
    wait_until(lambda: len(emulator.assets()) == 1, 20, message="ok.jpg uploaded meanwhile")
    assert proc.status()["daemon"]["running"] is True

    (hot / "locked.jpg").chmod(0o644)  # an attribute change is a change: look again
    want = {(sha(locked), ("studio",)), (sha(ok), ("studio",))}
    wait_until(
        lambda: set(pairs(emulator)) == want and proc.status()["failures"]["count"] == 0,
        20,
        interval=0.2,
        message="locked.jpg uploaded once readable",
    )
    assert proc.alive()
    fault_report.check(emulator, want, "mode 000, no root")
    assert proc.stop() == 0


# Root reads every file whatever its mode, so the daemon drops the two capabilities that
# let it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) before it starts: a service user's view.
_WITHOUT_DAC = """
import ctypes, os, sys
if os.geteuid() == 0:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP, applies from exec on
            raise OSError(ctypes.get_errno(), f"cannot drop capability {cap}")
os.execv(sys.executable, [sys.executable, "-m", "syncd", *sys.argv[1:]])
"""


class UnprivilegedDaemon(DaemonProcess):
    """`syncd run` that cannot read past file permissions, even when the tests run as root."""

    def argv(self) -> list[str]:
        return [sys.executable, "-c", _WITHOUT_DAC, "run", "-c", str(self.config)]


# --- files that change or vanish under the daemon ------------------------------------------


def test_a_file_deleted_before_its_hash_is_forgotten(
    start_daemon, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Deleted while its job waits to settle: the job ends 'gone'; nothing uploaded, no error."""
    run: Running = start_daemon(settle=1.5)
    write_image(hot / "brief.jpg", 40)
    store = run.daemon.store
    assert store is not None
    wait_until(
        lambda: store.query(
            "SELECT id FROM jobs WHERE relpath = 'brief.jpg' AND state = 'pending'"
        ),
        10,
        message="a pending file job for brief.jpg",
    )
    (hot / "brief.jpg").unlink()
    kept = write_image(hot / "kept.jpg", 41)
    converge(run, {(sha(kept), ("studio",))})
    jobs = store.query("SELECT state, reason FROM jobs WHERE relpath = 'brief.jpg'")
    assert [(j["state"], j["reason"]) for j in jobs] == [("done", "gone")]
    assert store.get_file(run.config.folders[0].key, "brief.jpg") is None
    assert failed_reasons(run) == {}
    finish(run, fault_report, {(sha(kept), ("studio",))}, "deleted before hash: no upload")


def test_a_file_rewritten_while_it_is_hashed_is_read_again(
    start_daemon, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Rewritten in the middle of its hash: noticed, hashed again, only the final bytes go up."""
    # A 100 MB file takes long enough to hash to change it in the middle. Sparse, so it
    # costs no disk; "downscale" lets a JPEG that large through the early size check.
    path = hot / "growing.jpg"
    staged = hot.parent / "growing.jpg"
    with staged.open("wb") as fh:
        fh.write(b"\xff\xd8\xff\xe0")
        fh.truncate(100 * MB)
    final = image_bytes(50, size=(320, 240))
    with structlog.testing.capture_logs() as logs:
        run: Running = start_daemon(settle=0.0, extra_folder='oversize = "downscale"')
        staged.rename(path)
        wait_until(lambda: _read_offset(path) > 4 * MB, 20, 0.002, "the hash under way")
        with path.open("r+b") as fh:
            fh.truncate(0)
            fh.write(final)
        converge(run, {(sha(final), ("studio",))})
    changed = [e for e in logs if e["event"] == "file.changed_while_read"]
    assert changed and changed[0]["path"] == "growing.jpg"
    assert run.emulator.stats()["requests"][POSTS] == 1
    finish(run, fault_report, {(sha(final), ("studio",))}, "rewritten mid-hash: final bytes once")


def _read_offset(path: Path) -> int:
    """How far this process has read ``path`` through any open descriptor (0 if not open)."""
    best = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") != str(path):
                continue
            info = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        best = max(best, int(info.split("pos:", 1)[1].split()[0]))
    return best


def test_a_file_changed_behind_the_watcher_before_upload_is_read_again(
    start_daemon, hot: Path, tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """New bytes between hash and upload, with no event: the upload notices, the file is redone."""
    from syncd.emulator import Faults

    run: Running = start_daemon()
    emulator.set_faults(Faults(down=True))  # the upload waits, its file already hashed
    first = write_image(hot / "a.jpg", 60)
    # Writing through a hard link in another folder gives the hot folder's watch no event.
    os.link(hot / "a.jpg", tmp_path / "same-inode.jpg")
    store = run.daemon.store
    assert store is not None
    wait_until(
        lambda: store.query(
            "SELECT id FROM jobs WHERE kind = 'upload' AND state = 'pending' AND attempt >= 1"
        ),
        20,
        message="the upload back in the queue after the outage",
    )
    second = image_bytes(61, size=(80, 60))
    with (tmp_path / "same-inode.jpg").open("r+b") as fh:
        fh.truncate(0)
        fh.write(second)
    emulator.set_faults(Faults())
    want = {(sha(second), ("studio",))}
    converge(run, want, timeout=30)
    assert sha(first) not in {a["sha256"] for a in emulator.assets()}
    assert emulator.stats()["requests"].get(DELETES, 0) == 0
    finish(run, fault_report, want, "changed between hash and upload: new bytes once")


# --- names and links -----------------------------------------------------------------------


def test_awkward_names_upload_once_with_nfc_tags(
    start_daemon, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Spaces, NFC and NFD twins, emoji, newline, 255 bytes, a future mtime: each up, NFC tags."""
    run: Running = start_daemon()
    names = [
        "with some spaces.jpg",
        nfc("café.jpg"),
        nfd("café.jpg"),  # another file on Linux, whatever it looks like
        "\U0001f4f7 shoot \U0001f45f.jpg",
        "two\nlines.jpg",
        "x" * 251 + ".jpg",  # 255 bytes, the longest name ext4 takes
        "é" * 125 + "a.jpg",  # 255 bytes too, in two-byte characters
        f"{nfc('crème')}/brûlée.jpg",
        f"{nfd('crème')}/brûlée.jpg",  # a second folder that tags alike
        "camera/IMG_0001.JPG",
    ]
    want: set[Pair] = set()
    for seed, name in enumerate(names, start=70):
        # Staged outside: a 255-byte name leaves no room for a temporary suffix.
        data = image_bytes(seed)
        staged = hot.parent / "staged.jpg"
        staged.write_bytes(data)
        (hot / name).parent.mkdir(exist_ok=True)
        if name.startswith("camera"):  # a card written in local time, hours ahead of UTC
            os.utime(staged, (time.time() + 5 * 3600, time.time() + 5 * 3600))
        staged.rename(hot / name)
        folders = tuple(nfc(p) for p in name.split("/")[:-1])
        want.add((sha(data), ("studio", *folders)))
    converge(run, want)
    by_sha = {a["sha256"]: a for a in emulator.assets()}
    assert len(by_sha) == len(names)
    got_names = sorted(a["name"] for a in by_sha.values())
    assert got_names.count(nfc("café")) == 2
    assert "two\nlines" in got_names and "x" * 251 in got_names
    tags = {t for a in by_sha.values() for t in a["tags"]}
    assert nfc("crème") in tags and nfd("crème") not in tags
    assert failed_reasons(run) == {}
    finish(run, fault_report, want, f"{len(names)} awkward names")


def test_symlinks_inside_copy_outside_refused_loops_harmless(
    start_daemon, hot: Path, tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """A link inside the folder is a copy; one leading out is refused; a loop hangs nothing."""
    outside = tmp_path / "private"
    outside.mkdir()
    secret = write_image(outside / "secret.jpg", 80)
    run: Running = start_daemon()
    shoe = write_image(hot / "products" / "shoe.jpg", 81)
    (hot / "sale").mkdir()
    (hot / "sale" / "shoe.jpg").symlink_to("../products/shoe.jpg")
    (hot / "leak.jpg").symlink_to(outside / "secret.jpg")
    (hot / "loop-a.jpg").symlink_to("loop-b.jpg")
    (hot / "loop-b.jpg").symlink_to("loop-a.jpg")
    (hot / "dangling.jpg").symlink_to("nowhere.jpg")
    after = write_image(hot / "after.jpg", 82)
    want = {
        (sha(shoe), ("studio", "products")),
        (sha(shoe), ("studio", "sale")),  # the link's own folder tags it
        (sha(after), ("studio",)),
    }
    converge(run, want)
    wait_until(lambda: len(failed_reasons(run)) == 3, 10, message="three links refused")
    reasons = failed_reasons(run)
    assert reasons["leak.jpg"] == "symlink to a file outside the hot folder: not followed"
    for loop in ("loop-a.jpg", "loop-b.jpg"):
        assert reasons[loop].startswith("unreadable: ") and "symbolic links" in reasons[loop]
    assert sha(secret) not in {a["sha256"] for a in emulator.assets()}
    assert (outside / "secret.jpg").read_bytes() == secret
    finish(run, fault_report, want, "link in: copy; link out and loops: failed")


# --- oversize and conversion -----------------------------------------------------------------


def test_oversize_downscaled_and_tiff_converted_dedup_on_the_source(
    start_daemon, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Over 10 MB goes up smaller, TIFF as JPEG, originals untouched; copies, touch, restart: 0."""
    extra = (
        'oversize = "downscale"\nconvert = ["tiff"]\n'
        'include = ["*.jpg", "*.png", "*.tif", "*.tiff"]'
    )
    big, tiff = oversize_jpeg(), image_bytes(90, "TIFF", size=(400, 300))
    assert len(big) > 10 * MB
    run: Running = start_daemon(extra_folder=extra)
    (hot / "big.jpg").write_bytes(big)
    (hot / "scan.tif").write_bytes(tiff)
    run.wait_assets(2, timeout=60)
    by_identity = {a["tags"][-1]: a for a in emulator.assets()}
    sent_big = by_identity[f"sha256:{sha(big)[:32]}"]
    sent_tiff = by_identity[f"sha256:{sha(tiff)[:32]}"]
    assert sent_big["file_size"] <= 10 * MB and sent_big["format"] == "jpeg"
    assert sent_tiff["format"] == "jpeg" and sent_tiff["name"] == "scan"
    assert (hot / "big.jpg").read_bytes() == big and (hot / "scan.tif").read_bytes() == tiff
    store = run.daemon.store
    assert store is not None
    adapted = {r["sha256"]: r["adapted"] for r in store.query("SELECT * FROM assets")}
    assert adapted[sha(big)].startswith("downscaled from 11")
    assert adapted[sha(tiff)] == "converted from tiff"

    # The same source again (a copy, a touch, a restart) is the same asset: no new upload.
    shutil.copy(hot / "scan.tif", hot / "scan copy.tif")
    later = time.time() + 3600  # a clock an hour ahead must not delay the check an hour
    os.utime(hot / "big.jpg", (later, later))
    key = run.config.folders[0].key
    wait_until(
        lambda: (
            store.get_file(key, "scan copy.tif")
            and store.get_file(key, "big.jpg").stat.mtime_ns == (hot / "big.jpg").stat().st_mtime_ns
            and run.idle()
        ),
        20,
        message="the copy tracked and the touch seen",
    )
    run.stop()
    restarted = time.time()
    again: Running = start_daemon(extra_folder=extra)
    assert again.daemon.store is not None
    wait_until(
        lambda: (
            (again.daemon.store.folder_row(key) or {}).get("last_scan", 0) > restarted
            and again.idle()
        ),
        20,
        message="the restarted daemon's scan done and its queue idle",
    )
    assert len(emulator.assets()) == 2
    assert emulator.stats()["requests"][POSTS] == 2
    finish(
        again,
        fault_report,
        {(sent_big["sha256"], ("studio",)), (sent_tiff["sha256"], ("studio",))},
        "downscaled + converted, then copy/touch/restart: no re-upload",
    )
