"""State bytes per tracked file, at rest, for a state built by the store's own code.

The burst measures the state a real daemon leaves after 2,000 files; this builds the
state of any number of files through the same ledger transactions the workers run
(event, file claim, link, upload claim, upload outcome), then prunes and compacts it
as :func:`benchmarks.common.state_at_rest` does. At 100k files the history's bound
shows: it holds the newest 10,000 finished jobs, not two per file.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from pathlib import Path

from benchmarks.common import PER_DIR, state_at_rest
from syncd.config import FolderConfig
from syncd.ledger import Ledger
from syncd.model import FileStat, JobKind, RemoteAsset
from syncd.store import Store
from syncd.tags import asset_name, folder_tags

Result = dict[str, float]
BATCH = 1000
#: A hot folder's path as people name theirs (it is stored with every tracked file).
FOLDER = "/srv/syncd/hot/product-photos/studio-a"


def _stat(i: int) -> FileStat:
    return FileStat(size=40_000 + i % 9_000, mtime_ns=1_760_000_000_000_000_000 + i, inode=i + 7)


def _relpath(i: int) -> str:
    return f"d{i // PER_DIR:04d}/IMG_{i:07d}.jpg"


def _track(store: Store, ledger: Ledger, start: int, count: int) -> None:
    """Files ``start..start+count`` through the workers' transactions, to uploaded."""
    relpaths = {_relpath(i): i for i in range(start, start + count)}
    ledger.enqueue_paths(FOLDER, relpaths)
    claimed = store.claim_batch([JobKind.FILE], count, now=time.time() + 60)
    with store.write():  # one commit for the batch: a builder, not a measure of speed
        for job in claimed:
            assert job.relpath is not None
            i = relpaths[job.relpath]
            sha = hashlib.sha256(i.to_bytes(8, "big")).hexdigest()
            tags = folder_tags(job.relpath, ["bench"])
            ledger.file_linked(job, _stat(i), sha, tags, asset_name(job.relpath))
    uploads = store.claim_batch([JobKind.UPLOAD], count, now=time.time() + 60)
    with store.write():
        for job in uploads:
            assert job.relpath is not None
            remote = RemoteAsset(
                asset_id="ast_" + secrets.token_hex(12),
                name=asset_name(job.relpath),
                status="ready",
                tags=(),
                created_at="2026-12-01T00:00:00Z",
                file_size=_stat(relpaths[job.relpath]).size,
            )
            ledger.upload_done(job, remote)


def build(db: Path, files: int) -> None:
    """A state database tracking ``files`` uploaded files of one hot folder."""
    store = Store.open(db)
    store.writer().execute("PRAGMA synchronous=OFF")  # the builder's commits need no fsync
    ledger = Ledger(store, {FOLDER: FolderConfig(path=Path(FOLDER), tags=("bench",))})
    for start in range(0, files, BATCH):
        _track(store, ledger, start, min(BATCH, files - start))
    store.close()


def state_size(base: Path, counts: list[int]) -> dict[str, Result]:
    """Bytes per tracked file at rest (total and per table and index) at each count."""
    out: dict[str, Result] = {}
    for n in counts:
        db = base / f"state{n}.db"
        start = time.perf_counter()
        build(db, n)
        rest = state_at_rest(db)
        out[f"tracked_{n}"] = {**rest, "build_s": time.perf_counter() - start}
    return out
