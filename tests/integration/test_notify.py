"""The sd_notify client against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from syncd.notify import MAX_STATUS_CHARS, Notifier

RECV_TIMEOUT = 5.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket in tmp_path, as systemd's notify socket would be."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(RECV_TIMEOUT)
    yield sock, str(path)
    sock.close()


def receive(sock: socket.socket) -> list[str]:
    """One datagram, split into its assignment lines."""
    return sock.recv(65536).decode("utf-8").splitlines()


def test_messages_arrive_in_order(listener: tuple[socket.socket, str]) -> None:
    """READY=1 with its status, a later status, then STOPPING=1 arrive as sent."""
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    notifier.ready("watching 2 folders")
    notifier.status("uploading 3 files")
    notifier.stopping()
    notifier.close()
    assert receive(sock) == ["READY=1", "STATUS=watching 2 folders"]
    assert receive(sock) == ["STATUS=uploading 3 files"]
    assert receive(sock) == ["STOPPING=1"]


def test_watchdog_ping(listener: tuple[socket.socket, str]) -> None:
    """watchdog() sends exactly WATCHDOG=1."""
    sock, path = listener
    with Notifier.from_env({"NOTIFY_SOCKET": path}) as notifier:
        notifier.watchdog()
    assert receive(sock) == ["WATCHDOG=1"]


def test_abstract_socket_name() -> None:
    """An @name in NOTIFY_SOCKET reaches the abstract-namespace socket of that name."""
    name = f"syncd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(RECV_TIMEOUT)
    try:
        with Notifier.from_env({"NOTIFY_SOCKET": f"@{name}"}) as notifier:
            assert notifier.enabled
            notifier.ready()
        assert receive(sock) == ["READY=1"]
    finally:
        sock.close()


def test_status_newline_cannot_inject(listener: tuple[socket.socket, str]) -> None:
    """A newline in a status text cannot add a READY=1 (or any) assignment of its own."""
    sock, path = listener
    with Notifier.from_env({"NOTIFY_SOCKET": path}) as notifier:
        notifier.status("scan of /srv/a\nREADY=1\r\nWATCHDOG=1\x00x")
    lines = receive(sock)
    assert len(lines) == 1
    assert lines[0].startswith("STATUS=scan of /srv/a")
    assert "READY=1" not in lines


def test_long_status_is_cut(listener: tuple[socket.socket, str]) -> None:
    """A status longer than the limit is shortened, not dropped by the receiver."""
    sock, path = listener
    with Notifier.from_env({"NOTIFY_SOCKET": path}) as notifier:
        notifier.status("x" * 100_000)
    (line,) = receive(sock)
    assert line.startswith("STATUS=xxx")
    assert len(line) == len("STATUS=") + MAX_STATUS_CHARS


def test_undecodable_status_still_sent(listener: tuple[socket.socket, str]) -> None:
    """A path with undecodable bytes (a lone surrogate) in the status does not break sending."""
    sock, path = listener
    with Notifier.from_env({"NOTIFY_SOCKET": path}) as notifier:
        notifier.status(os.fsdecode(b"bad-\xff.jpg"))
    (line,) = receive(sock)
    assert line.startswith("STATUS=bad-")


def test_watchdog_interval_is_half_the_timeout(listener: tuple[socket.socket, str]) -> None:
    """WATCHDOG_USEC=60s asks for a ping every 30 s; a matching WATCHDOG_PID keeps it."""
    _, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "60000000"}
    assert Notifier.from_env(env).watchdog_interval() == 30.0
    env["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier.from_env(env).watchdog_interval() == 30.0


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"},
    ],
    ids=["not-asked", "zero", "garbage", "other-pid"],
)
def test_watchdog_interval_none(listener: tuple[socket.socket, str], extra: dict[str, str]) -> None:
    """No interval when no watchdog is asked for, the value is bad, or it is another PID's."""
    _, path = listener
    assert Notifier.from_env({"NOTIFY_SOCKET": path, **extra}).watchdog_interval() is None


def test_unset_env_is_noop() -> None:
    """Without NOTIFY_SOCKET the notifier is disabled and every call is a harmless no-op."""
    notifier = Notifier.from_env({"WATCHDOG_USEC": "60000000"})
    assert not notifier.enabled
    assert notifier.watchdog_interval() is None
    notifier.ready("x")
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()
    notifier.close()


def test_from_env_defaults_to_process_environment(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """from_env() without a mapping reads os.environ, as the daemon calls it."""
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    with Notifier.from_env() as notifier:
        notifier.ready()
    assert receive(sock) == ["READY=1"]


def test_vanished_socket_does_not_raise(listener: tuple[socket.socket, str]) -> None:
    """When the socket goes away, sends fail silently after a single warning."""
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    notifier.ready()
    assert receive(sock) == ["READY=1"]
    sock.close()
    Path(path).unlink()
    with capture_logs() as logs, notifier:
        notifier.watchdog()
        notifier.status("still here")
        notifier.stopping()
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["notify.failed"]
    assert "FileNotFoundError" in warnings[0]["error"]


def test_socket_that_never_existed(tmp_path: Path) -> None:
    """A NOTIFY_SOCKET path with nothing bound there does not raise."""
    with Notifier.from_env({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")}) as notifier:
        assert notifier.enabled
        notifier.ready("x")
        notifier.watchdog()


def test_unsupported_address_disables() -> None:
    """A relative or foreign NOTIFY_SOCKET form disables the notifier instead of failing."""
    with capture_logs() as logs:
        notifier = Notifier.from_env({"NOTIFY_SOCKET": "vsock:2:1234"})
    assert not notifier.enabled
    notifier.ready()
    assert [e["event"] for e in logs] == ["notify.unsupported_socket"]


def test_close_stops_sending(listener: tuple[socket.socket, str]) -> None:
    """After close() nothing more is sent, and close() may be called twice."""
    sock, path = listener
    notifier = Notifier.from_env({"NOTIFY_SOCKET": path})
    notifier.close()
    notifier.close()
    notifier.ready()
    assert not notifier.enabled
    sock.setblocking(False)
    with pytest.raises(BlockingIOError):
        sock.recv(65536)
