"""The fault suite's shared parts: the figures table, what the library must hold, and the
daemon either in this process (``start_daemon``, from ``tests/conftest.py``) or as a real
``syncd run`` process (``daemon_process``).

Every fault test records one row (case, faults injected, requests, duplicates, losses)
with the ``fault_report`` fixture; the session ends by printing the table.
"""

from __future__ import annotations

import collections
import hashlib
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

from syncd.emulator import OTHER_CLIENT_TAG, EmulatorServer
from tests.running import Running
from tests.support import FAULT_ROW, config_text, wait_until, write_image

POSTS = "POST /v1/training-asset"
DELETES = "DELETE /v1/assets/{id}"

#: What the library holds for one image: its content hash and its folder tags.
Pair = tuple[str, tuple[str, ...]]


@dataclass
class FaultReport:
    case: str
    node: pytest.Item

    def record(
        self, emulator: EmulatorServer, *, duplicates: int, losses: int, note: str = ""
    ) -> None:
        """Add this case's figures to the table printed at the end of the run."""
        stats = emulator.stats()
        # Carried on the test's report, so the table is whole under pytest-xdist too
        # (``tests/conftest.py`` collects and prints it).
        self.node.user_properties.append(
            (
                FAULT_ROW,
                {
                    "case": self.case,
                    "faults": sum(stats["faults"].values()),
                    "requests": sum(stats["requests"].values()),
                    "duplicates": duplicates,
                    "losses": losses,
                    "note": note,
                },
            )
        )

    def check(self, emulator: EmulatorServer, want: set[Pair], note: str) -> None:
        """Record the library's figures against ``want``: none lost, doubled or extra."""
        got = pairs(emulator)
        duplicates = sum(n - 1 for n in got.values() if n > 1)
        losses, extras = len(want - set(got)), len(set(got) - want)
        self.record(emulator, duplicates=duplicates, losses=losses, note=note)
        assert (duplicates, losses, extras) == (0, 0, 0)


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> FaultReport:
    assert isinstance(request.node, pytest.Item)
    return FaultReport(request.node.name, request.node)


# --- what the library must hold ---------------------------------------------------------


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pairs(emulator: EmulatorServer) -> collections.Counter[Pair]:
    """The library as (content hash, folder tags) pairs, with how often each occurs.

    Assets another client added (the emulator's churn, tagged ``other-client``) are not
    syncd's and are left out.
    """
    return collections.Counter(
        (a["sha256"], tuple(t for t in a["tags"] if not t.startswith("sha256:")))
        for a in emulator.assets()
        if OTHER_CLIENT_TAG not in a["tags"]
    )


def disk_pairs(hot: Path) -> set[Pair]:
    """One (content hash, folder tags) pair per distinct pair of the images on disk."""
    found = set()
    for path in hot.rglob("*.jpg"):
        rel = path.relative_to(hot)
        found.add((sha(path.read_bytes()), ("studio", *rel.parts[:-1])))
    return found


def make_files(hot: Path, count: int, *, first_seed: int) -> None:
    """``count`` new images spread over three tag folders; the seed names and makes each."""
    folders = ("", "red", "blue/dark")
    for i in range(count):
        seed = first_seed + i
        write_image(hot / folders[i % len(folders)] / f"p{seed:04d}.jpg", seed)


def converge(run: Running, want: set[Pair], timeout: float = 30.0) -> None:
    """Wait until the library holds exactly the wanted pairs and nothing is left to do."""
    wait_until(
        lambda: set(pairs(run.emulator)) == want and run.idle(),
        timeout,
        message=f"exactly {len(want)} (content, tags) pairs and an idle queue",
    )


def finish(run: Running, report: FaultReport, want: set[Pair], note: str) -> None:
    """The invariants every in-process case ends on, and its row in the figures table."""
    assert run.alive(), "the daemon must go on"
    report.check(run.emulator, want, note)


# --- syncd as a real process -------------------------------------------------------------


def syncd(
    config: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """A syncd command against ``config`` (status, retry, ...), as an operator types it."""
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def status_json(config: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """What ``syncd status --json`` says, from another process, as an operator sees it."""
    result = syncd(config, "status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    status: dict[str, Any] = json.loads(result.stdout)
    return status


@dataclass
class DaemonProcess:
    """`syncd run` as a real process, with its own config, state and log file."""

    config: Path
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        """How the daemon is started; a subclass starts it another way."""
        return [sys.executable, "-m", "syncd", "run", "-c", str(self.config)]

    def start(self) -> DaemonProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.argv(),
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

    def status(self) -> dict[str, Any]:
        return status_json(self.config, self.env)

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
    """Make (and at teardown kill) daemon processes; keyword arguments shape the config.

    ``kind`` is the :class:`DaemonProcess` subclass to make, ``env`` its extra environment.
    """
    made: list[DaemonProcess] = []

    def make(
        folders: list[Path],
        *,
        kind: type[DaemonProcess] = DaemonProcess,
        env: dict[str, str] | None = None,
        **options: Any,
    ) -> DaemonProcess:
        conf = tmp_path / f"syncd{len(made)}.toml"
        conf.write_text(config_text(emulator.base_url, folders, tmp_path / "state.db", **options))
        conf.chmod(0o600)  # it holds the key: a config open to others does not load
        proc = kind(conf, tmp_path / f"daemon{len(made)}.log", env or {})
        made.append(proc)
        return proc

    yield make
    for proc in made:
        if proc.alive():
            proc.kill()


__all__ = [
    "DELETES",
    "POSTS",
    "DaemonProcess",
    "FaultReport",
    "Pair",
    "converge",
    "disk_pairs",
    "finish",
    "make_files",
    "pairs",
    "sha",
    "status_json",
    "syncd",
]
