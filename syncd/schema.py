"""The state database's schema, as an ordered list of migrations.

Each migration is applied once, in its own ``BEGIN IMMEDIATE`` transaction, and bumps
``PRAGMA user_version``; a database from any earlier release is carried forward without
losing its library. Append new migrations; never edit a released one.

Tables:

* ``files``: every tracked file (folder, relpath) with the stat and hash it had when
  last read, and the asset (content, tags) it stands for; ``problem`` when it cannot be
  uploaded, so a bad file is not re-read by every scan.
* ``assets``: one row per (content hash, tag set) syncd knows, with the remote
  ``asset_id`` once uploaded. Reference counts are a query over ``files.asset_key``.
  The key is a 22-character digest of the asset's parts (``model.asset_key``); the
  parts themselves (hash, tags, name) are the row's columns.
* Content hashes are stored as 32 bytes (declared :data:`SHA_TYPE`), read as hex.
* ``jobs``: the durable queue; ``state`` follows ``model.TRANSITIONS``.
* ``folders``: per hot folder, the device its root was on and its health.
* ``meta``: key/value facts (the API key rejected since, last upload, ...).
* ``job_history``: finished jobs in a compact form (no indexes), moved out of ``jobs``
  by the hourly prune and kept by count as well as by age; a plain success (a file
  linked, an asset uploaded) is not copied there (``admin.prune``).
* ``departures``: files leaving a hot folder after their upload (``after_upload``):
  ``moving`` is recorded before the file is touched, ``done`` once it is in one place.
* ``remote_index``: assets found in the library by their identity tag before this
  database knew them; a file whose (content, tags) is there is linked, not uploaded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from syncd.model import compact_key

#: Marks a SQLite file as syncd's (``PRAGMA application_id``): 'sYnc'.
APPLICATION_ID = 0x73596E63
#: The declared type of a content-hash column: 32 bytes on disk (BLOB affinity), read
#: back as hex by the store's connections (:func:`sha_hex`).
SHA_TYPE = "HEXBLOB"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the first release
    (
        """CREATE TABLE files (
            folder TEXT NOT NULL,
            relpath TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            dev INTEGER NOT NULL DEFAULT 0,
            sha256 TEXT,
            asset_key TEXT,
            PRIMARY KEY (folder, relpath)
        )""",
        "CREATE INDEX files_asset ON files(asset_key)",
        "CREATE INDEX files_inode ON files(inode)",
        """CREATE TABLE assets (
            key TEXT PRIMARY KEY,
            sha256 TEXT NOT NULL,
            tags TEXT NOT NULL,
            name TEXT NOT NULL,
            asset_id TEXT,
            remote_status TEXT,
            uploaded_at REAL
        )""",
        "CREATE INDEX assets_asset_id ON assets(asset_id)",
        """CREATE TABLE jobs (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0,
            folder TEXT NOT NULL,
            relpath TEXT,
            asset_key TEXT,
            not_before REAL NOT NULL DEFAULT 0,
            reason TEXT,
            intent_at REAL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            detail TEXT NOT NULL DEFAULT '{}'
        )""",
        "CREATE INDEX jobs_due ON jobs(state, not_before)",
        "CREATE INDEX jobs_path ON jobs(folder, relpath) WHERE kind = 'file'",
        "CREATE INDEX jobs_asset ON jobs(asset_key, kind)",
        """CREATE TABLE folders (
            key TEXT PRIMARY KEY,
            dev INTEGER,
            health TEXT NOT NULL DEFAULT 'unknown',
            reason TEXT,
            last_scan REAL
        )""",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
    ),
    # 2: bad files are remembered (no re-read per scan); adapted uploads are recorded;
    #    a folder can be approved to mirror deletions from an empty root or a new device.
    (
        "ALTER TABLE files ADD COLUMN problem TEXT",
        "ALTER TABLE assets ADD COLUMN adapted TEXT",
        "ALTER TABLE folders ADD COLUMN approved INTEGER NOT NULL DEFAULT 0",
    ),
    # 3: what the library already holds, read back by identity tag when a database is
    #    new (a first start, or one that replaced a lost database), so nothing is sent twice.
    (
        """CREATE TABLE remote_index (
            identity TEXT NOT NULL,
            tagset TEXT NOT NULL,
            asset_id TEXT NOT NULL,
            PRIMARY KEY (identity, tagset)
        )""",
    ),
    # 4: how each folder is watched right now (inotify, or polling after the watch limit).
    ("ALTER TABLE folders ADD COLUMN watch_mode TEXT",),
    # 5: claims and due-time lookups seek one (kind, state) run in not_before order, so
    #    their cost stays flat however many jobs of other kinds wait; finished jobs are
    #    kept, compacted and without indexes, in a history of their own.
    (
        "CREATE INDEX IF NOT EXISTS jobs_claim ON jobs(kind, state, not_before)",
        """CREATE TABLE IF NOT EXISTS job_history (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            state TEXT NOT NULL,
            folder TEXT NOT NULL,
            relpath TEXT,
            reason TEXT,
            finished_at REAL NOT NULL
        )""",
    ),
    # 6: the inode of each folder's root, recorded when it is first seen: a root that later
    #    resolves to another folder (replaced, or a symlink put in its place) is refused.
    #    ``replaced`` marks such a root until it returns or an operator accepts it.
    (
        "ALTER TABLE folders ADD COLUMN ino INTEGER",
        "ALTER TABLE folders ADD COLUMN replaced INTEGER NOT NULL DEFAULT 0",
    ),
    # 7: when each indexed asset was made, so that of two copies of one (content, tags)
    #    found by a rebuild the oldest is kept and the other removed.
    ("ALTER TABLE remote_index ADD COLUMN created_at TEXT NOT NULL DEFAULT ''",),
    # 8: the asset's life after the upload: processing followed to ready or failed (with
    #    the server's reason), one re-upload of a failed asset, the size the library holds;
    #    and files leaving the hot folder once uploaded (archive or remove), each move
    #    recorded before it is made so a crash at any point can be completed.
    (
        "ALTER TABLE assets ADD COLUMN remote_reason TEXT",
        "ALTER TABLE assets ADD COLUMN remote_next REAL",
        "ALTER TABLE assets ADD COLUMN remote_tries INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE assets ADD COLUMN remote_size INTEGER",
        "ALTER TABLE assets ADD COLUMN replaces TEXT",
        "ALTER TABLE assets ADD COLUMN reuploads INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX assets_remote ON assets(remote_status)",
        """CREATE TABLE departures (
            id INTEGER PRIMARY KEY,
            folder TEXT NOT NULL,
            relpath TEXT NOT NULL,
            action TEXT NOT NULL,
            dest TEXT,
            state TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            asset_key TEXT NOT NULL,
            reason TEXT,
            created_at REAL NOT NULL,
            done_at REAL
        )""",
        "CREATE INDEX departures_open ON departures(state, folder, relpath)",
        "CREATE INDEX departures_done ON departures(done_at)",
        # why the folder is watched as it is (polling = "auto" decides by filesystem type)
        "ALTER TABLE folders ADD COLUMN watch_reason TEXT",
    ),
    # 9: requests an operator leaves for the running daemon (``syncd rescan``): the
    #    command writes a row, the daemon takes and deletes it; nobody else scans.
    (
        """CREATE TABLE IF NOT EXISTS requests (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            folder TEXT,
            at REAL NOT NULL
        )""",
    ),
    # 10: a smaller state: a compact asset key (22 characters, a digest of the JSON text the
    # key was; see ``model.compact_key``) in files, assets, jobs and departures, and the
    # content hash as 32 bytes in files and assets (declared ``HEXBLOB``). Both tables are
    # rebuilt (a column's type cannot be altered), in this one transaction.
    (
        """CREATE TABLE files_compact (
            folder TEXT NOT NULL,
            relpath TEXT NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            dev INTEGER NOT NULL DEFAULT 0,
            sha256 HEXBLOB,
            asset_key TEXT,
            problem TEXT,
            PRIMARY KEY (folder, relpath)
        )""",
        """INSERT INTO files_compact (folder, relpath, size, mtime_ns, inode, dev, sha256,
            asset_key, problem)
            SELECT folder, relpath, size, mtime_ns, inode, dev, syncd_sha_blob(sha256),
            syncd_compact_key(asset_key), problem FROM files""",
        "DROP TABLE files",
        "ALTER TABLE files_compact RENAME TO files",
        "CREATE INDEX files_asset ON files(asset_key)",
        "CREATE INDEX files_inode ON files(inode)",
        """CREATE TABLE assets_compact (
            key TEXT PRIMARY KEY,
            sha256 HEXBLOB NOT NULL,
            tags TEXT NOT NULL,
            name TEXT NOT NULL,
            asset_id TEXT,
            remote_status TEXT,
            uploaded_at REAL,
            adapted TEXT,
            remote_reason TEXT,
            remote_next REAL,
            remote_tries INTEGER NOT NULL DEFAULT 0,
            remote_size INTEGER,
            replaces TEXT,
            reuploads INTEGER NOT NULL DEFAULT 0
        )""",
        """INSERT INTO assets_compact (key, sha256, tags, name, asset_id, remote_status,
            uploaded_at, adapted, remote_reason, remote_next, remote_tries, remote_size,
            replaces, reuploads)
            SELECT syncd_compact_key(key), syncd_sha_blob(sha256), tags, name, asset_id,
            remote_status, uploaded_at, adapted, remote_reason, remote_next, remote_tries,
            remote_size, replaces, reuploads FROM assets""",
        "DROP TABLE assets",
        "ALTER TABLE assets_compact RENAME TO assets",
        "CREATE INDEX assets_asset_id ON assets(asset_id)",
        "CREATE INDEX assets_remote ON assets(remote_status)",
        "UPDATE jobs SET asset_key = syncd_compact_key(asset_key) WHERE asset_key IS NOT NULL",
        "UPDATE departures SET asset_key = syncd_compact_key(asset_key)",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)


def sha_blob(sha256: str | None) -> bytes | None:
    """A content hash as stored: its 32 bytes (``None`` stays ``None``)."""
    return None if sha256 is None else bytes.fromhex(sha256)


def sha_hex(stored: bytes) -> str:
    """A stored content hash as the code speaks it: 64 hex digits.

    The store's connections call this for every column declared :data:`SHA_TYPE`. A
    value written as text (by hand, or by an older tool) reads back as it was.
    """
    return stored.hex() if len(stored) == 32 else stored.decode()


def _migrate_sha(value: str | bytes | None) -> str | bytes | None:
    """A hex hash to its 32 bytes; anything else (not a hash) is kept as it is."""
    if isinstance(value, str) and len(value) == 64:
        try:
            return bytes.fromhex(value)
        except ValueError:
            return value
    return value


def _migrate_key(value: str | None) -> str | None:
    """An asset key written as the JSON text of its parts, to its compact form."""
    return None if value is None else compact_key(value)


#: Functions the migrations' SQL calls, registered on the connection that migrates
#: (Python where SQL has no word for it: a digest, a hex decode). Like the migrations,
#: what a released one computes never changes.
FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "syncd_sha_blob": _migrate_sha,
    "syncd_compact_key": _migrate_key,
}
