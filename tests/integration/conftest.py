"""The integration suite's shared parts: the command line in subprocesses.

``hot`` and ``start_daemon`` (a syncd in this process against the emulator) are fixtures
of ``tests/conftest.py``, shared with the fault suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import wait_until

__all__ = ["Cli", "cli", "wait_for_log"]


# --- the command line as a user runs it ---------------------------------------------------


class Cli:
    """Runs ``python -m syncd`` in subprocesses, in an environment with no syncd settings.

    Every output is kept (``outputs``), so a test can look for what must never be printed.
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        drop = ("SYNCD_CONFIG", "SYNCD_API_KEY", "CREDENTIALS_DIRECTORY", "STATE_DIRECTORY",
                "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM",
                "INVOCATION_ID")  # fmt: skip
        self.env = {k: v for k, v in os.environ.items() if k not in drop}
        self.env["COLUMNS"] = "200"
        self.outputs: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []

    def __call__(self, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "syncd", *map(str, args)], capture_output=True, text=True,
            env=self.env, cwd=self.tmp_path, timeout=timeout, stdin=subprocess.DEVNULL,
            check=False,
        )  # fmt: skip
        self.outputs += [result.stdout, result.stderr]
        return result

    def start(self, *args: str | Path, log: Path) -> subprocess.Popen[bytes]:
        """A long-running command (``run``) with stdout and stderr going to ``log``."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", *map(str, args)], stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env,
                cwd=self.tmp_path,
            )  # fmt: skip
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    """The ``syncd`` command in subprocesses; any still running at teardown is killed."""
    runner = Cli(tmp_path)
    yield runner
    runner.close()


def wait_for_log(log: Path, event: str, timeout: float = 20.0) -> str:
    """Wait until a log file (as written by ``Cli.start``) mentions ``event``."""
    return wait_until(
        lambda: event in (text := log.read_text(errors="replace")) and text,
        timeout,
        message=f"{event!r} in {log.name}",
    )
