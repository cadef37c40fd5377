"""The command line as a user runs it: real subprocesses, a real emulator, real files."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from syncd.emulator import EmulatorServer, Faults
from tests.integration.conftest import Cli, wait_for_log
from tests.support import config_text, wait_until, write_image

STATUS_KEYS = {
    "state_path", "daemon", "jobs", "tracked_files", "assets", "problem_files",
    "held_deletions", "failures", "last_upload", "api_key", "folders",
}  # fmt: skip


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def status_json(cli: Cli, conf: Path) -> dict[str, Any]:
    result = cli("status", "-c", conf, "--json")
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.fixture
def make_config(tmp_path: Path, emulator: EmulatorServer, hot: Path) -> Callable[..., Path]:
    """Writes the CLI's config (``hot``, the emulator), owner-only as it holds the key inline."""

    def make(
        *, base_url: str = emulator.base_url, folders: Sequence[Path] = (hot,), **options: Any
    ) -> Path:
        conf = tmp_path / "syncd.toml"
        conf.write_text(config_text(base_url, folders, tmp_path / "state.db", **options))
        conf.chmod(0o600)
        return conf

    return make


@pytest.fixture
def daemon_log(tmp_path: Path) -> Path:
    return tmp_path / "daemon.log"


@pytest.fixture
def running(cli: Cli, emulator: EmulatorServer, hot: Path, make_config, daemon_log: Path):
    """`syncd run` in a subprocess that has uploaded one file; the config path is yielded."""
    write_image(hot / "shoes" / "a.jpg", 1)
    conf = make_config()
    proc = cli.start("run", "-c", conf, log=daemon_log)
    wait_until(lambda: len(emulator.assets()) == 1, 30, message="the first upload")
    yield conf
    proc.send_signal(signal.SIGTERM)
    proc.wait(15)


# --- status -----------------------------------------------------------------------------


def test_status_json_while_the_daemon_runs(cli: Cli, running: Path) -> None:
    """`status --json` reads the live database: daemon running, upload counted, folder ok."""
    status = wait_until(
        lambda: (s := status_json(cli, running))["daemon"]["running"] and s["assets"] == 1 and s,
        30, message="a running daemon and one asset in status",
    )  # fmt: skip
    assert set(status) >= STATUS_KEYS
    assert status["daemon"]["pid"] == cli.processes[0].pid
    assert status["tracked_files"] == 1 and status["last_upload"] is not None
    assert status["jobs"]["upload"] == {"pending": 0, "uploading": 0, "failed": 0}
    assert status["api_key"] == {"rejected": False, "rejected_since": None}
    assert [f["health"] for f in status["folders"]] == ["ok"]
    assert status["failures"] == {"count": 0, "items": []}


def held_and_failed(
    cli: Cli, emulator: EmulatorServer, hot: Path, make_config: Callable[..., Path]
) -> Path:
    """A state with one failed file and one held deletion, made by two `syncd sync` passes."""
    write_image(hot / "bags" / "keep.jpg", 1)
    write_image(hot / "bags" / "gone.jpg", 2)
    (hot / "broken.jpg").write_text("not an image at all")
    conf = make_config(max_deletes=0)
    first = cli("sync", "-c", conf)
    assert first.returncode == 1, first.stdout  # broken.jpg failed in this pass
    assert "failed: " in first.stdout and "broken.jpg: not an image" in first.stdout
    assert len(emulator.assets()) == 2
    (hot / "bags" / "gone.jpg").unlink()
    second = cli("sync", "-c", conf)
    # The old failure is reported, not held against this pass; the deletion waits for a person.
    assert second.returncode == 0, second.stdout
    assert "1 job(s) failed in an earlier pass" in second.stdout
    assert "1 deletion(s) held" in second.stdout
    return conf


