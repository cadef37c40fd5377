"""The hot folder is a trust boundary: real users, real links, a real race.

The daemon runs as an unprivileged user in a group that may read a private folder; the
photographer who writes the hot folder is another user, outside that group. Whatever the
photographer does with links and renames, nothing the photographer could not read may be
uploaded, and the photographer's own images still are.
"""

from __future__ import annotations

import fcntl
import grp
import hashlib
import json
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from syncd.emulator import EmulatorServer
from tests.support import config_text, image_bytes, wait_until

ROOT = Path(__file__).resolve().parents[2]
GROUP = "syncdtest-hot"
DAEMON_USER = "syncdtest-svc"
PHOTOGRAPHER = "syncdtest-photo"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates users and drops to them")


@dataclass(frozen=True)
class Users:
    group: int
    daemon: int
    photographer: int
    nogroup: int


def _ensure_users() -> Users:
    """The test's group and two users, made once with the system's own tools.

    Under a lock: test processes running side by side (pytest-xdist) make them once.
    """
    with open(Path(tempfile.gettempdir()) / "syncdtest-users.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _make_users()


def _make_users() -> Users:
    try:
        grp.getgrnam(GROUP)
    except KeyError:
        subprocess.run(["groupadd", "-f", GROUP], check=True)
    for user, extra in ((DAEMON_USER, ["-G", GROUP]), (PHOTOGRAPHER, [])):
        try:
            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(
                ["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", *extra, user], check=True
            )
    return Users(
        group=grp.getgrnam(GROUP).gr_gid,
        daemon=pwd.getpwnam(DAEMON_USER).pw_uid,
        photographer=pwd.getpwnam(PHOTOGRAPHER).pw_uid,
        nogroup=pwd.getpwnam(PHOTOGRAPHER).pw_gid,
    )


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Studio:
    """A private folder the daemon may read, a hot folder the photographer writes."""

    base: Path
    users: Users
    private: Path
    secrets: dict[str, bytes]
    emulator: EmulatorServer

    def as_photographer(self, action: Callable[[], None]) -> None:
        """Run ``action`` in a forked child that is the photographer (syscalls only)."""
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                os.setgroups([])
                os.setresgid(self.users.nogroup, self.users.nogroup, self.users.nogroup)
                os.setresuid(
                    self.users.photographer, self.users.photographer, self.users.photographer
                )
                os.umask(0o002)
                action()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the photographer's action failed"

    def uploaded(self) -> set[str]:
        return {a["sha256"] for a in self.emulator.assets()}

    def leaked(self) -> set[str]:
        """Private content that reached the library (must stay empty)."""
        return self.uploaded() & {sha(d) for d in self.secrets.values()}


@pytest.fixture
def studio(world_readable_dir: Path, emulator: EmulatorServer) -> Iterator[Studio]:
    users = _ensure_users()
    base = world_readable_dir
    private = base / "private"
    private.mkdir()
    secrets = {}
    for i, name in enumerate(["x.jpg", "secret.jpg", "sub/x.jpg"]):
        data = image_bytes(900 + i)
        (private / name).parent.mkdir(exist_ok=True)
        (private / name).write_bytes(data)
        secrets[name] = data
    for path in [private, *private.rglob("*")]:
        os.chown(path, 0, users.group)
        path.chmod(0o750 if path.is_dir() else 0o640)
    yield Studio(base, users, private, secrets, emulator)


@dataclass
class DaemonProcess:
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def run_daemon(studio: Studio) -> Iterator[Callable[..., DaemonProcess]]:
    """Start the real daemon as the daemon user (in the hot-folder group) on some folders."""
    started: list[DaemonProcess] = []

    def start(folders: list[Path], extra_folder: str = "") -> DaemonProcess:
        state = studio.base / "state"
        state.mkdir(exist_ok=True)
        os.chown(state, studio.users.daemon, studio.users.group)
        state.chmod(0o700)
        conf = studio.base / "syncd.toml"
        conf.write_text(
            config_text(
                studio.emulator.base_url,
                folders,
                state / "state.db",
                settle=0,
                extra_folder=extra_folder,
            )
        )
        conf.chmod(0o600)
        log = studio.base / "daemon.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.dropped",
                    str(conf),
                    str(studio.users.daemon),
                    str(studio.users.group),
                    str(studio.users.group),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        running = DaemonProcess(process, log)
        started.append(running)
        return running

    yield start
    for running in started:
        running.stop()


def hot_folder(studio: Studio, name: str = "hot") -> Path:
    """A hot folder the photographer owns and the daemon's group may read."""
    hot = studio.base / name
    hot.mkdir()
    os.chown(hot, studio.users.photographer, studio.users.group)
    hot.chmod(0o2775)
    return hot


def drop_image(studio: Studio, path: Path, seed: int) -> bytes:
    """The photographer writes an image of their own (temp name, then rename)."""
    data = image_bytes(seed)

    def write() -> None:
        os.makedirs(path.parent, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o664)
        os.write(fd, data)
        os.close(fd)
        os.rename(tmp, path)

    studio.as_photographer(write)
    return data


def events(daemon: DaemonProcess) -> dict[str, int]:
    """How often the daemon logged each event (its log is JSON lines): the test's figures."""
    counts: dict[str, int] = {}
    for line in daemon.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line).get("event", "?")
            counts[event] = counts.get(event, 0) + 1
    return counts


