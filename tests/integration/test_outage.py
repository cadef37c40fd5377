"""Outages end for syncd within seconds of the API answering again, and status says why."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from syncd.emulator import EmulatorServer, Faults
from tests.outage import api_back_to_first_upload
from tests.running import Launcher
from tests.support import wait_until, write_image

GOAL = 10.0


def test_uploads_resume_within_seconds_of_a_15s_outage(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """API process back after 15 s away: the first upload follows within 10 s."""
    run = start_daemon()
    took, back = api_back_to_first_upload(run, emulator, hot, outage=15.0)
    try:
        print(f"\noutage 15 s: API back -> first upload {took:.2f} s (goal <= {GOAL:.0f} s)")
        assert took <= GOAL, f"{took:.1f} s from the API's return to the first upload"
        wait_until(lambda: len(back.assets()) == 5 and run.idle(), 30, message="all five")
    finally:
        back.stop()


def test_status_says_the_api_is_unreachable_and_when_the_next_probe_is(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """While the breaker is open, status names the outage's start, next probe and last error."""
    run = start_daemon()
    wait_until(run.daemon.indexed.is_set, 10, message="the library indexed")
    emulator.set_faults(Faults(down=True))
    for i in range(6):
        write_image(hot / f"o{i}.jpg", 300 + i)
    argv = [sys.executable, "-m", "syncd", "status", "-c", str(run.config_path)]

    def status() -> dict[str, object]:
        out = subprocess.run([*argv, "--json"], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)["api"]  # type: ignore[no-any-return]

    api = wait_until(lambda: (a := status()) and not a["reachable"] and a, 30, 0.2, "outage")
    assert api["unreachable_since"] and api["last_error"]
    assert 0 <= float(api["next_probe_in_seconds"]) <= 5  # type: ignore[arg-type]
    text = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert "unreachable since" in text and "next probe in" in text and "last error" in text
    emulator.set_faults(Faults())
    wait_until(lambda: status()["reachable"], 20, 0.2, "the outage to be over in status")
    run.wait_assets(6, timeout=30)


def test_an_open_circuit_sends_one_probe_at_a_time(
    start_daemon: Launcher, emulator: EmulatorServer, hot: Path
) -> None:
    """With four workers and the API down, one probe goes out at a time, every few seconds."""
    run = start_daemon(concurrency=4)
    wait_until(run.daemon.indexed.is_set, 10, message="the library indexed")
    emulator.set_faults(Faults(down=True, latency=0.3))
    for i in range(8):
        write_image(hot / f"p{i}.jpg", 500 + i)
    assert run.daemon.ctx is not None
    breaker = run.daemon.ctx.breaker
    wait_until(lambda: breaker.is_open, 30, message="the circuit to open")
    time.sleep(4.0)  # calls already in flight when it opened finish their own tries
    before = sum(emulator.stats()["requests"].values())
    time.sleep(8.0)  # the open circuit, counted
    during = sum(emulator.stats()["requests"].values()) - before
    emulator.set_faults(Faults())
    # Probes 4-5 s apart by now, one request each: never one per worker, never a burst.
    assert 1 <= during <= 3, f"{during} requests in 8 s of open circuit"
    run.wait_assets(8, timeout=30)
