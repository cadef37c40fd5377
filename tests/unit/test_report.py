"""What `syncd status` gathers from a state database, and how it renders it."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from syncd import report
from syncd.config import FolderConfig
from syncd.ledger import Ledger
from syncd.model import JobKind, JobState, asset_key
from syncd.store import Store

NOW = 1_800_000_000.0
DEAD_PID = 2_147_483_000  # above any pid_max


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    db = Store.open(tmp_path / "state.db", clock=lambda: NOW - 60)
    yield db
    db.close()


def status_of(store: Store, *folders: FolderConfig) -> dict:
    reader = Store.open_readonly(store.path)
    try:
        return report.gather(reader, folders, now=NOW, stale_after=15.0)
    finally:
        reader.close()


def render(status: dict) -> str:
    out = io.StringIO()
    report.render(status, Console(file=out, width=200, highlight=False), now=NOW)
    return out.getvalue()


def test_a_fresh_heartbeat_from_a_live_process_is_a_running_daemon(store: Store) -> None:
    """Heartbeat 3 s old from this very process: running, with its pid."""
    store.set_meta("heartbeat", f"{NOW - 3} {os.getpid()}")
    daemon = status_of(store)["daemon"]
    assert daemon["running"] and daemon["pid"] == os.getpid()
    assert daemon["heartbeat_age_seconds"] == 3.0


def test_a_stale_heartbeat_from_a_live_process_is_not_answering(store: Store) -> None:
    """A live pid whose heartbeat is older than stale_after: not running, rendered as a hang."""
    store.set_meta("heartbeat", f"{NOW - 60} {os.getpid()}")
    status = status_of(store)
    assert not status["daemon"]["running"] and status["daemon"]["process_alive"]
    assert "not answering" in render(status)


def test_a_heartbeat_from_a_dead_process_is_not_running(store: Store) -> None:
    """A fresh heartbeat whose process is gone (kill -9) is not a running daemon."""
    store.set_meta("heartbeat", f"{NOW - 1} {DEAD_PID}")
    daemon = status_of(store)["daemon"]
    assert not daemon["running"] and not daemon["process_alive"]


@pytest.mark.parametrize("value", [None, "", "garbage", "12.5", "x 12"])
def test_a_missing_or_malformed_heartbeat_means_no_daemon(store: Store, value: str | None) -> None:
    """No heartbeat, or one that cannot be read, is shown as not running."""
    store.set_meta("heartbeat", value)
    assert status_of(store)["daemon"] == {
        "running": False, "pid": None, "last_heartbeat": None, "heartbeat_age_seconds": None,
        "process_alive": False, "role": None, "started": None, "progress": None,
    }  # fmt: skip


def test_every_live_state_is_counted_even_when_empty(store: Store) -> None:
    """Stable keys: each kind lists every state it can wait in, 0 when none."""
    assert status_of(store)["jobs"] == {
        "file": {"pending": 0, "hashing": 0, "failed": 0},
        "upload": {"pending": 0, "uploading": 0, "failed": 0},
        "delete": {"waiting": 0, "held": 0, "deleting": 0, "failed": 0},
        "dedupe": {"pending": 0, "checking": 0},
    }


def failed_upload_and_held_delete(store: Store, folder: str) -> None:
    """An upload job refused by the API (its path borrowed from the file) and a held delete."""
    key = asset_key("ab" * 32, ("shoes",))
    with store.write() as conn:
        conn.execute("INSERT INTO assets (key, sha256, tags, name) VALUES (?, ?, ?, ?)",
                     (key, "ab" * 32, '["shoes"]', "sneaker"))  # fmt: skip
        conn.execute(
            "INSERT INTO files (folder, relpath, size, mtime_ns, inode, asset_key)"
            " VALUES (?, 'shoes/sneaker.jpg', 1, 1, 1, ?)", (folder, key),
        )  # fmt: skip
        store.new_job(conn, JobKind.UPLOAD, folder, asset_key=key)
        store.new_job(conn, JobKind.DELETE, folder, asset_key=key, state=JobState.HELD,
                      reason="held: [key: x] more than 0 deletions")  # fmt: skip
    job = store.claim([JobKind.UPLOAD], now=NOW)
    assert job is not None
    store.transition(job, JobState.FAILED, reason="rejected by the API: HTTP 422")


def test_failures_and_held_deletions_are_listed_with_reasons(store: Store, tmp_path: Path) -> None:
    """An upload failure shows the file it was for; a held deletion shows the asset's name."""
    folder = FolderConfig(tmp_path / "hot")
    failed_upload_and_held_delete(store, folder.key)
    status = status_of(store, folder)
    (failure,) = status["failures"]["items"]
    assert (failure["kind"], failure["path"], failure["name"]) == (
        "upload", "shoes/sneaker.jpg", "sneaker",
    )  # fmt: skip
    assert status["failures"]["count"] == 1 and status["jobs"]["upload"]["failed"] == 1
    (held,) = status["held_deletions"]["items"]
    assert (held["name"], held["tags"]) == ("sneaker", ["shoes"])
    text = render(status)
    assert "upload " + folder.key + "/shoes/sneaker.jpg: rejected by the API: HTTP 422" in text
    assert "held: [key: x] more than 0 deletions" in text  # brackets are text, not markup


def test_a_rejected_key_and_folder_health_are_shown(store: Store, tmp_path: Path) -> None:
    """auth_rejected_since and a guarded folder's reason reach both the dict and the text."""
    folder = FolderConfig(tmp_path / "hot", polling=True)
    store.set_meta("auth_rejected_since", str(NOW - 120))
    store.set_folder(folder.key, health="guarded", reason="root is empty where files were tracked")
    status = status_of(store, folder)
    assert status["api_key"] == {"rejected": True, "rejected_since": report._iso(NOW - 120)}
    assert status["folders"] == [{
        "path": folder.key, "health": "guarded", "polling": True, "last_scan": None,
        "reason": "root is empty where files were tracked", "watch_mode": None,
        "watch_reason": None,
    }]  # fmt: skip
    text = render(status)
    assert "REJECTED since" in text and "(2m ago)" in text
    assert "root is empty where files were tracked" in text and "(polling)" in text


def test_a_fall_back_to_polling_is_shown_with_its_reason(store: Store, tmp_path: Path) -> None:
    """A folder set for inotify that runs on polling (watch limit) says so in status."""
    folder = FolderConfig(path=tmp_path / "hot")
    store.set_folder(folder.key, health="ok", watch_mode="polling")
    status = status_of(store, folder)
    assert status["folders"][0]["watch_mode"] == "polling"
    assert "inotify watch limit was reached" in render(status)


def test_status_shows_an_esc_in_a_file_name_escaped(store: Store, tmp_path: Path) -> None:
    """A failed file whose name holds ESC (and a server reason with one) renders escaped."""
    folder = FolderConfig(path=tmp_path / "hot")
    Ledger(store, {folder.key: folder}).enqueue_paths(folder.key, ["red\x1b[31m.jpg"])
    job = store.claim([JobKind.FILE])
    assert job is not None
    store.transition(job, JobState.FAILED, reason="rejected: \x1b]0;pwned\x07")
    text = render(status_of(store, folder))
    assert "\x1b" not in text and "\x07" not in text
    assert "red\\x1b[31m.jpg" in text and "\\x1b]0;pwned\\x07" in text
