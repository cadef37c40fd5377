"""The state database: migrations, the lock, identity, and the job state machine."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from syncd.errors import InvalidTransition, StaleAttempt, StoreCorrupt, StoreLocked
from syncd.model import TRANSITIONS, JobKind, JobState
from syncd.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from syncd.store import Store
from tests.support import FakeClock


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "state.db", clock=FakeClock())
    yield s
    s.close()


def add_job(store: Store, kind: JobKind = JobKind.FILE, **kw: object) -> int:
    with store.write() as conn:
        return store.new_job(conn, kind, "/hot", relpath="a.jpg", **kw).id  # type: ignore[arg-type]


def test_new_database_is_migrated_to_the_latest_schema(tmp_path: Path) -> None:
    """An empty file becomes a syncd database at the current schema version."""
    store = Store.open(tmp_path / "s.db")
    assert store.schema_version() == SCHEMA_VERSION
    assert store.conn().execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    assert store.conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_previous_schema_migrates_without_losing_rows(tmp_path: Path) -> None:
    """A version-1 database keeps its files and jobs and gains the version-2 columns."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute("PRAGMA user_version=1")
    conn.execute(
        "INSERT INTO files (folder, relpath, size, mtime_ns, inode, sha256) "
        "VALUES ('/hot', 'a.jpg', 1, 2, 3, 'ab')"
    )
    conn.commit()
    conn.close()
    store = Store.open(path)
    assert store.schema_version() == SCHEMA_VERSION
    tracked = store.get_file("/hot", "a.jpg")
    assert tracked is not None and tracked.sha256 == "ab" and tracked.problem is None
    store.close()


def test_a_foreign_sqlite_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """Someone else's database is never migrated into ours."""
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (id INTEGER)")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreCorrupt, match="not a syncd state database"):
        Store.open(path)
    assert path.read_bytes() == before


def test_a_corrupt_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    """Garbage where the database should be is reported, not overwritten."""
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(StoreCorrupt):
        Store.open(path)
    assert path.read_bytes() == b"this is not sqlite at all" * 100


def test_a_second_writer_on_the_same_file_is_refused(tmp_path: Path) -> None:
    """Two daemons on one state file: the second gets StoreLocked."""
    first = Store.open(tmp_path / "state.db")
    with pytest.raises(StoreLocked, match="another syncd"):
        Store.open(tmp_path / "state.db")
    first.close()
    Store.open(tmp_path / "state.db").close()


def test_transition_outside_the_state_machine_raises(store: Store) -> None:
    """A file job cannot jump from pending to done without being claimed."""
    add_job(store)
    (job,) = store.query("SELECT * FROM jobs")
    from syncd.store import row_to_job

    with pytest.raises(InvalidTransition):
        store.transition(row_to_job(job), JobState.DONE)


def test_every_kind_has_transitions_only_between_its_states() -> None:
    """The table never lets a job leave a finished state."""
    for kind, moves in TRANSITIONS.items():
        assert moves, kind
        for old, _new in moves:
            assert old not in (JobState.DONE, JobState.CANCELLED)


def test_claim_increments_the_attempt_and_a_stale_attempt_cannot_record(store: Store) -> None:
    """After recovery and a new claim, the first claim's outcome is refused."""
    add_job(store)
    first = store.claim([JobKind.FILE])
    assert first is not None and first.attempt == 1 and first.state is JobState.HASHING
    store.recover()
    second = store.claim([JobKind.FILE])
    assert second is not None and second.attempt == 2
    with pytest.raises(StaleAttempt):
        store.transition(first, JobState.DONE)
    assert store.transition(second, JobState.DONE).state is JobState.DONE


def test_claim_respects_not_before_and_kind(store: Store) -> None:
    """A job is claimed only once due, and only by a worker of its kind."""
    clock = store.clock
    add_job(store, not_before=clock() + 10)
    assert store.claim([JobKind.FILE]) is None
    assert store.claim([JobKind.UPLOAD, JobKind.DELETE], now=clock() + 20) is None
    assert store.claim([JobKind.FILE], now=clock() + 20) is not None


def test_upload_claim_records_the_intent_before_any_post(store: Store) -> None:
    """The claim of an upload commits intent_at; recovery keeps it for reconciliation."""
    with store.write() as conn:
        store.new_job(conn, JobKind.UPLOAD, "/hot", asset_key="k")
    job = store.claim([JobKind.UPLOAD])
    assert job is not None and job.intent_at == store.clock()
    store.recover()
    (row,) = store.query("SELECT * FROM jobs")
    assert row["state"] == "pending" and row["intent_at"] == store.clock()


def test_recover_moves_every_in_flight_state_back(store: Store) -> None:
    """hashing, uploading, deleting and checking jobs become claimable again after a crash."""
    add_job(store)
    with store.write() as conn:
        store.new_job(conn, JobKind.UPLOAD, "/hot", asset_key="k")
        store.new_job(conn, JobKind.DELETE, "/hot", asset_key="k2")
        store.new_job(conn, JobKind.DEDUPE, "/hot", asset_key="k3")
    for kind in JobKind:
        assert store.claim([kind]) is not None
    assert store.recover() == 4
    states = {r["kind"]: r["state"] for r in store.query("SELECT kind, state FROM jobs")}
    assert states == {
        "file": "pending",
        "upload": "pending",
        "delete": "waiting",
        "dedupe": "pending",
    }


def test_readonly_open_does_not_create_a_database(tmp_path: Path) -> None:
    """status on a machine where syncd never ran says so and creates nothing."""
    from syncd.errors import StoreError

    with pytest.raises(StoreError, match="no state database"):
        Store.open_readonly(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()


def test_root_leaves_no_root_owned_side_files_beside_a_service_database(tmp_path: Path) -> None:
    """-wal and -shm made while root works on a service's database take its owner's uid.

    SQLite itself does this for root; the test keeps `sudo syncd retry` safe if that changes.
    """
    import os

    path = tmp_path / "state.db"
    Store.open(path).close()
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    os.chown(path, 65534, 65534)
    store = Store.open(path, lock=False)
    store.set_meta("touched", "yes")
    sides = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
    owners = {p.stat().st_uid for p in sides if p.exists()}
    store.close()
    assert owners, "a write in WAL mode leaves -wal and -shm files"
    assert owners == ({65534} if os.geteuid() == 0 else {os.geteuid()})


def test_a_new_state_folder_and_database_are_the_owners_only(tmp_path: Path) -> None:
    """Created by hand (no systemd StateDirectory=): folder 0700, database and WAL 0600."""
    path = tmp_path / "fresh" / "state.db"
    old = os.umask(0o022)
    try:
        store = Store.open(path)
        store.set_meta("x", "1")
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        for made in path.parent.iterdir():
            assert stat.S_IMODE(made.stat().st_mode) & 0o077 == 0, made
    finally:
        store.close()
