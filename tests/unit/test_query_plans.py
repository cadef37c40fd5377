"""The queue's hot path stays flat: every query it runs is an index seek, never a scan."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.config import FolderConfig
from syncd.ledger import Ledger
from syncd.model import FileStat, JobKind, RemoteAsset
from syncd.store import Store, tracked_range_sql
from tests.support import FakeClock

ROOT = "/hot"
#: Statements without a query plan worth checking.
_NO_PLAN = ("BEGIN", "COMMIT", "ROLLBACK", "PRAGMA", "INSERT INTO", "INSERT OR IGNORE INTO")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    store = Store.open(tmp_path / "state.db", clock=FakeClock())
    folder = FolderConfig(path=Path(ROOT), max_deletes=3, delete_grace_seconds=30)
    yield Ledger(store, {ROOT: folder})
    store.close()


def one_file_through_its_life(ledger: Ledger) -> None:
    """What the workers do for a file: queue, hash, link, upload, go, delete."""
    store = ledger.store
    stat = FileStat(size=10, mtime_ns=5, inode=1, dev=1)
    ledger.enqueue_paths(ROOT, ["a/b.jpg"])
    ledger.enqueue_paths(ROOT, ["a/b.jpg"])
    store.next_due([JobKind.FILE])
    job = store.claim([JobKind.FILE], now=store.clock() + 5)
    assert job is not None
    store.get_file(ROOT, "a/b.jpg")
    store.find_moved(ROOT, stat)
    ledger.file_linked(job, stat, "a" * 64, ("t",), "b")
    store.next_due([JobKind.UPLOAD, JobKind.DELETE])
    upload = store.claim([JobKind.UPLOAD, JobKind.DELETE])
    assert upload is not None
    ledger.upload_from_index(upload)
    ledger.posted_before(upload)
    ledger.upload_done(upload, RemoteAsset("A1", "b", "processing", ("t",), "2026-01-01"))
    ledger.enqueue_paths(ROOT, ["a/b.jpg"])
    gone = store.claim([JobKind.FILE], now=store.clock() + 5)
    assert gone is not None
    ledger.file_gone(gone)
    delete = store.claim([JobKind.UPLOAD, JobKind.DELETE], now=store.clock() + 60)
    assert delete is not None
    ledger.delete_cancelled_if_used(delete)
    ledger.delete_done(delete)


def traced(ledger: Ledger) -> list[str]:
    statements: list[str] = []
    # Reads on this thread's connection, records on the one write connection.
    conns = (ledger.store.conn(), ledger.store.writer())
    for conn in conns:
        conn.set_trace_callback(statements.append)
    try:
        one_file_through_its_life(ledger)
    finally:
        for conn in conns:
            conn.set_trace_callback(None)
    return [s for s in dict.fromkeys(statements) if not s.lstrip().upper().startswith(_NO_PLAN)]


def plan_of(conn: sqlite3.Connection, sql: str) -> list[str]:
    return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]


def test_every_hot_query_seeks_an_index(ledger: Ledger) -> None:
    """No claim, lookup or outcome on a file's way reads a whole table or sorts in a temp b-tree."""
    statements = traced(ledger)
    assert len(statements) > 15, "the trace should see the hot path's queries"
    conn = ledger.store.conn()
    bad = {}
    for sql in statements:
        steps = plan_of(conn, sql)
        if any(s.startswith("SCAN") or "TEMP B-TREE" in s for s in steps):
            bad[sql] = steps
    assert bad == {}


def test_claims_use_the_per_kind_index(ledger: Ledger) -> None:
    """A claim seeks (kind, state, not_before), so pending file jobs never slow an upload claim."""
    statements = [s for s in traced(ledger) if "ORDER BY not_before, id LIMIT 1" in s]
    assert statements
    conn = ledger.store.conn()
    for sql in statements:
        assert any("INDEX jobs_claim (kind=? AND state=? AND not_before<?)" in s
                   for s in plan_of(conn, sql)), sql  # fmt: skip


@pytest.mark.parametrize("bounded", [True, False])
@pytest.mark.parametrize("columns", ["size, mtime_ns, inode", "size, dev, sha256, problem"])
def test_the_rescan_reads_a_range_of_the_folder_by_its_key(
    ledger: Ledger, bounded: bool, columns: str
) -> None:
    """A rescan's query per segment seeks (folder, relpath) and reads rows in key order."""
    sql = tracked_range_sql(columns, bounded=bounded)
    params = (*(ROOT, "a/", "a0")[: 3 if bounded else 2], 1000)
    steps = [row[3] for row in ledger.store.conn().execute(f"EXPLAIN QUERY PLAN {sql}", params)]
    assert not any(s.startswith("SCAN") or "TEMP B-TREE" in s for s in steps), steps
    upper = " AND relpath<?" if bounded else ""
    assert any(f"(folder=? AND relpath>?{upper})" in s for s in steps), steps


def test_hot_statements_are_compiled_once(ledger: Ledger) -> None:
    """A hot statement run again comes from the statement cache, not from SQLite's
    compiler: a bound job kind would be compiled again at every run (it might make the
    partial index ``jobs_path`` usable). SQLite asks the authorizer only while compiling."""
    conns = (ledger.store.conn(), ledger.store.writer())
    compiled: list[tuple[object, ...]] = []

    def authorize(*action: object) -> int:
        compiled.append(action)
        return sqlite3.SQLITE_OK

    for conn in conns:
        conn.set_authorizer(authorize)  # expires every prepared statement: warm up again
    try:
        one_file_through_its_life(ledger)
        compiled.clear()
        one_file_through_its_life(ledger)
    finally:
        for conn in conns:
            conn.set_authorizer(None)
    assert {str(action[2]) for action in compiled if action[0] == sqlite3.SQLITE_READ} == set()
