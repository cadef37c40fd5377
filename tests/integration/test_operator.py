"""The operator's commands through the real CLI: explain, ls, held, approve/reject, plan,
rescan, and the defects of issue 10 (sync's summary and exit codes, status's holder,
names that match nothing, piped status)."""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from syncd.emulator import EmulatorServer, Faults
from tests.integration.conftest import Cli, wait_for_log
from tests.support import config_text, wait_until, write_image, write_private


@pytest.fixture
def conf_for(tmp_path: Path, emulator: EmulatorServer, hot: Path) -> Callable[..., Path]:
    """Writes a config next to the state database; ``hot`` as a path relative to the file."""

    def make(**options: Any) -> Path:
        conf = tmp_path / "syncd.toml"
        text = config_text(emulator.base_url, [hot], tmp_path / "state.db", **options)
        return write_private(conf, text.replace(f'path = "{hot}"', f'path = "{hot.name}"'))

    return make


@pytest.fixture
def held_case(cli: Cli, emulator: EmulatorServer, hot: Path, conf_for) -> Path:
    """Four uploads, then three of them deleted at once past max_deletes=1: all three held."""
    for i, name in enumerate(("red/a.jpg", "red/b.jpg", "blue/c.jpg", "blue/d.jpg")):
        write_image(hot / name, 40 + i)
    conf = conf_for(max_deletes=1)
    assert cli("sync", "-c", conf).returncode == 0
    for name in ("red/a.jpg", "red/b.jpg", "blue/c.jpg"):
        (hot / name).unlink()
    result = cli("sync", "-c", conf)
    assert result.returncode == 0, result.stdout
    assert "3 deletion(s) held" in result.stdout
    return conf


def db_digest(path: Path) -> str:
    """The state database's bytes (and its WAL's, if any): changed by any write."""
    digest = hashlib.sha256()
    for part in (path, path.with_name(path.name + "-wal")):
        if part.exists():
            digest.update(part.read_bytes())
    return digest.hexdigest()


# --- sync: summary and exit codes ------------------------------------------------------


def test_sync_prints_a_closing_summary_with_reasons(cli: Cli, hot: Path, conf_for) -> None:
    """Every sync ends with counts, each failure with its reason, and why it exits so."""
    write_image(hot / "ok.jpg", 1)
    (hot / "broken.jpg").write_text("not an image")
    result = cli("sync", "-c", conf_for())
    assert result.returncode == 1
    out = result.stdout
    assert "sync: 1 uploaded" in out and "1 failed" in out and "0 still queued" in out
    assert "broken.jpg: not an image" in out
    assert "exit 1: some files failed" in out


