"""A state database of the release before (schema 9) is carried forward in place.

The database is written as schema 9 wrote it: its tables made by the SQL of migrations
1 to 9, asset keys as the JSON text of (hash, tag set), hashes as 64 hex digits. Its
rows come from a real run (files, assets, jobs, folders, meta) turned back into that
form, plus the rows a run leaves now and then: an upload cut off after its POST (intent
set), the history, a departure, the library index, an operator's request.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from syncd.model import compact_key
from syncd.schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION
from syncd.store import Store
from tests.running import Launcher
from tests.support import wait_until, write_image

V9 = 9
NAMES = ("a.jpg", "shoot/b.jpg", "shoot/c.jpg", "shoot/d.jpg")


def old_key(sha256: str, tags: list[str]) -> str:
    """The asset key as schema 9 stored it: the JSON text of (hash, sorted tag set)."""
    return json.dumps([sha256, sorted(set(tags))], separators=(",", ":"))


def rows(conn: sqlite3.Connection, table: str) -> list[dict[str, Any]]:
    conn.row_factory = sqlite3.Row
    return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]


def insert(conn: sqlite3.Connection, table: str, items: list[dict[str, Any]]) -> None:
    for item in items:
        names = ", ".join(item)
        marks = ", ".join("?" * len(item))
        conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(item.values()))


def as_schema_9(current: Path, old: Path) -> dict[str, str]:
    """Write ``current``'s rows to a new schema-9 database; the old key of each asset.

    One upload is turned into what a kill -9 right after its POST leaves (asset without
    asset_id, its job pending with the intent set), with the history, a departure, an
    index entry and a request as a run leaves them.
    """
    with sqlite3.connect(current) as src:
        tables = {t: rows(src, t) for t in ("files", "assets", "jobs", "folders", "meta")}
    keys = {}
    for asset in tables["assets"]:
        asset["sha256"] = asset["sha256"].hex()
        keys[asset["key"]] = asset["key"] = old_key(asset["sha256"], json.loads(asset["tags"]))
    by_new = {compact_key(k): k for k in keys.values()}
    for item in tables["files"] + tables["jobs"]:
        item["asset_key"] = by_new.get(item["asset_key"], item["asset_key"])
    for item in tables["files"]:
        item["sha256"] = item["sha256"].hex()
    cut = next(a for a in tables["assets"] if a["name"] == "d")
    posted_id, cut["asset_id"], cut["remote_status"] = cut["asset_id"], None, None
    for job in tables["jobs"]:
        if job["kind"] == "upload" and job["asset_key"] == cut["key"]:
            job.update(state="pending", attempt=1, intent_at=job["updated_at"],
                       detail='{"late_post": true}')  # fmt: skip
    a_file = next(f for f in tables["files"] if f["relpath"] == "a.jpg")
    conn = sqlite3.connect(old)
    for statement in (s for migration in MIGRATIONS[:V9] for s in migration):
        conn.execute(statement)
    conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
    conn.execute(f"PRAGMA user_version={V9}")
    for table, items in tables.items():
        insert(conn, table, items)
    insert(conn, "job_history", [
        {"id": 900, "kind": "file", "state": "done", "folder": a_file["folder"],
         "relpath": "gone.jpg", "reason": "gone", "finished_at": 1.0},
    ])  # fmt: skip
    insert(conn, "departures", [
        {"folder": a_file["folder"], "relpath": "left.jpg", "action": "archive", "dest": "/x",
         "state": "done", "size": 1, "mtime_ns": 2, "inode": 3, "sha256": a_file["sha256"],
         "asset_key": a_file["asset_key"], "created_at": 1.0, "done_at": 2.0},
    ])  # fmt: skip
    insert(conn, "remote_index", [
        {"identity": "sha256:" + "e" * 32, "tagset": '["x"]', "asset_id": "elsewhere",
         "created_at": "2026-01-01T00:00:00Z"},
    ])  # fmt: skip
    insert(conn, "requests", [{"kind": "none", "folder": None, "at": 1.0}])
    conn.commit()
    conn.close()
    return {"d_asset_id": posted_id}


def first_run(start_daemon: Launcher, hot: Path) -> list[dict[str, Any]]:
    """Four files uploaded by a run of today's daemon; the library it left."""
    for seed, name in enumerate(NAMES):
        (hot / name).parent.mkdir(exist_ok=True)
        write_image(hot / name, seed)
    run = start_daemon()
    assets = run.wait_assets(len(NAMES))
    run.stop()
    return assets


def test_a_schema_9_database_migrates_in_place_and_nothing_is_sent_again(
    start_daemon: Launcher, hot: Path, tmp_path: Path
) -> None:
    """Every file, asset, job, intent and history row survives; no tracked file is uploaded
    again, the cut-off upload is reconciled (not re-sent), and new work goes on."""
    library = first_run(start_daemon, hot)
    state = tmp_path / "state.db"
    today = tmp_path / "today.db"
    with sqlite3.connect(state) as src, sqlite3.connect(today) as dst:
        src.backup(dst)
    for path in (state, Path(f"{state}-wal"), Path(f"{state}-shm")):
        path.unlink(missing_ok=True)
    facts = as_schema_9(today, state)
    with sqlite3.connect(state) as conn:
        before = {t: rows(conn, t) for t in
                  ("files", "assets", "jobs", "job_history", "departures", "remote_index",
                   "meta", "requests", "folders")}  # fmt: skip

    store = Store.open(state)
    assert store.schema_version() == SCHEMA_VERSION
    after = {t: store.query(f"SELECT * FROM {t}") for t in before}
    store.close()
    for table in ("job_history", "remote_index", "meta", "requests", "folders"):
        assert after[table] == before[table], table
    assert len(after["files"]) == len(NAMES) == len(before["files"])
    assert len(after["assets"]) == len(NAMES) and len(after["jobs"]) == len(before["jobs"])
    for old_rows, new_rows in ((before["files"], after["files"]), (before["jobs"], after["jobs"]),
                               (before["departures"], after["departures"])):  # fmt: skip
        for old, new in zip(old_rows, new_rows, strict=True):
            key = old["asset_key"] and compact_key(old["asset_key"])
            assert new == {**old, "asset_key": key}
    for old, new in zip(before["assets"], after["assets"], strict=True):
        assert new == {**old, "key": compact_key(old["key"])}
    cut = [j for j in after["jobs"] if j["kind"] == "upload" and j["state"] != "done"]
    assert len(cut) == 1 and cut[0]["state"] == "pending" and cut[0]["intent_at"]

    run = start_daemon()
    assert run.daemon.ctx is not None
    admin = run.daemon.ctx.admin

    def recorded() -> str | None:
        asset = admin.asset(cut[0]["asset_key"])
        return asset["asset_id"] if asset else None

    wait_until(lambda: run.idle() and recorded() is not None, 20, message="cut-off upload")
    assert [a["asset_id"] for a in run.assets()] == [a["asset_id"] for a in library]
    assert recorded() == facts["d_asset_id"]
    write_image(hot / "shoot" / "e.jpg", 99)
    (hot / "a.jpg").unlink()
    wait_until(
        lambda: run.idle() and {a["name"] for a in run.assets()} == {"b", "c", "d", "e"},
        20,
        message="a new file uploaded and a removed one's asset deleted",
    )
    assert len(run.assets()) == len(NAMES)
