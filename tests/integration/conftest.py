"""A running syncd (in process, real watcher, real SQLite) against the emulator."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from syncd.config import Config, load
from syncd.daemon import Daemon, Timers
from syncd.emulator import EmulatorServer
from tests.support import config_text, wait_until


@dataclass
class Running:
    """A daemon running on a thread, with helpers to look at what the emulator holds."""

    daemon: Daemon
    emulator: EmulatorServer
    hot: Path
    config: Config
    thread: threading.Thread
    stopped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def assets(self) -> list[dict[str, Any]]:
        return self.emulator.assets()

    def folder_tags(self) -> list[tuple[str, ...]]:
        return sorted(
            tuple(t for t in a["tags"] if not t.startswith("sha256:")) for a in self.assets()
        )

    def wait_assets(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        wait_until(
            lambda: len(self.assets()) == count and self.idle(),
            timeout,
            message=f"{count} assets and an idle queue",
        )
        return self.assets()

    def idle(self) -> bool:
        assert self.daemon.ctx is not None
        return self.daemon.ctx.ledger.outstanding() == 0 and self.daemon.busy == 0

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.daemon.request_stop()
            self.thread.join(15)
            self.daemon.stop()


@pytest.fixture
def hot(tmp_path: Path) -> Path:
    path = tmp_path / "hot"
    path.mkdir()
    return path


@pytest.fixture
def start_daemon(
    tmp_path: Path, emulator: EmulatorServer, hot: Path
) -> Iterator[Callable[..., Running]]:
    """Start (and at teardown stop) daemons on ``hot``; keyword arguments shape the config."""
    running: list[Running] = []

    def start(**options: Any) -> Running:
        folders = options.pop("folders", [hot])
        conf = tmp_path / f"config{len(running)}.toml"
        conf.write_text(config_text(emulator.base_url, folders, tmp_path / "state.db", **options))
        config = load(conf)
        daemon = Daemon(config, timers=Timers(tick=0.05, heartbeat=0.5, key_probe=0.3))
        daemon.start()
        thread = threading.Thread(target=daemon.run_forever, name="test-daemon", daemon=True)
        thread.start()
        wait_until(
            lambda: folders[0].as_posix() in daemon.watchers or not folders[0].exists(),
            10,
            message="watcher started",
        )
        run = Running(daemon, emulator, hot, config, thread)
        running.append(run)
        return run

    yield start
    for run in running:
        run.stop()


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
