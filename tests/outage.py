"""Measure how long after an outage's end the first upload lands (test and benchmark share it)."""

from __future__ import annotations

import time
from pathlib import Path

from syncd.emulator import EmulatorServer, Faults
from tests.running import Running
from tests.support import wait_until, write_image


def api_back_to_first_upload(
    run: Running, emulator: EmulatorServer, hot: Path, outage: float, files: int = 5
) -> float:
    """Take the API down, drop files, keep it down ``outage`` s, bring it back: seconds to
    the first upload after that."""
    wait_until(run.daemon.indexed.is_set, 10, message="the library indexed")
    before = len(emulator.assets())
    emulator.set_faults(Faults(down=True))
    down_at = time.monotonic()
    for i in range(files):
        write_image(hot / f"outage{i}.jpg", 9000 + i)
    wait_until(lambda: len(run.jobs("kind = 'upload'")) >= files, 30, message="uploads queued")
    time.sleep(max(0.0, down_at + outage - time.monotonic()))  # the outage itself
    emulator.set_faults(Faults())
    back = time.monotonic()
    wait_until(lambda: len(emulator.assets()) > before, 600, 0.02, "the first upload")
    return time.monotonic() - back
