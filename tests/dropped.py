"""A syncd daemon run as another (unprivileged) user, for the trust-boundary tests.

The suite runs as root, and root ignores permission bits; the interpreter's own files
may be out of an unprivileged user's reach. So this child imports everything it will
need first (httpx's transport and Pillow's plugins are loaded lazily), then drops to the
daemon user and its groups, then runs the real daemon until SIGTERM.

Usage: ``python -m tests.dropped CONFIG UID GID [GROUP ...]``
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _preload() -> None:
    """Import now what the daemon would import lazily later (from a folder it cannot read)."""
    import encodings.idna  # noqa: F401 - httpx encodes host names
    import json  # noqa: F401

    import httpx
    from PIL import Image

    import syncd.cli
    import syncd.daemon
    import syncd.imaging  # noqa: F401

    httpx.Client().close()
    Image.init()
    from watchdog.observers import inotify, inotify_c, polling  # noqa: F401


def drop(uid: int, gid: int, groups: list[int]) -> None:
    """Become ``uid`` with primary ``gid`` and exactly ``groups`` as supplementary groups."""
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def main(argv: list[str]) -> int:
    config_path, uid, gid, *groups = argv
    _preload()
    from syncd import log
    from syncd.config import load
    from syncd.daemon import Daemon, Timers

    config = load(Path(config_path))  # read as root: the key is root's to give
    log.configure(config.log.level, config.log.format)
    drop(int(uid), int(gid), [int(g) for g in groups])
    daemon = Daemon(config, timers=Timers(tick=0.05, heartbeat=0.5, key_probe=0.3))
    signal.signal(signal.SIGTERM, lambda *_: daemon.request_stop())
    daemon.start()
    try:
        daemon.run_forever()
    finally:
        daemon.stop()
    return 1 if daemon.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
