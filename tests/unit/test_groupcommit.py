"""Group commit, claims of several jobs, and uploads handed over already claimed."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.admin import Admin
from syncd.api import AssetsClient
from syncd.breaker import Breaker
from syncd.config import FolderConfig
from syncd.context import Context
from syncd.groupcommit import GroupCommit
from syncd.handoff import Handoff
from syncd.ledger import Ledger
from syncd.model import EventKind, FileStat, FsEvent, JobKind, JobState
from syncd.store import Store
from syncd.workers import FILE_KINDS, Workers
from tests.support import FakeClock, wait_until

ROOT = "/hot"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    store = Store.open(tmp_path / "state.db", clock=FakeClock())
    yield Ledger(store, {ROOT: FolderConfig(path=Path(ROOT))})
    store.close()


def committed(store: Store, sql: str) -> list[tuple[object, ...]]:
    """What another process would read: only what is committed."""
    with sqlite3.connect(store.path) as other:
        return list(other.execute(sql))


def test_records_of_many_threads_share_commits_and_are_durable_on_return(
    ledger: Ledger,
) -> None:
    """Records written at once by 8 threads take fewer commits than records, and each is
    readable by another connection the moment its write() returns."""
    store = ledger.store
    not_durable: list[str] = []
    before = store.commits

    def writer(n: int) -> None:
        for i in range(25):
            key = f"k{n}-{i}"
            store.set_meta(key, "v")
            if committed(store, f"SELECT 1 FROM meta WHERE key = '{key}'") == []:
                not_durable.append(key)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not_durable == []
    assert committed(store, "SELECT count(*) FROM meta WHERE key LIKE 'k%'") == [(200,)]
    assert store.commits - before < 200


def test_a_failing_record_rolls_back_alone(ledger: Ledger) -> None:
    """A record that raises leaves nothing behind; the records around it are kept."""
    store = ledger.store
    store.set_meta("before", "1")
    with pytest.raises(RuntimeError), store.write() as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('doomed', '1')")
        raise RuntimeError("this record fails")
    store.set_meta("after", "1")
    keys = committed(store, "SELECT key FROM meta WHERE key IN ('before', 'doomed', 'after')")
    assert sorted(k for (k,) in keys) == ["after", "before"]
    assert not store.writer().in_transaction, "no empty transaction may hold the write lock"


def test_a_batch_claim_takes_several_jobs_in_one_record(ledger: Ledger) -> None:
    """claim_batch takes up to its limit, earliest first, in one commit."""
    ledger.enqueue_paths(ROOT, ["a.jpg", "b.jpg", "c.jpg"])
    store = ledger.store
    before = store.commits
    jobs = store.claim_batch([JobKind.FILE], 2, now=store.clock() + 5)
    assert [j.relpath for j in jobs] == ["a.jpg", "b.jpg"]
    assert {j.state for j in jobs} == {JobState.HASHING}
    assert store.commits - before == 1


def stat() -> FileStat:
    return FileStat(size=10, mtime_ns=5, inode=1, dev=1)


def test_a_handed_over_upload_is_claimed_with_its_intent_and_recovers_to_pending(
    ledger: Ledger,
) -> None:
    """file_linked(handoff=True) creates the upload in flight (attempt 1, intent set);
    after a crash, recovery makes it pending with the intent kept."""
    store = ledger.store
    ledger.enqueue_paths(ROOT, ["a.jpg"])
    job = store.claim([JobKind.FILE], now=store.clock() + 5)
    assert job is not None
    linked = ledger.file_linked(job, stat(), "ab" * 32, ("t",), "a", handoff=True)
    upload = linked.upload
    assert upload is not None and upload.state is JobState.UPLOADING
    assert (upload.attempt, upload.intent_at is not None) == (1, True)
    assert store.claim([JobKind.UPLOAD]) is None, "nothing left for a worker to claim"
    assert store.recover() == 1
    row = store.query("SELECT state, intent_at FROM jobs WHERE id = ?", (upload.id,))[0]
    assert row["state"] == "pending" and row["intent_at"] == upload.intent_at


def test_a_stop_puts_unstarted_claims_back_as_they_were(ledger: Ledger) -> None:
    """Handed-over uploads and batch-claimed file jobs no worker started go back to the
    queue with no attempt made and no intent."""
    store = ledger.store
    handoff = Handoff(4)
    ctx = Context(ledger, AssetsClient("http://127.0.0.1:9", lambda: "unused"),
                  ledger.folders, {}, Breaker(), clock=store.clock, admin=Admin(store),
                  handoff=handoff)  # fmt: skip
    workers = Workers(ctx, {}, stopping=threading.Event(), indexed=threading.Event(),
                      clock=store.clock, claim_batch={FILE_KINDS: 3})  # fmt: skip
    ledger.enqueue_paths(ROOT, ["a.jpg", "b.jpg", "c.jpg"])
    store.clock.now += 5  # type: ignore[attr-defined]
    first = workers._claim(FILE_KINDS)
    assert first is not None and first.relpath == "a.jpg"
    assert not handoff.reserve(), "no API worker runs: nothing may be handed over"
    handoff.free = lambda: 1  # one API worker free to start it
    assert handoff.reserve()
    linked = ledger.file_linked(first, stat(), "cd" * 32, ("t",), "a", handoff=True)
    assert linked.upload is not None
    handoff.put(linked.upload)
    assert workers.put_back() == 3  # b.jpg and c.jpg, and the upload
    rows = store.query("SELECT kind, state, attempt, intent_at FROM jobs WHERE state != 'done'")
    assert sorted((r["kind"], r["state"], r["attempt"], r["intent_at"]) for r in rows) == [
        ("file", "pending", 0, None),
        ("file", "pending", 0, None),
        ("upload", "pending", 0, None),
    ]


def test_a_record_that_does_not_wait_is_made_durable_by_the_next_one_or_the_flusher(
    ledger: Ledger,
) -> None:
    """record(durable=False) returns before its commit; a later record that waits covers
    it, and alone it reaches the disk within the flusher's delay."""
    store = ledger.store
    with store.record(durable=False) as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('early', '1')")
    store.set_meta("later", "1")  # waits: commits everything written before it
    assert len(committed(store, "SELECT key FROM meta WHERE key IN ('early', 'later')")) == 2
    with store.record(durable=False) as conn:
        conn.execute("INSERT INTO meta (key, value) VALUES ('alone', '1')")
    point = store.last_record()
    wait_until(lambda: committed(store, "SELECT 1 FROM meta WHERE key = 'alone'"), 5,
               message="the flusher's commit")  # fmt: skip
    store.wait_durable(point)  # already durable: returns at once