def alive(daemon: DaemonProcess) -> bool:
    if daemon.process.poll() is not None:
        raise AssertionError("the daemon exited:\n" + daemon.log.read_text()[-4000:])
    return True


def test_links_out_and_a_folder_swapped_for_a_link_upload_nothing_private(
    studio: Studio, run_daemon: Callable[[list[Path]], DaemonProcess]
) -> None:
    """Links to a private file and folder, and a seen folder swapped for a link: nothing leaks."""
    hot = hot_folder(studio)
    daemon = run_daemon([hot])
    own = drop_image(studio, hot / "d" / "x.jpg", 1)
    wait_until(lambda: alive(daemon) and sha(own) in studio.uploaded(), 30, message="own upload")

    private = str(studio.private)

    def attack() -> None:
        os.rename(hot / "d", hot / "d.old")  # the reproduction, step by step
        os.symlink(private, hot / "d")
        os.symlink(f"{private}/secret.jpg", hot / "leak.jpg")
        os.symlink("../private/secret.jpg", hot / "rel.jpg")
        os.symlink(private, hot / "pd")
        os.symlink("../private/sub", hot / "relsub")

    studio.as_photographer(attack)
    later = drop_image(studio, hot / "mine" / "y.jpg", 2)
    wait_until(lambda: alive(daemon) and sha(later) in studio.uploaded(), 30, message="later")
    # The daemon had every chance: its own later image went up after the attack was in place.
    time.sleep(3)  # and a few more seconds for any late job; nothing may appear
    assert studio.leaked() == set()
    alive(daemon)
    seen = events(daemon)
    print(
        "links and swap:", {k: seen.get(k, 0) for k in ("file.failed", "file.gone", "upload.done")}
    )


def test_a_folder_and_a_link_swapped_in_a_loop_while_hashing_leak_nothing(
    studio: Studio, run_daemon: Callable[[list[Path]], DaemonProcess]
) -> None:
    """For seconds, r/ flips between the photographer's folder and a link to the private one."""
    hot = hot_folder(studio)
    daemon = run_daemon([hot])
    own = drop_image(studio, hot / "r" / "x.jpg", 3)
    wait_until(lambda: alive(daemon) and sha(own) in studio.uploaded(), 30, message="own upload")
    private = str(studio.private)
    seconds = 6.0

    def swap_loop() -> None:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1
            # A change (hash it again!), then at once the link, for the daemon to meet.
            os.utime(hot / "r" / "x.jpg", ns=(n * 10**9, n * 10**9))
            os.rename(hot / "r", hot / "r.real")
            os.symlink(private, hot / "r")
            time.sleep(0.2 if n % 2 else 0.01)
            os.unlink(hot / "r")
            os.rename(hot / "r.real", hot / "r")
            time.sleep(0.01)

    studio.as_photographer(swap_loop)
    later = drop_image(studio, hot / "after" / "z.jpg", 4)
    wait_until(lambda: alive(daemon) and sha(later) in studio.uploaded(), 30, message="later")
    time.sleep(2)
    assert studio.leaked() == set()
    # While r/ was a link its file was gone from the folder (deleted remotely: grace is 0
    # here); back as a folder, the photographer's own image is there again.
    wait_until(lambda: sha(own) in studio.uploaded(), 30, message="own image back")
    assert studio.leaked() == set()
    seen = events(daemon)
    print(
        "swap loop:",
        {k: seen.get(k, 0) for k in ("file.linked", "file.gone", "file.changed_while_read")},
        "uploads:",
        len(studio.uploaded()),
    )


