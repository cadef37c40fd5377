"""Readiness, status and watchdog pings for systemd ``Type=notify`` services.

The protocol is one datagram of ``KEY=VALUE`` lines sent to the unix socket named in
``$NOTIFY_SOCKET``; a few lines over :mod:`socket` do it, so libsystemd is not needed.
Outside systemd (no ``$NOTIFY_SOCKET``) every call is a no-op, which lets the daemon
call the notifier unconditionally.

Telling systemd how things are must never take the daemon down: a socket that went
away (systemd re-executing, a test harness gone) is logged once and otherwise
ignored, and every method here swallows its errors.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Mapping

import structlog

log = structlog.get_logger(__name__)

# systemd drops a notification datagram larger than its receive buffer (4 KiB), so a
# long status is cut well below that rather than lost whole.
MAX_STATUS_CHARS = 1024
# A send blocks only if systemd stops reading; a pinging thread must not hang on it.
SEND_TIMEOUT_SECONDS = 2.0
# Each line of the datagram is one assignment: a newline (or any other control
# character) inside a value would start a forged one, e.g. "READY=1".
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class Notifier:
    """Speaks sd_notify to the service manager, or does nothing when there is none.

    Thread-safe: the watchdog pinger and the status reporter may be different threads.
    """

    def __init__(
        self,
        address: bytes | None,
        *,
        watchdog_usec: str | None = None,
        watchdog_pid: str | None = None,
    ) -> None:
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` (default: os.environ).

        Tests pass a mapping; the daemon passes nothing.
        """
        env = os.environ if env is None else env
        address = _parse_address(env.get("NOTIFY_SOCKET", ""))
        return cls(
            address,
            watchdog_usec=env.get("WATCHDOG_USEC"),
            watchdog_pid=env.get("WATCHDOG_PID"),
        )

    @property
    def enabled(self) -> bool:
        """True while there is a service manager to talk to."""
        return self._address is not None and not self._closed

    def ready(self, status: str | None = None) -> None:
        """Start-up is complete: systemd moves the unit to "active" and arms its watchdog."""
        lines = ["READY=1"]
        if status is not None:
            lines.append(_status_line(status))
        self._send(lines)

    def status(self, text: str) -> None:
        """One line for ``systemctl status``: what the daemon is doing now."""
        self._send([_status_line(text)])

    def watchdog(self) -> None:
        """Keep-alive ping; systemd kills the service if these stop coming."""
        self._send(["WATCHDOG=1"])

    def stopping(self) -> None:
        """Shutdown has begun, so systemd reports "deactivating" instead of a hang."""
        self._send(["STOPPING=1"])

    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half the timeout, as systemd advises), or None if not asked.

        ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for; a child
        that inherited the environment must not ping on its parent's behalf.
        """
        if not self.enabled or self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid.strip() != str(os.getpid()):
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    def close(self) -> None:
        """Release the socket; later calls are no-ops."""
        with self._lock:
            self._closed = True
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _send(self, lines: list[str]) -> None:
        if not self.enabled:
            return
        payload = "\n".join(lines).encode("utf-8", errors="replace") + b"\n"
        with self._lock:
            if self._closed or self._address is None:
                return
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                    self._sock.settimeout(SEND_TIMEOUT_SECONDS)
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                self._warn_once(exc)

    def _warn_once(self, exc: OSError) -> None:
        """The first failure is worth a warning; repeating it every ping is noise."""
        if self._warned:
            return
        self._warned = True
        log.warning(
            "notify.failed",
            socket=os.fsdecode(self._address or b""),
            error=f"{type(exc).__name__}: {exc}",
        )


def _parse_address(value: str) -> bytes | None:
    """``/path`` or ``@abstract`` (a leading NUL on the wire); anything else is unusable."""
    if value.startswith("/"):
        return os.fsencode(value)
    if value.startswith("@") and len(value) > 1:
        return b"\0" + os.fsencode(value[1:])
    if value:
        log.warning("notify.unsupported_socket", socket=value)
    return None


def _status_line(text: str) -> str:
    flat = _CONTROL.sub(" ", text)
    if len(flat) > MAX_STATUS_CHARS:
        flat = flat[: MAX_STATUS_CHARS - 1] + "…"
    return f"STATUS={flat}"