def test_status_shows_failures_and_held_deletions(
    cli: Cli, emulator: EmulatorServer, hot: Path, make_config
) -> None:
    """The human status names the failed file with its reason and the held deletion."""
    conf = held_and_failed(cli, emulator, hot, make_config)
    result = cli("status", "-c", conf)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "not running" in out
    assert "2 tracked files, 2 assets" in out
    assert "1 failed job(s)" in out and "broken.jpg: not an image" in out
    assert "1 deletion(s) held" in out and "gone" in out and "syncd approve-deletes" in out
    data = status_json(cli, conf)
    assert data["failures"]["items"][0]["path"] == "broken.jpg"
    assert data["held_deletions"]["count"] == 1
    assert data["held_deletions"]["items"][0]["name"] == "gone"


def test_retry_and_approve_deletes_act_on_what_status_shows(
    cli: Cli, emulator: EmulatorServer, hot: Path, make_config
) -> None:
    """`retry` re-queues the failed file, `approve-deletes` lets the held deletion go."""
    conf = held_and_failed(cli, emulator, hot, make_config)
    retried = cli("retry", "-c", conf, "broken.jpg")
    assert (retried.returncode, retried.stdout.strip()) == (0, "re-queued 1 failed job(s)")
    approved = cli("approve-deletes", "-c", conf)
    assert (approved.returncode, approved.stdout.strip()) == (0, "approved 1 held deletion(s)")
    assert status_json(cli, conf)["held_deletions"]["count"] == 0
    cli("sync", "-c", conf)
    assert [a["name"] for a in emulator.assets()] == ["keep"]


def test_status_without_a_state_database_exits_3(cli: Cli, make_config) -> None:
    """Before the first run there is nothing to show: exit 3 and say so."""
    conf = make_config()
    result = cli("status", "-c", conf)
    assert result.returncode == 3
    assert "no state database" in result.stderr and "has syncd run yet" in result.stderr


# --- check ------------------------------------------------------------------------------


def test_check_passes_on_a_good_setup(cli: Cli, make_config) -> None:
    """Folder, watches, state, key and API all fine: every line ok, exit 0."""
    conf = make_config()
    result = cli("check", "-c", conf)
    assert result.returncode == 0, result.stdout
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [
        "config", "folders", "mode", "inotify", "kernel", "state", "key", "api",
    ]  # fmt: skip
    assert all(line.startswith("ok") for line in lines)


def test_check_is_happy_while_the_daemon_holds_the_database(cli: Cli, running: Path) -> None:
    """A running syncd holds the lock: check says the database is in use, and passes."""
    result = cli("check", "-c", running)
    assert result.returncode == 0, result.stdout
    assert "in use by a running syncd" in result.stdout


def _missing_folder(tmp_path: Path, make_config: Callable[..., Path]) -> Path:
    return make_config(folders=[tmp_path / "not-mounted"])


def _open_key_file(tmp_path: Path, make_config: Callable[..., Path]) -> Path:
    key = tmp_path / "api_key"
    key.write_text("test-key\n")
    key.chmod(0o644)
    return make_config(extra_api=f'api_key_file = "{key}"')


def _unreachable_api(tmp_path: Path, make_config: Callable[..., Path]) -> Path:
    return make_config(base_url=f"http://127.0.0.1:{closed_port()}")


def _rejected_key(tmp_path: Path, make_config: Callable[..., Path]) -> Path:
    return make_config(api_key="a-revoked-key")


@pytest.mark.parametrize(
    ("setup", "problem", "fix"),
    [
        (_missing_folder, "not-mounted does not exist", "mkdir -p"),
        (_open_key_file, "is open to group or others (mode 0644)", "chmod 600"),
        (_unreachable_api, "cannot reach the API", "check the network"),
        (_rejected_key, "the API key is not accepted", "replace the key"),
    ],
    ids=["missing-folder", "open-key-file", "unreachable-api", "rejected-key"],
)
def test_check_reports_each_broken_setting_with_its_fix(
    cli: Cli,
    tmp_path: Path,
    make_config,
    setup: Any,
    problem: str,
    fix: str,
) -> None:
    """Each broken setting is a PROBLEM line naming it, followed by how to fix it; exit 1."""
    result = cli("check", "-c", setup(tmp_path, make_config))
    assert result.returncode == 1, result.stdout
    lines = result.stdout.splitlines()
    (index,) = [i for i, line in enumerate(lines) if problem in line]
    assert lines[index].startswith("PROBLEM")
    assert "fix:" in lines[index + 1] and fix in lines[index + 1]


