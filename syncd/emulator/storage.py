"""The emulated library on disk, so that a restart on the same data dir keeps it.

Layout of the data dir::

    library.db                  records (SQLite, WAL); tags also in their own table
    files/<asset_id>.<ext>      the uploaded bytes
    thumbnails/<asset_id>.png   what ``thumbnail_url`` serves

``processing`` becomes ``ready`` lazily: each record carries the moment it is due, and
every read first promotes what is due. No timer thread, and a restarted emulator finishes
the processing of uploads it had accepted before.

One connection behind one lock: the emulator is a test fixture, and serialised writes
are the simplest way to be obviously right under concurrent requests.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .images import Decoded

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    asset_id TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL,
    tags TEXT NOT NULL,
    format TEXT NOT NULL,
    width INTEGER,
    height INTEGER,
    file_size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    status TEXT NOT NULL,
    ready_at TEXT NOT NULL,
    outcome TEXT NOT NULL DEFAULT 'ready',
    failure_reason TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS assets_due ON assets (status, ready_at);
CREATE TABLE IF NOT EXISTS asset_tags (
    tag TEXT NOT NULL,
    asset_id TEXT NOT NULL,
    PRIMARY KEY (tag, asset_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS asset_tags_by_asset ON asset_tags (asset_id);
"""
COLUMNS = (
    "asset_id, name, tags, format, width, height, file_size, sha256, status, created_at,"
    " updated_at, failure_reason"
)
#: Why processing fails, when the model says it does (drawn with the seeded generator).
FAILURE_REASONS = (
    "image too small for generation (under 256 px a side)",
    "no product found in the image",
    "image is mostly blank",
)


