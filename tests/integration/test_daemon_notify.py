"""`syncd run` speaks sd_notify on a real socket: READY, STATUS, WATCHDOG, STOPPING."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support import config_text, write_image


def receive(sock: socket.socket, until: str, timeout: float = 20.0) -> list[str]:
    """Messages (one string each) until one contains ``until``, or fail at the deadline."""
    messages: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            messages.append(sock.recv(4096).decode())
        except TimeoutError:
            break
        if until in messages[-1]:
            return messages
    raise AssertionError(f"no {until!r} within {timeout}s; got {messages}")


def test_ready_then_status_and_watchdog_then_stopping(tmp_path: Path, emulator) -> None:
    """READY=1 comes first, STATUS and WATCHDOG=1 follow, SIGTERM brings STOPPING=1, exit 0."""
    hot = tmp_path / "hot"
    hot.mkdir()
    write_image(hot / "a.jpg", 1)
    conf = tmp_path / "syncd.toml"
    conf.write_text(config_text(emulator.base_url, [hot], tmp_path / "state.db"))
    conf.chmod(0o600)
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    env = {**os.environ, "NOTIFY_SOCKET": address, "WATCHDOG_USEC": "2000000"}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "run", "-c", str(conf)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    try:
        first = receive(sock, "READY=1")
        assert "READY=1" in first[0], first
        later = receive(sock, "WATCHDOG=1")
        assert any("STATUS=" in m for m in first + later)
        proc.send_signal(signal.SIGTERM)
        receive(sock, "STOPPING=1")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
