"""Rescan cost of a large, unchanged library, against a bare walk-and-stat baseline.

    python benchmarks/bench_scan.py [--files 200000]

Builds a tree of N small files, records them all in a state database as tracked (what a
first sync would leave), then times:

* baseline: ``os.walk`` + ``os.stat`` of every file (the least any scan must do);
* syncd: a full ``Sweeper.scan`` (sorted walk, merge-join with the store, nothing queued);

and prints both, their ratio, the jobs the scan queued (must be 0: unchanged files are
never re-read) and the peak Python memory of each (tracemalloc), which must stay flat as
N grows (the scan streams).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from pathlib import Path

from syncd.api import AssetsClient
from syncd.breaker import Breaker
from syncd.config import FolderConfig
from syncd.context import Context
from syncd.ledger import Ledger
from syncd.store import Store
from syncd.sweep import Sweeper
from syncd.tags import Rules


def build_tree(root: Path, files: int) -> None:
    per_dir = 500
    for i in range(files):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"img{i:07d}.jpg").write_bytes(b"\xff\xd8\xff" + i.to_bytes(8, "big"))


def track_all(store: Store, root: Path) -> None:
    """Record every file as tracked, in batches, as a finished first sync would."""
    key = str(root)
    batch = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            st = os.stat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            batch.append((key, rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, "0" * 64))
            if len(batch) >= 10_000:
                insert(store, batch)
                batch = []
    insert(store, batch)


def insert(store: Store, rows: list[tuple[object, ...]]) -> None:
    with store.write() as conn:
        conn.executemany(
            "INSERT INTO files (folder, relpath, size, mtime_ns, inode, dev, sha256, asset_key)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 'k')",
            rows,
        )


def baseline(root: Path) -> int:
    count = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            os.stat(os.path.join(dirpath, name))
            count += 1
    return count


def measure(label: str, fn):  # type: ignore[no-untyped-def]
    """Time a run, then run again under tracemalloc for its peak memory."""
    start = time.perf_counter()
    result = fn()
    elapsed = time.perf_counter() - start
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(f"{label:<34} {elapsed:8.2f} s   peak {peak / 1e6:7.1f} MB")
    return elapsed, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "hot"
        t0 = time.perf_counter()
        build_tree(root, args.files)
        store = Store.open(Path(tmp) / "state.db")
        track_all(store, root)
        print(f"built and tracked {args.files} files in {time.perf_counter() - t0:.1f} s")
        folder = FolderConfig(path=root)
        ledger = Ledger(store, {folder.key: folder})
        client = AssetsClient("http://127.0.0.1:9", lambda: "unused")
        ctx = Context(
            ledger,
            client,
            {folder.key: folder},
            {folder.key: Rules(folder.include, folder.exclude)},
            Breaker(),
            clock=time.time,
        )
        sweeper = Sweeper(ctx)
        base, _ = measure("baseline: os.walk + stat", lambda: baseline(root))
        ours, report = measure("syncd: full rescan (merge-join)", lambda: sweeper.scan(folder))
        queued = ledger.outstanding()
        print(
            f"ratio syncd / baseline: {ours / base:.2f}x; "
            f"{args.files / ours:,.0f} files/s; jobs queued: {queued} "
            f"(new {report.new}, changed {report.changed}, gone {report.gone})"
        )
        client.close()
        store.close()


if __name__ == "__main__":
    main()