def now_iso(moment: datetime | None = None) -> str:
    """UTC, microseconds, ``Z``: fixed width, so the text sorts as the time does."""
    moment = moment or datetime.now(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Library:
    """The records and files of one data dir; every method is safe from any thread."""

    def __init__(
        self,
        data_dir: Path,
        *,
        processing_seconds: float = 0.5,
        failure_rate: float = 0.0,
        failure_reasons: tuple[str, ...] = FAILURE_REASONS,
        seed: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.processing = Processing(processing_seconds, failure_rate, failure_reasons, seed)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        for sub in ("files", "thumbnails"):
            (data_dir / sub).mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        """Open on first use (and again after ``close``), so inspection works at any time."""
        with self._lock:
            if self._db is None:
                self._db = self._open()
            yield self._db

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self.data_dir / "library.db", check_same_thread=False, isolation_level=None
        )
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        columns = {row["name"] for row in db.execute("PRAGMA table_info(assets)")}
        for name, kind in (
            ("outcome", "TEXT NOT NULL DEFAULT 'ready'"),
            ("failure_reason", "TEXT"),
        ):
            if name not in columns:  # a data dir from before the processing model
                db.execute(f"ALTER TABLE assets ADD COLUMN {name} {kind}")  # fixed names
        return db

    @property
    def processing_seconds(self) -> float:
        return self.processing.seconds

    def file_path(self, asset_id: str, fmt: str) -> Path:
        return self.data_dir / "files" / f"{asset_id}.{fmt}"

    def thumbnail_path(self, asset_id: str) -> Path:
        return self.data_dir / "thumbnails" / f"{asset_id}.png"

    def add(
        self, name: str, tags: list[str], fmt: str, data: bytes, image: Decoded
    ) -> dict[str, Any]:
        """Store the bytes first, then the record: a crash between leaves only an orphan file."""
        asset_id = "ast_" + secrets.token_hex(12)
        _write_atomically(self.file_path(asset_id, fmt), data)
        _write_atomically(self.thumbnail_path(asset_id), image.thumbnail_png)
        created = datetime.now(UTC)
        outcome, reason = self.processing.draw()
        ready = created + timedelta(seconds=self.processing.seconds)
        status = outcome if self.processing.seconds <= 0 else "processing"
        row = {
            "asset_id": asset_id, "name": name, "tags": json.dumps(tags), "format": fmt,
            "width": image.width, "height": image.height, "file_size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "status": status,
            "ready_at": now_iso(ready), "outcome": outcome, "failure_reason": reason,
            "created_at": now_iso(created), "updated_at": now_iso(created),
        }  # fmt: skip
        with self._conn() as db, _transaction(db):
            db.execute(
                f"INSERT INTO assets ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",  # noqa: S608 - fixed column names
                tuple(row.values()),
            )
            db.executemany(
                "INSERT OR IGNORE INTO asset_tags (tag, asset_id) VALUES (?, ?)",
                [(tag, asset_id) for tag in tags],
            )
        del row["ready_at"], row["outcome"]
        return _record_dict({**row, "tags": list(tags)})

    def get(self, asset_id: str) -> dict[str, Any] | None:
        with self._conn() as db:
            _promote(db)
            row = db.execute(
                f"SELECT {COLUMNS} FROM assets WHERE asset_id = ?",  # noqa: S608 - fixed columns
                (asset_id,),
            ).fetchone()
        return None if row is None else _record(row)

    def page(
        self, *, limit: int, offset: int, status: str | None, tags: list[str]
    ) -> tuple[list[dict[str, Any]], int]:
        """One page in upload order, and the count of all that match."""
        where, args = _filters(status, tags)
        with self._conn() as db:
            _promote(db)
            total = db.execute(f"SELECT COUNT(*) FROM assets {where}", args).fetchone()[0]  # noqa: S608 - built from fixed fragments
            rows = db.execute(
                f"SELECT {COLUMNS} FROM assets {where} ORDER BY seq LIMIT ? OFFSET ?",  # noqa: S608 - built from fixed fragments
                (*args, limit, offset),
            ).fetchall()
        return [_record(r) for r in rows], int(total)

    def all(self) -> list[dict[str, Any]]:
        with self._conn() as db:
            _promote(db)
            rows = db.execute(f"SELECT {COLUMNS} FROM assets ORDER BY seq").fetchall()  # noqa: S608 - fixed columns
        return [_record(r) for r in rows]

    def delete(self, asset_id: str) -> bool:
        with self._conn() as db, _transaction(db):
            row = db.execute("SELECT format FROM assets WHERE asset_id = ?", (asset_id,)).fetchone()
            db.execute("DELETE FROM assets WHERE asset_id = ?", (asset_id,))
            db.execute("DELETE FROM asset_tags WHERE asset_id = ?", (asset_id,))
        if row is None:
            return False
        self.file_path(asset_id, row["format"]).unlink(missing_ok=True)
        self.thumbnail_path(asset_id).unlink(missing_ok=True)
        return True

    def reset(self) -> None:
        with self._conn() as db, _transaction(db):
            db.execute("DELETE FROM assets")
            db.execute("DELETE FROM asset_tags")
        for sub in ("files", "thumbnails"):
            for path in (self.data_dir / sub).iterdir():
                path.unlink(missing_ok=True)


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _promote(db: sqlite3.Connection) -> None:
    db.execute(
        "UPDATE assets SET status = outcome, updated_at = ready_at "
        "WHERE status = 'processing' AND ready_at <= ?",
        (now_iso(),),
    )


def _filters(status: str | None, tags: list[str]) -> tuple[str, tuple[str, ...]]:
    """All-of for several tags: each one must be on the asset."""
    clauses: list[str] = []
    args: list[str] = []
    if status is not None:
        clauses.append("status = ?")
        args.append(status)
    for tag in tags:
        clauses.append("asset_id IN (SELECT asset_id FROM asset_tags WHERE tag = ?)")
        args.append(tag)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(args)


def _record(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(row)
    record["tags"] = json.loads(record["tags"])
    return _record_dict(record)


def _record_dict(record: dict[str, Any]) -> dict[str, Any]:
    """The reason of a failure is told only once the asset has failed."""
    if record.get("status") != "failed":
        record["failure_reason"] = None
    return record


class Processing:
    """The processing model: how long until an upload settles, and how often it fails.

    The outcome is drawn at upload time from one seeded generator, so a seed and an
    upload order replay the same failures.
    """

    def __init__(
        self, seconds: float, failure_rate: float, reasons: tuple[str, ...], seed: int | None
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be between 0 and 1, not {failure_rate!r}")
        if not reasons:
            raise ValueError("failure_reasons must not be empty")
        self.seconds = seconds
        self.failure_rate = failure_rate
        self.reasons = reasons
        self._random = random.Random(seed)  # noqa: S311 - a replayable test model
        self._lock = threading.Lock()

    def draw(self) -> tuple[str, str | None]:
        """("ready", None) or ("failed", reason)."""
        with self._lock:
            if self.failure_rate and self._random.random() < self.failure_rate:
                return "failed", self._random.choice(self.reasons)
        return "ready", None

    def configure(
        self,
        *,
        seconds: float | None = None,
        failure_rate: float | None = None,
        reasons: tuple[str, ...] | None = None,
    ) -> None:
        """Change the model at run time (tests, the inspection API)."""
        with self._lock:
            if seconds is not None:
                self.seconds = seconds
            if failure_rate is not None:
                if not 0.0 <= failure_rate <= 1.0:
                    raise ValueError("failure_rate must be between 0 and 1")
                self.failure_rate = failure_rate
            if reasons:
                self.reasons = reasons

    def settings(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "failure_rate": self.failure_rate,
                "failure_reasons": list(self.reasons)}  # fmt: skip


def _write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    partial.replace(path)