def test_a_root_replaced_by_a_link_is_unavailable_and_uploads_nothing(
    studio: Studio, run_daemon: Callable[[list[Path]], DaemonProcess]
) -> None:
    """The photographer may write the root's parent and puts a link where the root was."""
    parent = studio.base / "share"
    parent.mkdir()
    os.chown(parent, studio.users.photographer, studio.users.group)
    parent.chmod(0o2775)
    hot = parent / "hot"
    hot.mkdir()
    os.chown(hot, studio.users.photographer, studio.users.group)
    other = hot_folder(studio, "other")
    daemon = run_daemon([hot, other])
    own = drop_image(studio, hot / "a.jpg", 5)
    wait_until(lambda: alive(daemon) and sha(own) in studio.uploaded(), 30, message="own upload")
    private = str(studio.private)

    def replace_root() -> None:
        os.rename(hot, parent / "hot.old")
        os.symlink(private, hot)

    studio.as_photographer(replace_root)
    state = studio.base / "state" / "state.db"

    def health() -> tuple[str, str]:
        from syncd.store import Store

        store = Store.open_readonly(state)
        try:
            row = store.folder_row(str(hot)) or {}
        finally:
            store.close()
        return row.get("health", ""), row.get("reason") or ""

    wait_until(
        lambda: alive(daemon) and health()[0] == "unavailable" and "another folder" in health()[1],
        30,
        message="the replaced root shown unavailable",
    )
    later = drop_image(studio, other / "b.jpg", 6)
    wait_until(lambda: alive(daemon) and sha(later) in studio.uploaded(), 30, message="other")
    time.sleep(2)
    assert studio.leaked() == set()
    assert studio.emulator.stats()["requests"].get("DELETE /v1/assets/{id}", 0) == 0


def logged(daemon: DaemonProcess, event: str, path: str) -> bool:
    """Whether the daemon logged ``event`` for the hot-folder path ``path``."""
    for line in daemon.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("event") == event and str(entry.get("path")).endswith(path):
                return True
    return False


def test_a_folder_swapped_for_a_link_mid_archive_moves_removes_and_reads_nothing_private(
    studio: Studio, run_daemon: Callable[..., DaemonProcess]
) -> None:
    """A half-done archive move, then d/ swapped for a link: the private x.jpg stays unread."""
    hot = hot_folder(studio)
    archive = studio.base / "archive"
    archive.mkdir()
    os.chown(archive, studio.users.daemon, studio.users.group)
    studio.private.chmod(0o770)  # the daemon could remove files here if it went there
    for path in studio.private.rglob("*.jpg"):
        os.utime(path, (0, path.stat().st_mtime))  # relatime: any read now moves the atime
    before = {p: (p.stat().st_ino, p.stat().st_atime) for p in studio.private.rglob("*.jpg")}

    def locked_folder() -> None:
        os.mkdir(hot / "d", 0o755)  # the daemon may link its file, not unlink it

    studio.as_photographer(locked_folder)
    daemon = run_daemon(
        [hot],
        f'after_upload = "archive"\nafter_upload_when = "sent"\narchive_path = "{archive}"\n',
    )
    held = drop_image(studio, hot / "d" / "x.jpg", 7)
    own = drop_image(studio, hot / "own" / "y.jpg", 8)
    wait_until(
        lambda: alive(daemon) and logged(daemon, "after_upload.failed", "d/x.jpg"),
        30,
        message="the move of d/x.jpg half done (linked, not unlinked)",
    )
    assert (archive / "d" / "x.jpg").read_bytes() == held and (hot / "d" / "x.jpg").exists()

    def swap() -> None:
        os.rename(hot / "d", hot / "d.old")
        os.symlink(studio.private, hot / "d")

    studio.as_photographer(swap)
    wait_until(
        lambda: alive(daemon) and logged(daemon, "after_upload.done", "d/x.jpg"),
        30,
        message="the move of d/x.jpg finished",
    )
    wait_until(lambda: not (hot / "own" / "y.jpg").exists(), 30, message="own/y.jpg archived")
    assert (archive / "own" / "y.jpg").read_bytes() == own
    after = {p: (p.stat().st_ino, p.stat().st_atime) for p in studio.private.rglob("*.jpg")}
    assert after == before  # nothing moved, removed or read
    assert {p.read_bytes() for p in studio.private.rglob("*.jpg")} == set(studio.secrets.values())
    archived = {p.read_bytes() for p in archive.rglob("*") if p.is_file()}
    assert archived.isdisjoint(studio.secrets.values())
    assert (hot / "d.old" / "x.jpg").read_bytes() == held  # the photographer's own file
    assert studio.leaked() == set()
