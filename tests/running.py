"""A syncd running in this process (real watcher, real SQLite, real HTTP) against the emulator.

The ``hot`` and ``start_daemon`` fixtures live here so that the integration and the fault
suites share one launcher; each of their conftests imports them.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from syncd.api import AssetsClient
from syncd.config import Config, load, require_api_key
from syncd.daemon import Daemon, Timers
from syncd.emulator import EmulatorServer
from tests.support import config_text, wait_until


def fast_timers() -> Timers:
    """Short periods, so heartbeats and key probes happen within a test's patience.

    A new one for every daemon: the daemon keeps the time of its last key probe in it.
    """
    return Timers(tick=0.05, heartbeat=0.5, key_probe=0.3)


@dataclass
class Running:
    """A daemon running on a thread, with helpers to look at what the emulator holds."""

    daemon: Daemon
    emulator: EmulatorServer
    hot: Path
    config: Config
    config_path: Path
    thread: threading.Thread
    stopped: bool = False

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
        return self.daemon.ctx.admin.outstanding() == 0 and self.daemon.busy == 0

    def alive(self) -> bool:
        """The main loop and every worker thread still running: no fault may end them."""
        return self.thread.is_alive() and all(t.is_alive() for t in self.daemon.threads)

    def jobs(self, where: str = "1", params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        assert self.daemon.store is not None
        return self.daemon.store.query(f"SELECT * FROM jobs WHERE {where}", params)

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self.daemon.request_stop()
            self.thread.join(15)
            self.daemon.stop()


class Launcher:
    """Starts daemons on ``hot`` (each with a config file of its own); ``close`` stops them.

    Keyword arguments of a start shape the config (see :func:`tests.support.config_text`);
    ``folders`` replaces ``[hot]``, ``transport`` puts an httpx transport under the client,
    ``max_watches`` caps the inotify watches and ``timers`` replaces :func:`fast_timers`.
    """

    def __init__(self, tmp_path: Path, emulator: EmulatorServer, hot: Path) -> None:
        self.tmp_path = tmp_path
        self.emulator = emulator
        self.hot = hot
        self.running: list[Running] = []

    def __call__(
        self,
        *,
        folders: Sequence[Path] = (),
        transport: httpx.BaseTransport | None = None,
        max_watches: int | None = None,
        timers: Timers | None = None,
        mountinfo: Path | None = None,
        **options: Any,
    ) -> Running:
        roots = list(folders) or [self.hot]
        config_path = self.write_config(roots, **options)
        config = load(config_path)
        daemon = Daemon(
            config,
            client=_client(config, transport),
            timers=timers or fast_timers(),
            max_watches=max_watches,
            **({"mountinfo": mountinfo} if mountinfo else {}),
        )
        daemon.start()
        thread = threading.Thread(target=daemon.run_forever, name="test-daemon", daemon=True)
        thread.start()
        run = Running(daemon, self.emulator, self.hot, config, config_path, thread)
        self.running.append(run)
        first = roots[0]
        wait_until(
            lambda: first.as_posix() in daemon.watchers or not first.exists(),
            10,
            message="watcher started",
        )
        return run

    def write_config(self, folders: Sequence[Path], **options: Any) -> Path:
        """The config file, readable by its owner only, as the key may be inline."""
        path = self.tmp_path / f"syncd{len(self.running)}.toml"
        state = self.tmp_path / "state.db"
        path.write_text(config_text(self.emulator.base_url, folders, state, **options))
        path.chmod(0o600)
        return path

    def close(self) -> None:
        for run in self.running:
            run.stop()


def _client(config: Config, transport: httpx.BaseTransport | None) -> AssetsClient | None:
    """The client the daemon would build for itself, over ``transport`` when one is given."""
    if transport is None:
        return None
    return AssetsClient(
        config.api.base_url,
        require_api_key(config),
        timeout=config.api.timeout_seconds,
        transport=transport,
    )
