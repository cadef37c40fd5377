"""The machine misbehaving: a full disk under the state database, a database file that is
not ours or is damaged, and a second daemon on the same state file.

These are about the process, so each runs ``syncd run`` as a real subprocess
(``daemon_process``) and looks at it from outside: exit codes, stderr, its JSON log,
``syncd status --json`` and the emulator's library.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from syncd.emulator import EmulatorServer, Faults
from syncd.model import JobKind
from syncd.store import Store
from tests.faults.conftest import (
    DELETES,
    POSTS,
    DaemonProcess,
    FaultReport,
    disk_pairs,
    make_files,
    pairs,
)
from tests.support import config_text, wait_until

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]


def converged(daemon: DaemonProcess, emulator: EmulatorServer, want: set[Any]) -> bool:
    if set(pairs(emulator)) != want:
        return False
    jobs = daemon.status()["jobs"]
    busy = ("pending", "hashing", "uploading", "waiting", "deleting")
    return not any(states.get(s, 0) for states in jobs.values() for s in busy)


def log_events(daemon: DaemonProcess, name: str) -> list[dict[str, Any]]:
    return [line for line in daemon.log_lines() if line.get("event") == name]


# --- a full disk ---------------------------------------------------------------------------


class SmallDisk:
    """Where the state database lives, and a way to fill that place up and free it again.

    A real tmpfs of a few MiB where this process may mount one (root with CAP_SYS_ADMIN).
    Where it may not (an unprivileged container; or ``SYNCD_TEST_NO_MOUNT=1``), the daemon
    runs through :func:`run_with_full_switch`, whose state writes fail with the store's own
    disk-full error while a switch file exists: the daemon's handling is the same, only
    SQLite's reading of ENOSPC is not exercised. ``real`` says which one this is.
    """

    def __init__(self, where: Path, size: str = "16m") -> None:
        self.where = where
        self.size = size
        self.filler = where / "filler"
        self.switch = where.with_name("disk-full.switch")
        where.mkdir()
        self.real = not os.environ.get("SYNCD_TEST_NO_MOUNT") and self._mount()

    def _mount(self) -> bool:
        options = f"size={self.size},mode=0700"
        result = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.where)],
            capture_output=True,
            check=False,
        )
        return result.returncode == 0

    def unmount(self) -> None:
        if self.real:
            subprocess.run(["umount", "-l", str(self.where)], capture_output=True, check=False)

    def fill(self) -> int:
        """Write until the filesystem says ENOSPC; return how many bytes went in."""
        if not self.real:
            self.switch.touch()
            return 0
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for size in (1 << 20, 1 << 12):
                while True:
                    try:
                        written += os.write(fd, bytes(size))
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC, exc
                        break
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)
        self.switch.unlink(missing_ok=True)

    def daemon(self, config: Path, log: Path) -> DaemonProcess:
        if self.real:
            return DaemonProcess(config, log)
        env = {"SYNCD_TEST_FULL_SWITCH": str(self.switch), "PYTHONPATH": str(ROOT)}
        return SwitchedDaemon(config, log, env)

    def describe(self, filled: int) -> str:
        if self.real:
            return f"tmpfs filled ({filled // 1024} KiB)"
        return "simulated full disk (no mount permission)"


@dataclass
class SwitchedDaemon(DaemonProcess):
    """`syncd run` started through :func:`run_with_full_switch`."""

    def argv(self) -> list[str]:
        launch = f"from {__name__} import run_with_full_switch; run_with_full_switch()"
        return [sys.executable, "-c", launch, "run", "-c", str(self.config)]


def run_with_full_switch() -> None:
    """`syncd run` whose state writes fail as on a full disk while the switch file exists."""
    from syncd import cli, store

    switch = Path(os.environ["SYNCD_TEST_FULL_SWITCH"])
    write = store.Store.write

    @contextlib.contextmanager
    def guarded(self: store.Store) -> Iterator[sqlite3.Connection]:
        if switch.exists():
            raise store._translate(sqlite3.OperationalError("database or disk is full"))
        with write(self) as conn:
            yield conn

    store.Store.write = guarded  # type: ignore[method-assign,assignment]
    cli.main(sys.argv[1:])


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "statefs")
    try:
        yield disk
    finally:
        disk.unmount()


def test_a_full_disk_under_the_state_database_loses_nothing(
    tmp_path: Path, emulator: EmulatorServer, small_disk: SmallDisk, fault_report: FaultReport
) -> None:
    """Disk full mid-upload: loud, alive, nothing lost or sent twice; catches up once freed."""
    hot = tmp_path / "hot"
    make_files(hot, 3, first_seed=0)
    conf = tmp_path / "syncd.toml"
    conf.write_text(config_text(emulator.base_url, [hot], small_disk.where / "state.db"))
    conf.chmod(0o600)  # it holds the key: a config open to others does not load
    daemon = small_disk.daemon(conf, tmp_path / "daemon.log").start()
    try:
        wait_until(lambda: converged(daemon, emulator, disk_pairs(hot)), 20, message="first files")
        # Slow answers, so uploads are in flight when the disk fills under them.
        emulator.set_faults(Faults(latency=1.0))
        make_files(hot, 9, first_seed=100)
        wait_until(lambda: emulator.stats()["requests"].get(POSTS, 0) > 3, 20, message="a POST")
        filled = small_disk.fill()
        make_files(hot, 9, first_seed=200)  # and changes arrive while nothing can be written
        wait_until(
            lambda: log_events(daemon, "job.not_recorded") and log_events(daemon, "scan.failed"),
            20,
            message="the daemon reporting that it cannot record",
        )
        emulator.set_faults(Faults())
        assert daemon.alive(), "a full disk must not kill the daemon"
        waiting = len(disk_pairs(hot) - set(pairs(emulator)))
        # The operator can still look: status reads the database while nothing can be written.
        assert daemon.status()["jobs"]
        small_disk.free()
        want = disk_pairs(hot)
        wait_until(lambda: converged(daemon, emulator, want), 40, message="catching up")
        assert daemon.alive()
        assert daemon.stop() == 0
    finally:
        if daemon.alive():
            daemon.kill()
    loud = [e for e in daemon.log_lines() if "disk is full" in str(e)]
    note = (
        f"{small_disk.describe(filled)}: {len(loud)} log lines; "
        f"{len(log_events(daemon, 'job.not_recorded'))} outcomes unrecorded, "
        f"{len(log_events(daemon, 'upload.adopt'))} adopted; {waiting} waited"
    )
    print(f"\nfull disk: {note}")
    fault_report.check(emulator, want, note)
    assert emulator.stats()["requests"].get(DELETES, 0) == 0, "a remote deletion on a guess"


# --- a database that is not ours, or damaged ------------------------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database\n" * 200)


def _foreign(path: Path) -> None:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
        conn.commit()


def _damaged(path: Path) -> None:
    """A real syncd database with pages past the first overwritten (a bad disk, a torn copy)."""
    store = Store.open(path, lock=False)
    with store.write() as conn:
        for i in range(300):
            store.new_job(conn, JobKind.FILE, "/srv/hot", relpath=f"dir/{i:04d}-{'x' * 80}.jpg")
    store.close()
    data = bytearray(path.read_bytes())
    for page in range(1, len(data) // 4096, 2):
        data[page * 4096 : page * 4096 + 128] = b"\xa5" * 128
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "make", [_garbage, _foreign, _damaged], ids=["garbage", "foreign", "damaged"]
)
def test_foreign_database_refused_untouched(
    tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport, daemon_process, make
) -> None:
    """`syncd run` on a foreign or damaged state file exits 3 with a clear message; bytes kept."""
    hot = tmp_path / "hot"
    hot.mkdir()
    state = tmp_path / "state.db"
    make(state)
    before = state.read_bytes()
    daemon: DaemonProcess = daemon_process([hot])
    daemon.start()
    assert daemon.proc is not None
    code = daemon.proc.wait(30)
    output = daemon.log.read_text()
    assert code == 3, output
    assert str(state) in output and "left untouched" in output, output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output
    assert state.read_bytes() == before, "the file must never be overwritten"
    kind = make.__name__.strip("_")
    note = f"{kind} file: exit {code}, one line naming the file, bytes unchanged"
    fault_report.record(emulator, duplicates=0, losses=0, note=note)


# --- two daemons ---------------------------------------------------------------------------


def test_second_daemon_refuses_and_first_goes_on(
    tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport, daemon_process
) -> None:
    """The second `syncd run` exits 3 naming the lock; the first keeps uploading."""
    hot = tmp_path / "hot"
    make_files(hot, 2, first_seed=300)
    first: DaemonProcess = daemon_process([hot]).start()
    wait_until(lambda: converged(first, emulator, disk_pairs(hot)), 20, message="first daemon")
    second: DaemonProcess = daemon_process([hot]).start()
    assert second.proc is not None
    code = second.proc.wait(30)
    output = second.log.read_text()
    assert code == 3, output
    assert "state.db.lock" in output and "another syncd" in output, output
    make_files(hot, 3, first_seed=310)
    wait_until(lambda: converged(first, emulator, disk_pairs(hot)), 20, message="first goes on")
    assert first.alive()
    assert first.stop() == 0
    fault_report.check(emulator, disk_pairs(hot), f"second exit {code}: lock named")
    assert emulator.stats()["requests"].get(DELETES, 0) == 0, "a remote deletion on a guess"
