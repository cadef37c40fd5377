"""Measure how long after an outage's end the first upload lands (test and benchmark share it).

The outage is the API's process gone: the emulator stops listening (connections are
refused), then a new one is started on the same port over the same library.
"""

from __future__ import annotations

import time
from pathlib import Path

from syncd.emulator import EmulatorServer
from tests.running import Running
from tests.support import wait_until, write_image


def api_back_to_first_upload(
    run: Running, emulator: EmulatorServer, hot: Path, outage: float, files: int = 5
) -> tuple[float, EmulatorServer]:
    """Stop the API, drop files, keep it away ``outage`` s, start it again: seconds from
    its return to the first upload, and the emulator now serving (stop it when done)."""
    wait_until(run.daemon.indexed.is_set, 10, message="the library indexed")
    before = len(emulator.assets())
    port, data = emulator.port, emulator.data_dir
    emulator.stop()
    down_at = time.monotonic()
    for i in range(files):
        write_image(hot / f"outage{i}.jpg", 9000 + i)
    wait_until(lambda: len(run.jobs("kind = 'upload'")) >= files, 30, message="uploads queued")
    time.sleep(max(0.0, down_at + outage - time.monotonic()))  # the outage itself
    back = EmulatorServer(data, api_key="test-key", port=port)
    back.start()
    started = time.monotonic()
    wait_until(lambda: len(back.assets()) > before, 600, 0.02, "the first upload")
    return time.monotonic() - started, back
