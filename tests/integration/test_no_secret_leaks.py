"""The API key never shows: not in a log line, a status, a check, an error or a traceback.

Each test runs syncd with a distinctive key through the paths where a key could slip
out (uploads, a rejected key, a server that echoes the key back, a crash in the middle of
a request) and looks for the key in everything that was written: the daemon's log, the
output of every command, and (for the in-process runs) the captured stdout and stderr.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd import cli as syncd_cli
from syncd.api import AssetsClient
from syncd.config import require_api_key
from syncd.daemon import Daemon, Timers
from syncd.emulator import EmulatorServer
from syncd.notify import Notifier
from tests.integration.conftest import Cli, wait_for_log
from tests.support import config_text, wait_until, write_image

SECRET = "sk-LEAKCANARY-4f9c2e7a1b8d6053"


@pytest.fixture
def api_key() -> str:
    """The emulator accepts the distinctive key (overrides the shared fixture)."""
    return SECRET


def write_config(
    tmp_path: Path,
    base_url: str,
    hot: Path,
    *,
    fmt: str = "json",
    name: str = "syncd.toml",
    state: str = "state.db",
) -> Path:
    """The key both in a key file and inline, so every way of reading it is exercised."""
    key_file = tmp_path / "api_key"
    key_file.write_text(SECRET + "\n")
    key_file.chmod(0o600)
    text = config_text(base_url, [hot], tmp_path / state, api_key=SECRET,
                       extra_api=f'api_key_file = "{key_file}"')  # fmt: skip
    conf = tmp_path / name
    conf.write_text(text.replace('format = "json"', f'format = "{fmt}"'))
    conf.chmod(0o600)
    return conf


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text
        assert SECRET[-12:] not in text  # not even a tail of it


def test_daemon_and_commands_never_print_the_key(
    cli: Cli, emulator: EmulatorServer, hot: Path, tmp_path: Path
) -> None:
    """Uploads, a revoked key (401), status, check, sync, retry, approve-deletes: no key."""
    conf = write_config(tmp_path, emulator.base_url, hot)
    log = tmp_path / "daemon.log"
    proc = cli.start("run", "-c", conf, log=log)
    write_image(hot / "a" / "one.jpg", 1)
    write_image(hot / "two.jpg", 2)
    wait_until(lambda: len(emulator.assets()) == 2, 30, message="two uploads")
    assert cli("status", "-c", conf).returncode == 0
    assert cli("check", "-c", conf).returncode == 0

    emulator.set_api_key("a-rotated-key")
    write_image(hot / "three.jpg", 3)
    wait_until(lambda: json.loads(cli("status", "-c", conf, "--json").stdout)["api_key"]
               ["rejected"], 30, message="status to show the key rejected")  # fmt: skip
    wait_for_log(log, "api.key_rejected")
    rejected = cli("check", "-c", conf)
    assert rejected.returncode == 1 and "not accepted" in rejected.stdout
    console_conf = write_config(tmp_path, emulator.base_url, hot, fmt="console",
                                name="console.toml", state="other.db")  # fmt: skip
    assert cli("sync", "-c", console_conf, "--max-wait", "1").returncode == 2  # key rejected
    cli("status", "-c", conf)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    cli("retry", "-c", conf)
    cli("approve-deletes", "-c", conf)

    daemon_log = log.read_text()
    assert "upload.done" in daemon_log and "HTTP 401" in daemon_log
    assert "HTTP 401" in "".join(cli.outputs)  # the console-format sync logged the 401
    assert_no_secret(daemon_log, *cli.outputs)


@pytest.fixture
def run_in_process(tmp_path: Path) -> Iterator[Any]:
    """Run a Daemon in this process as `syncd run` would set it up; stopped at teardown."""
    daemons: list[tuple[Daemon, threading.Thread]] = []

    def start(conf: Path, transport: httpx.BaseTransport | None = None) -> Daemon:
        config = syncd_cli.load_config(conf)  # logging and the secret, as the CLI does
        client = AssetsClient(config.api.base_url, require_api_key(config).reveal,
                              timeout=5, transport=transport)  # fmt: skip
        daemon = Daemon(config, client=client, notifier=Notifier(None),
                        timers=Timers(tick=0.05, heartbeat=0.5, key_probe=0.3))  # fmt: skip
        daemon.start()
        thread = threading.Thread(target=daemon.run_forever, name="leak-test", daemon=True)
        thread.start()
        daemons.append((daemon, thread))
        return daemon

    yield start
    for daemon, thread in daemons:
        daemon.request_stop()
        thread.join(15)
        daemon.stop()


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_crash_holding_the_key_is_logged_without_it(
    run_in_process: Any, hot: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str], fmt: str
) -> None:
    """An unexpected exception whose message holds the Authorization header: key masked."""

    def explode(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":  # the library index at start: an empty library
            return httpx.Response(200, json={"assets": [], "total": 0, "has_more": False})
        raise RuntimeError(f"transport exploded holding {request.headers['Authorization']}")

    conf = write_config(tmp_path, "http://127.0.0.1:9", hot, fmt=fmt)
    daemon = run_in_process(conf, httpx.MockTransport(explode))
    write_image(hot / "a.jpg", 1)
    store = daemon.store
    assert store is not None
    wait_until(lambda: store.query("SELECT 1 FROM jobs WHERE reason LIKE 'internal error%'"),
               20, message="the crash to be recorded")  # fmt: skip
    out, err = capfd.readouterr()
    assert "job.crashed" in err and "transport exploded holding Bearer" in err
    assert_no_secret(out, err)


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with an error that quotes the Authorization header back."""

    status = 401

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.dumps(
            {"error": {"code": "echo", "message": f"you sent {self.headers.get('Authorization')}"}}
        ).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_DELETE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads stderr."""


@pytest.fixture
def echo_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """A real HTTP server on loopback answering ``request.param`` with the key quoted back."""
    handler = type("Echo", (_Echo,), {"status": request.param})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.mark.parametrize("echo_server", [401, 422], indirect=True)
def test_a_server_echoing_the_key_never_gets_it_printed(
    run_in_process: Any,
    echo_server: str,
    cli: Cli,
    hot: Path,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A 401 or 422 that quotes the key: the log, status and check show it masked."""
    conf = write_config(tmp_path, echo_server, hot)
    daemon = run_in_process(conf)
    write_image(hot / "a.jpg", 1)
    store = daemon.store
    assert store is not None
    wait_until(lambda: store.get_meta("auth_rejected_since")
               or store.query("SELECT 1 FROM jobs WHERE state = 'failed'"), 20,
               message="the upload to be refused")  # fmt: skip
    shown = [cli("status", "-c", conf), cli("status", "-c", conf, "--json"),
             cli("check", "-c", conf)]  # fmt: skip
    assert all(r.returncode in (0, 1) for r in shown)
    out, err = capfd.readouterr()
    everything = "".join([out, err, *cli.outputs])
    assert "you sent Bearer ********" in everything
    assert_no_secret(everything)
