"""The fault suite's shared parts: a real daemon process and the figures table.

Every fault test records one row (case, faults injected, requests, duplicates, losses)
with the ``fault_report`` fixture; the session ends by printing the table.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from syncd.emulator import EmulatorServer
from tests.support import config_text, wait_until

ROWS: list[dict[str, Any]] = []


@dataclass
class FaultReport:
    case: str

    def record(
        self, emulator: EmulatorServer, *, duplicates: int, losses: int, note: str = ""
    ) -> None:
        """Add this case's figures to the table printed at the end of the run."""
        stats = emulator.stats()
        ROWS.append(
            {
                "case": self.case,
                "faults": sum(stats["faults"].values()),
                "requests": sum(stats["requests"].values()),
                "duplicates": duplicates,
                "losses": losses,
                "note": note,
            }
        )


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> FaultReport:
    return FaultReport(request.node.name)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    tr = terminalreporter
    tr.section("fault suite")
    tr.write_line(f"{'case':<58} {'faults':>6} {'requests':>8} {'dups':>5} {'losses':>6}")
    for row in ROWS:
        tr.write_line(
            f"{row['case'][:58]:<58} {row['faults']:>6} {row['requests']:>8} "
            f"{row['duplicates']:>5} {row['losses']:>6}  {row['note']}"
        )
    total = collections.Counter()
    for row in ROWS:
        total.update({k: row[k] for k in ("faults", "requests", "duplicates", "losses")})
    tr.write_line(
        f"{f'{len(ROWS)} cases':<58} {total['faults']:>6} {total['requests']:>8} "
        f"{total['duplicates']:>5} {total['losses']:>6}"
    )


def pairs(emulator: EmulatorServer) -> collections.Counter[tuple[str, tuple[str, ...]]]:
    """The library as (content hash, folder tags) pairs, with how often each occurs."""
    return collections.Counter(
        (a["sha256"], tuple(t for t in a["tags"] if not t.startswith("sha256:")))
        for a in emulator.assets()
    )


@dataclass
class DaemonProcess:
    """`syncd run` as a real process, with its own config, state and log file."""

    config: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> DaemonProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Another syncd command against the same config (status, retry, ...)."""
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **self.env},
            check=False,
        )

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def log_lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


@pytest.fixture
def daemon_process(tmp_path: Path, emulator: EmulatorServer) -> Iterator[Any]:
    """Make (and at teardown stop) daemon processes; keyword arguments shape the config."""
    made: list[DaemonProcess] = []

    def make(folders: list[Path], **options: Any) -> DaemonProcess:
        conf = tmp_path / f"syncd{len(made)}.toml"
        env = options.pop("env", {})
        conf.write_text(config_text(emulator.base_url, folders, tmp_path / "state.db", **options))
        proc = DaemonProcess(conf, tmp_path / f"daemon{len(made)}.log", env)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        if proc.alive():
            proc.kill()


__all__ = ["DaemonProcess", "FaultReport", "pairs", "wait_until"]