def test_sync_with_a_rejected_key_stops_at_once_with_exit_2(cli: Cli, hot: Path, conf_for) -> None:
    """A refused key ends `sync` within seconds (not --max-wait), exit 2, saying so."""
    write_image(hot / "a.jpg", 2)
    started = time.monotonic()
    result = cli("sync", "-c", conf_for(api_key="wrong-key"), "--max-wait", "600", timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    assert "API key was rejected" in result.stdout
    assert "wrong-key" not in result.stdout + result.stderr


def test_status_names_a_running_sync_with_its_pid_and_progress(
    cli: Cli, emulator: EmulatorServer, hot: Path, conf_for, tmp_path: Path
) -> None:
    """While `syncd sync` works, status says `syncd sync`, its pid and how far it got."""
    for i in range(6):
        write_image(hot / f"s{i}.jpg", 60 + i)
    emulator.set_faults(Faults(latency=1.0))
    conf = conf_for(concurrency=1)
    proc = cli.start("sync", "-c", conf, log=tmp_path / "sync.log")

    def daemon() -> dict[str, Any]:
        out = cli("status", "-c", conf, "--json")
        return json.loads(out.stdout)["daemon"] if out.returncode == 0 else {}

    seen = wait_until(lambda: (d := daemon()).get("progress") and d, 30, 0.2, "sync in status")
    assert seen["running"] and seen["role"] == "sync" and seen["pid"] == proc.pid
    assert seen["progress"]["total"] >= 1
    text = cli("status", "-c", conf).stdout
    assert "`syncd sync`" in text and f"pid {proc.pid}" in text and "jobs done" in text
    emulator.set_faults(Faults())
    assert proc.wait(60) == 0


def test_sigterm_summary_counts_what_is_still_queued(
    cli: Cli, emulator: EmulatorServer, hot: Path, conf_for, tmp_path: Path
) -> None:
    """A sync stopped by SIGTERM says so and how many jobs stay queued (not `[]`)."""
    for i in range(3):
        write_image(hot / f"q{i}.jpg", 80 + i)
    emulator.set_faults(Faults(down=True))
    log = tmp_path / "sync.log"
    proc = cli.start("sync", "-c", conf_for(), log=log)
    wait_for_log(log, "scan.done")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 1
    text = log.read_text()
    assert "3 still queued" in text and "exit 1: stopped by a signal" in text


def test_status_piped_is_not_cropped(cli: Cli, tmp_path: Path, emulator: EmulatorServer) -> None:
    """Piped, with no COLUMNS, a long folder path is printed whole."""
    deep = tmp_path / ("studio-" + "x" * 90) / "hot"
    deep.mkdir(parents=True)
    conf = tmp_path / "deep.toml"
    write_private(conf, config_text(emulator.base_url, [deep], tmp_path / "deep.db"))
    assert cli("sync", "-c", conf).returncode == 0
    cli.env.pop("COLUMNS", None)
    out = cli("status", "-c", conf).stdout
    assert str(deep) in out


# --- names that match nothing ----------------------------------------------------------


def test_approve_by_the_folder_as_written_in_the_config_from_elsewhere(
    cli: Cli, held_case: Path, emulator: EmulatorServer, hot: Path
) -> None:
    """`--folder hot` (relative, as in the config) works from another directory; by name too."""
    cli.tmp_path = hot / "red"  # run from somewhere else
    result = cli("approve-deletes", "-c", held_case, "--folder", "hot", "--path", "red/*")
    assert (result.returncode, result.stdout.splitlines()[0]) == (0, "approved 2 held deletion(s)")
    held = json.loads(cli("held", "-c", held_case, "--json").stdout)["held"]
    assert [h["path"] for h in held] == ["blue/c.jpg"]


def test_names_that_match_nothing_exit_non_zero(cli: Cli, held_case: Path) -> None:
    """An unknown folder is a usage error (2); a selection or retry matching nothing exits 1."""
    folder = cli("approve-deletes", "-c", held_case, "--folder", "hot9")
    assert folder.returncode == 2 and "not a configured folder" in folder.stderr
    nothing = cli("approve-deletes", "-c", held_case, "--tag", "no-such-tag")
    assert nothing.returncode == 1 and "no held deletion matches" in nothing.stderr
    retry = cli("retry", "-c", held_case, "nonexistent.jpg")
    assert retry.returncode == 1 and "no failed job matches" in retry.stderr
    assert len(json.loads(cli("held", "-c", held_case, "--json").stdout)["held"]) == 3


# --- held, approve, reject -------------------------------------------------------------


def test_held_lists_every_held_deletion_with_its_facts(cli: Cli, held_case: Path) -> None:
    """`held` lists all three (not the first five only) with path, tags, asset, why, since."""
    held = json.loads(cli("held", "-c", held_case, "--json").stdout)["held"]
    assert sorted(h["path"] for h in held) == ["blue/c.jpg", "red/a.jpg", "red/b.jpg"]
    for item in held:
        assert item["asset_id"].startswith("ast_") and "studio" in item["tags"]
        assert item["reason"].startswith("held:") and item["since"].endswith("Z")
    text = cli("held", "-c", held_case).stdout
    assert "3 held deletion(s)" in text and "red/a.jpg" in text


def test_reject_keeps_the_asset_and_approve_deletes_it(
    cli: Cli, held_case: Path, emulator: EmulatorServer
) -> None:
    """Rejected by tag: the assets stay; the rest approved: deleted by the next sync."""
    rejected = cli("reject-deletes", "-c", held_case, "--tag", "red")
    assert rejected.returncode == 0 and "rejected 2 held deletion(s)" in rejected.stdout
    assert cli("approve-deletes", "-c", held_case).returncode == 0
    assert cli("sync", "-c", held_case).returncode == 0
    names = sorted(a["name"] for a in emulator.assets())
    assert names == ["a", "b", "d"]
    assert json.loads(cli("held", "-c", held_case, "--json").stdout)["held"] == []


# --- explain, ls -----------------------------------------------------------------------


def test_explain_says_what_happened_and_what_waits(cli: Cli, held_case: Path, hot: Path) -> None:
    """explain: an uploaded file's asset, a gone file's held deletion, an ignored file's rule."""
    up = json.loads(cli("explain", "-c", held_case, "--json", hot / "blue" / "d.jpg").stdout)
    assert up["tracked"] and up["asset"]["asset_id"].startswith("ast_")
    assert up["tags"] == ["studio", "blue"] and up["name"] == "d" and len(up["sha256"]) == 64
    assert [j["kind"] for j in up["jobs"]][-2:] == ["upload", "file"]
    gone = cli("why", "-c", held_case, hot / "red" / "a.jpg").stdout
    assert "gone from the folder" in gone and "held" in gone
    (hot / "notes.txt").write_text("x")
    ignored = json.loads(cli("explain", "-c", held_case, "--json", hot / "notes.txt").stdout)
    assert "include" in ignored["ignored"] and ignored["verdict"].startswith("ignored")
    outside = cli("explain", "-c", held_case, "/etc/hostname").stdout
    assert "outside every hot folder" in outside


def test_ls_lists_tracked_files_and_ignored_ones(cli: Cli, held_case: Path, hot: Path) -> None:
    """ls: one line per tracked file with its asset; filters by tag and state; --ignored rules."""
    (hot / ".hidden.jpg").write_text("x")
    (hot / "a.tmp").write_text("x")
    rows = [json.loads(line) for line in cli("ls", "-c", held_case, "--json").stdout.splitlines()]
    assert [(r["path"], r["state"]) for r in rows] == [("blue/d.jpg", "uploaded")]
    assert cli("ls", "-c", held_case, "--tag", "red").stdout == ""
    assert "blue/d.jpg" in cli("ls", "-c", held_case, "hot", "--state", "uploaded").stdout
    ignored = cli("ls", "-c", held_case, "--ignored").stdout
    assert ".hidden.jpg  ignored: hidden name" in ignored
    assert "a.tmp  ignored: temporary" in ignored


# --- plan / sync --dry-run -------------------------------------------------------------


def test_plan_changes_nothing_and_says_what_sync_would_do(
    cli: Cli, held_case: Path, hot: Path, emulator: EmulatorServer, tmp_path: Path
) -> None:
    """plan and sync --dry-run: upload/link/delete listed; no request, state DB bytes unchanged."""
    write_image(hot / "new.jpg", 99)
    (hot / "copy").mkdir()
    (hot / "copy" / "d.jpg").write_bytes((hot / "blue" / "d.jpg").read_bytes())
    (hot / "blue" / "d.jpg").unlink()
    state = tmp_path / "state.db"
    before, requests = db_digest(state), emulator.stats()["requests"]
    plan = json.loads(cli("plan", "-c", held_case, "--json").stdout)
    dry = cli("sync", "--dry-run", "-c", held_case)
    assert dry.returncode == 0 and "Nothing was sent or written" in dry.stdout
    assert db_digest(state) == before
    assert emulator.stats()["requests"] == requests
    assert sorted(i["path"] for i in plan["upload"]) == ["copy/d.jpg", "new.jpg"]
    assert [i["path"] for i in plan["delete"]] == ["blue/d.jpg"]
    assert "would upload" in dry.stdout and "would delete" in dry.stdout


# --- rescan ----------------------------------------------------------------------------


def test_rescan_asks_the_running_daemon(
    cli: Cli, emulator: EmulatorServer, hot: Path, conf_for, tmp_path: Path
) -> None:
    """`rescan hot` is taken by the running daemon, which scans; without one it exits 1."""
    conf = conf_for()
    assert cli("rescan", "-c", conf).returncode != 0  # no database, no daemon yet
    log = tmp_path / "run.log"
    proc = cli.start("run", "-c", conf, log=log)
    wait_for_log(log, "daemon.ready")
    wait_until(lambda: cli("status", "-c", conf, "--json").returncode == 0, 20, 0.2, "status")
    wait_until(
        lambda: json.loads(cli("status", "-c", conf, "--json").stdout)["daemon"]["running"],
        20, 0.2, "a running daemon in status",
    )  # fmt: skip
    scans = log.read_text().count('"scan.done"')
    result = cli("rescan", "-c", conf, "hot")
    assert result.returncode == 0, result.stderr
    assert "is rescanning" in result.stdout
    wait_until(lambda: log.read_text().count('"scan.done"') > scans, 20, message="a new scan")
    assert '"by": "syncd rescan"' in log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(15) == 0
    stopped = cli("rescan", "-c", conf)
    assert stopped.returncode == 1 and "no `syncd run` is running" in stopped.stderr