@pytest.mark.parametrize(
    ("change", "key", "text"),
    [
        ("open-config", "api.api_key", "chmod 600"),
        ("plain-http", "api.base_url", "unencrypted to api.example.com"),
    ],
)
def test_check_fails_on_a_key_that_would_be_exposed(
    cli: Cli, make_config, change: str, key: str, text: str
) -> None:
    """A config holding the key open to others, or http:// to another machine: exit 2, named."""
    conf = make_config()
    if change == "open-config":
        conf.chmod(0o644)
    else:
        conf.write_text(re.sub(r'base_url = "[^"]*"', 'base_url = "http://api.example.com"',
                               conf.read_text()))  # fmt: skip
    result = cli("check", "-c", conf)
    assert result.returncode == 2, result.stdout
    assert key in result.stderr and text in result.stderr
    assert "test-key" not in result.stderr + result.stdout


def test_check_with_a_bad_config_key_exits_2_naming_it(cli: Cli, make_config) -> None:
    """A typo in the config is the first failed check: exit 2 and the dotted key."""
    conf = make_config(extra_api="concurency = 4")
    result = cli("check", "-c", conf)
    assert result.returncode == 2
    assert "api.concurency" in result.stderr and "did you mean concurrency" in result.stderr


# --- run --------------------------------------------------------------------------------


def test_run_with_a_bad_config_exits_2_naming_the_key(cli: Cli, make_config) -> None:
    """`syncd run` refuses a config with a wrong value: exit 2, the key named, no traceback."""
    conf = make_config(extra_folder="max_deletes = -1")
    conf.write_text(conf.read_text().replace("max_deletes = 50\n", ""))
    result = cli("run", "-c", conf)
    assert result.returncode == 2
    assert "folders[0].max_deletes" in result.stderr
    assert "Traceback" not in result.stderr


def test_sync_stops_on_sigterm_while_the_api_is_down(
    cli: Cli, make_config, emulator: EmulatorServer, hot: Path, daemon_log: Path
) -> None:
    """SIGTERM while `syncd sync` waits out an API outage: exit 1 within 10 s, work kept."""
    write_image(hot / "a.jpg", 70)
    emulator.set_faults(Faults(down=True))
    conf = make_config()
    proc = cli.start("sync", "-c", conf, log=daemon_log)
    wait_for_log(daemon_log, "scan.done")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 1
    assert time.monotonic() - started < 10
    assert "sync.unfinished" in daemon_log.read_text()
    assert emulator.assets() == []


def test_run_stops_on_sigterm_within_10_seconds(cli: Cli, make_config, daemon_log: Path) -> None:
    """SIGTERM to a ready daemon: a clean stop, exit 0, well within 10 s."""
    conf = make_config()
    proc = cli.start("run", "-c", conf, log=daemon_log)
    wait_for_log(daemon_log, "daemon.ready")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert time.monotonic() - started < 10
    assert "daemon.stopped" in daemon_log.read_text()


def test_sigusr1_writes_every_threads_stack_and_the_daemon_goes_on(
    cli: Cli, make_config, daemon_log: Path, emulator: EmulatorServer, hot: Path
) -> None:
    """SIGUSR1 to a running daemon: each thread's stack in its log, frames only (no
    value, so no key), and the daemon keeps working, then stops cleanly."""
    conf = make_config()
    proc = cli.start("run", "-c", conf, log=daemon_log)
    wait_for_log(daemon_log, "daemon.ready")
    proc.send_signal(signal.SIGUSR1)
    # The main thread's stack ends in the daemon's loop; the workers' stacks are there too.
    text = wait_for_log(daemon_log, "in run_forever")
    assert text.count("(most recent call first)") >= 3, text[-3000:]
    assert "test-key" not in text
    assert proc.poll() is None, f"the daemon goes on after the dump: {text[-3000:]}"
    write_image(hot / "after-dump.jpg", 7)
    wait_until(lambda: len(emulator.assets()) == 1, 30, message="an upload after the dump")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
