"""Fixtures shared by every test tree."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.emulator import EmulatorServer
from tests.running import Launcher


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