def test_records_lost_with_their_batch_are_told_to_on_lost(tmp_path: Path) -> None:
    """A COMMIT that fails loses the whole batch: whoever waits gets the error, and the
    tokens of the records that did not wait go to on_lost; nothing is left behind."""
    path = tmp_path / "fk.db"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    lost: list[object] = []
    group = GroupCommit(connect, lambda _notes: None, on_lost=lost.extend, flush_after=60)
    with group.record() as conn:
        conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
        conn.execute(
            "CREATE TABLE child (id INTEGER PRIMARY KEY, parent INTEGER"
            " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )
    with group.record(durable=False, lost="the outcome of job 7") as conn:
        conn.execute("INSERT INTO parent (id) VALUES (1)")
    with pytest.raises(sqlite3.IntegrityError), group.record() as conn:
        conn.execute("INSERT INTO child (id, parent) VALUES (1, 99)")  # fails at COMMIT
    assert lost == ["the outcome of job 7"]
    with group.record() as conn:
        assert conn.execute("SELECT count(*) FROM parent").fetchone() == (0,)
    group.close()


def test_a_rename_takes_back_a_handed_over_upload_no_worker_took(ledger: Ledger) -> None:
    """An upload handed over but not taken is not started: a rename puts it back to
    pending without an intent and the asset takes the new name; a taken one keeps it."""
    store = ledger.store
    handoff = Handoff(4)
    ledger.unstarted = handoff.withdraw
    ledger.enqueue_paths(ROOT, ["tmpq1w2e3.jpg"])
    job = store.claim([JobKind.FILE], now=store.clock() + 5)
    assert job is not None
    assert handoff.reserve()
    linked = ledger.file_linked(job, stat(), "ef" * 32, ("t",), "tmpq1w2e3", handoff=True)
    assert linked.upload is not None
    handoff.put(linked.upload, store.last_record())
    event = FsEvent(ROOT, EventKind.MOVED, "tmpq1w2e3.jpg", dest_relpath="rocket.jpg")
    ledger.record_events([event])
    assert handoff.take() is None, "taken back from the handoff"
    row = store.query("SELECT state, attempt, intent_at FROM jobs WHERE kind = 'upload'")[0]
    assert (row["state"], row["attempt"], row["intent_at"]) == ("pending", 0, None)
    assert store.query("SELECT name FROM assets")[0]["name"] == "rocket"


def test_a_lone_writer_commits_at_once_however_long_the_gap(tmp_path: Path) -> None:
    """With a commit gap far longer than the test, records written one after another
    (never two waiting at once) each commit at once: the gap is for a busy process."""
    path = tmp_path / "gap.db"

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    group = GroupCommit(connect, lambda _notes: None, gap=3600, siblings=2, flush_after=60)
    done: list[int] = []

    def lone_writer() -> None:
        with group.record() as conn:
            conn.execute("CREATE TABLE t (n INTEGER)")
        for n in range(5):
            with group.record() as conn:
                conn.execute("INSERT INTO t (n) VALUES (?)", (n,))
            done.append(n)

    writer = threading.Thread(target=lone_writer, daemon=True)
    writer.start()
    writer.join(timeout=20)
    assert done == [0, 1, 2, 3, 4], "a lone writer waited for company"
    assert group.commits == 6
    group.close()
