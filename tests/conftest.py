"""Fixtures shared by every test tree."""

from __future__ import annotations

import collections
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from syncd.emulator import EmulatorServer
from tests.running import Launcher
from tests.support import FAULT_ROW

_ROWS: list[dict[str, Any]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Gather the fault suite's rows as reports arrive (from this process or a worker)."""
    if report.when == "call":
        _ROWS.extend(value for name, value in report.user_properties if name == FAULT_ROW)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fault suite's table: faults injected, requests, duplicates and losses per case."""
    if not _ROWS:
        return
    tr = terminalreporter
    tr.section("fault suite")
    tr.write_line(f"{'case':<58} {'faults':>6} {'requests':>8} {'dups':>5} {'losses':>6}")
    for row in sorted(_ROWS, key=lambda row: row["case"]):
        tr.write_line(
            f"{row['case'][:58]:<58} {row['faults']:>6} {row['requests']:>8} "
            f"{row['duplicates']:>5} {row['losses']:>6}  {row['note']}"
        )
    total: collections.Counter[str] = collections.Counter()
    for row in _ROWS:
        total.update({k: row[k] for k in ("faults", "requests", "duplicates", "losses")})
    tr.write_line(
        f"{f'{len(_ROWS)} cases':<58} {total['faults']:>6} {total['requests']:>8} "
        f"{total['duplicates']:>5} {total['losses']:>6}"
    )


@pytest.fixture
def api_key() -> str:
    """The key the ``emulator`` fixture accepts."""
    return "test-key"


@pytest.fixture
def emulator(tmp_path: Path, api_key: str) -> Iterator[EmulatorServer]:
    """A running Assets API emulator on a free loopback port, with its own data dir."""
    server = EmulatorServer(tmp_path / "emulator", api_key=api_key)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts from structlog's defaults, whatever an earlier test configured."""
    yield
    from syncd import log

    log.reset()


@pytest.fixture
def hot(tmp_path: Path) -> Path:
    """The hot folder the daemons watch: empty, under the test's own temporary directory."""
    path = tmp_path / "hot"
    path.mkdir()
    return path


@pytest.fixture
def start_daemon(tmp_path: Path, emulator: EmulatorServer, hot: Path) -> Iterator[Launcher]:
    """Start (and at teardown stop) daemons on ``hot``; keyword arguments shape the config."""
    launcher = Launcher(tmp_path, emulator, hot)
    yield launcher
    launcher.close()


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A temp folder an unprivileged user can reach (pytest's tmp_path is 0700)."""
    parent = "/tmp" if Path("/tmp").is_dir() else None  # TMPDIR may sit below a 0700 home
    base = Path(tempfile.mkdtemp(prefix="syncd-test-", dir=parent))
    base.chmod(0o755)
    yield base
    for path in [base, *base.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(base)
