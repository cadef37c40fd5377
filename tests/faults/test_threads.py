"""Threads that meet an error: a state database that fails for a while is lived through;
a thread that dies anyway stops the daemon loudly, so its supervisor restarts it.

Each runs ``syncd run`` as a real process, started through a launcher of this module
that breaks one part the way a sick machine or a bug would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from syncd.emulator import EmulatorServer
from tests.faults.conftest import DaemonProcess, pairs, sha
from tests.support import wait_until, write_image

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
#: A key easy to look for in the output, where it must never be.
KEY = "sk-threads-4d9c1e7a"


@pytest.fixture
def api_key() -> str:
    """The key the emulator accepts and the daemons use."""
    return KEY


def events(daemon: DaemonProcess) -> set[str]:
    return {line.get("event", "") for line in daemon.log_lines()}


@dataclass
class Launched(DaemonProcess):
    """`syncd run` started through a launcher function of this module."""

    launcher: str = ""

    def argv(self) -> list[str]:
        launch = f"from {__name__} import {self.launcher}; {self.launcher}()"
        return [sys.executable, "-c", launch, "run", "-c", str(self.config)]


def start(make: Any, folders: Sequence[Path], launcher: str, **env: str) -> DaemonProcess:
    daemon: Launched = make(
        list(folders), kind=Launched, env={"PYTHONPATH": str(ROOT), **env}, api_key=KEY
    )
    daemon.launcher = launcher
    daemon.start()
    return daemon


# --- launchers (run in the daemon's process) ------------------------------------------------


def run_with_a_recorder_that_dies() -> None:
    """`syncd run` whose event recorder fails at once, with the key in its message."""
    from syncd import cli, intake

    def dies(self: intake.Intake, stopping: threading.Event) -> None:
        raise RuntimeError(f"recorder broke while holding {KEY}")

    intake.Intake.record_loop = dies  # type: ignore[method-assign]
    cli.main(sys.argv[1:])


def run_with_a_failing_store() -> None:
    """`syncd run` whose state reads and writes fail while the switch file exists.

    Only once the daemon has started: a store that fails when opened is another case
    (exit 3), covered by the machine-fault suite.
    """
    from syncd import cli, daemon, store

    switch = Path(os.environ["SYNCD_TEST_STORE_SWITCH"])
    started = threading.Event()
    query, write, begin = store.Store.query, store.Store.write, daemon.Daemon.start

    def check() -> None:
        if started.is_set() and switch.exists():
            raise store._translate(sqlite3.OperationalError("disk I/O error"))

    def failing_query(self: store.Store, sql: str, params: Sequence[Any] = ()) -> Any:
        check()
        return query(self, sql, params)

    @contextlib.contextmanager
    def failing_write(self: store.Store) -> Iterator[sqlite3.Connection]:
        check()
        with write(self) as conn:
            yield conn

    def start_then_arm(self: daemon.Daemon) -> None:
        begin(self)
        started.set()

    store.Store.query = failing_query  # type: ignore[method-assign]
    store.Store.write = failing_write  # type: ignore[method-assign,assignment]
    daemon.Daemon.start = start_then_arm  # type: ignore[method-assign]
    cli.main(sys.argv[1:])


# --- the cases -------------------------------------------------------------------------------


def test_a_thread_that_dies_is_logged_and_run_exits_1(
    tmp_path: Path, emulator: EmulatorServer, daemon_process: Any
) -> None:
    """A dead recorder: `thread.crashed` in the log (key masked), the daemon stops, exit 1."""
    hot = tmp_path / "hot"
    hot.mkdir()
    daemon = start(daemon_process, [hot], "run_with_a_recorder_that_dies")
    assert daemon.proc is not None
    assert daemon.proc.wait(20) == 1
    crashed = [e for e in daemon.log_lines() if e.get("event") == "thread.crashed"]
    assert [e["thread"] for e in crashed] == ["syncd-recorder"]
    (error, *_) = crashed[0]["exception"]
    assert (error["exc_type"], error["exc_value"]) == (
        "RuntimeError",
        "recorder broke while holding ***",
    )
    assert KEY not in daemon.log.read_text()
    assert "daemon.stopped" in events(daemon)


def test_a_failing_state_database_kills_no_thread(
    tmp_path: Path, emulator: EmulatorServer, daemon_process: Any
) -> None:
    """Store errors at start, in the status, and when the root goes: logged, then caught up."""
    hot = tmp_path / "hot"
    write_image(hot / "a.jpg", 1)
    switch = tmp_path / "store-fails.switch"
    switch.touch()
    daemon = start(
        daemon_process, [hot], "run_with_a_failing_store", SYNCD_TEST_STORE_SWITCH=str(switch)
    )

    def heard(*names: str) -> bool:
        assert daemon.alive(), daemon.log.read_text()[-3000:]
        return set(names) <= events(daemon)

    # The scanner's first look at the store, the ready message's status line.
    wait_until(lambda: heard("library.index_failed", "status.unavailable"), 20, message="both")
    shutil.rmtree(hot)  # the recorder hears the root go and cannot write it down
    wait_until(lambda: heard("folder.not_marked"), 20, message="the root noted as gone")
    switch.unlink()
    data = write_image(hot / "b.jpg", 2)
    want = {(sha(data), ("studio",))}
    wait_until(lambda: heard() and set(pairs(emulator)) == want, 30, message="b.jpg uploaded")
    assert daemon.stop() == 0
    assert "thread.crashed" not in events(daemon)
