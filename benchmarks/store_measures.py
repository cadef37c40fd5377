"""Measures of the parts: rescan and its scaling, the queue's hot queries, hashing."""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import DaemonProc, emulator, make_tree, rss_kb, write_config
from syncd import hashing
from syncd.config import FolderConfig
from syncd.ledger import Ledger
from syncd.model import JobKind
from syncd.safepath import Root
from syncd.store import Store

Result = dict[str, float]
FILE_COLS = "folder, relpath, size, mtime_ns, inode, dev, sha256, asset_key"
JOB_COLS = "kind, state, attempt, folder, relpath, not_before, created_at, updated_at, detail"


def _insert(store: Store, sql: str, rows: list[tuple[object, ...]]) -> None:
    for i in range(0, len(rows), 50_000):
        with store.write() as conn:
            conn.executemany(sql, rows[i : i + 50_000])


def track_tree(db: Path, root: Path, extra: int) -> None:
    """Record every file under root as tracked (as a finished first sync leaves it), plus
    ``extra`` synthetic rows in folders that are not configured (a sparse million)."""
    store = Store.open(db)
    rows: list[tuple[object, ...]] = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            st = os.stat(full)
            rel = os.path.relpath(full, root)
            rows.append((str(root), rel, st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev))
    rows += [(f"/synthetic/f{i // 100_000}", f"d{i // 500:05d}/IMG_{i:07d}.jpg", 700, i, i, 0)
             for i in range(extra)]  # fmt: skip
    # Stored as syncd stores them: a 32-byte hash and a 22-character asset key.
    sql = f"INSERT INTO files ({FILE_COLS}) VALUES (?, ?, ?, ?, ?, ?, X'{'00' * 32}', '{'k' * 22}')"
    _insert(store, sql, rows)
    store.close()


def find_baseline(root: Path) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        subprocess.run(["find", str(root), "-printf", "%s %T@ %i\n"], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        best = min(best, time.perf_counter() - start)
    return best


def scan_proc(db: Path, root: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.scan_proc", str(db), str(root)],
        check=True, capture_output=True, text=True, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def daemon_idle(base: Path, db: Path, root: Path) -> dict[str, float]:
    """Start to READY and idle RSS of the daemon over a tracked database.

    READY is the median of three starts, with syncd's bytecode (as installed) and, for
    comparison with figures taken before the benchmark made it, compiled from source.
    """
    with emulator(base / "emu") as url:
        conf = write_config(base, url, root, db, settle=0.3, conc=4)
        daemon = DaemonProc(conf, base)
        daemon.start()
        ready = [daemon.wait_ready()]
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
                    row = conn.execute("SELECT last_scan FROM folders").fetchone()
                if row and row[0]:
                    break
            except sqlite3.Error:
                pass
            time.sleep(0.1)
        time.sleep(1.0)
        rss = rss_kb(daemon.pid)
        daemon.stop()
        ready += [_ready_once(conf, base) for _ in range(2)]
        source = [_ready_once(conf, base, bytecode=False) for _ in range(3)]
    return {
        "start_to_ready_s": statistics.median(ready),
        "start_to_ready_s_from_source": statistics.median(source),
        "rss_idle_mb": rss / 1024,
    }


def _ready_once(conf: Path, base: Path, *, bytecode: bool = True) -> float:
    """One more start over the same state: seconds to READY (then a clean stop)."""
    daemon = DaemonProc(conf, base, bytecode=bytecode)
    daemon.start()
    try:
        return daemon.wait_ready()
    finally:
        daemon.stop()


def scaling(base: Path, tracked: list[int], real_cap: int) -> dict[str, Result]:
    """Rescan time vs find, and the daemon's idle RSS, at each count of tracked files."""
    out: dict[str, Result] = {}
    trees: dict[int, Path] = {}
    for n in tracked:
        real = min(n, real_cap)
        if real not in trees:
            trees[real] = base / f"tree{real}"
            make_tree(trees[real], real, salt=5)
        root = trees[real]
        db = base / f"state{n}.db"
        track_tree(db, root, n - real)
        scan = scan_proc(db, root)
        find = find_baseline(root)
        work = base / f"daemon{n}"
        work.mkdir()
        idle = daemon_idle(work, db, root)
        out[f"tracked_{n}"] = {
            "real_files": real,
            "rescan_s": scan["seconds"],
            "find_s": find,
            "ratio_rescan_vs_find": scan["seconds"] / find,
            "rescan_rss_peak_mb": scan["rss_peak_mb"],
            "rescan_changes_found": scan["changes"],
            **idle,
        }
    return out


def _per_call(fn: Callable[[], object], budget: float = 2.0, most: int = 200) -> float:
    """Mean milliseconds per call, over at most ``most`` calls or ``budget`` seconds."""
    calls, start = 0, time.perf_counter()
    while calls < most and (calls < 3 or time.perf_counter() - start < budget):
        fn()
        calls += 1
    return (time.perf_counter() - start) / calls * 1000


def queue_costs(base: Path, queued: int) -> Result:
    """Claim and lookup cost with ``queued`` pending file jobs and 400 pending uploads."""
    db = base / f"queue{queued}.db"
    store = Store.open(db)
    now = time.time()
    rows: list[tuple[object, ...]] = [
        ("file", "pending", 0, "/q", f"d{i // 500:05d}/IMG_{i:07d}.jpg", 0.0, now, now, "{}")
        for i in range(queued)
    ]
    rows += [("upload", "pending", 0, "/q", f"u/{i}.jpg", 0.0, now, now, "{}") for i in range(400)]
    _insert(store, f"INSERT INTO jobs ({JOB_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    folder = FolderConfig(path=Path("/q"))
    ledger = Ledger(store, {"/q": folder})
    mid = f"d{queued // 1000:05d}/IMG_{queued // 2:07d}.jpg"
    out = {
        "claim_upload_ms": _per_call(lambda: store.claim([JobKind.UPLOAD]), most=150),
        "claim_file_ms": _per_call(lambda: store.claim([JobKind.FILE]), most=150),
        "next_due_api_ms": _per_call(lambda: store.next_due([JobKind.UPLOAD, JobKind.DELETE])),
        "next_due_file_ms": _per_call(lambda: store.next_due([JobKind.FILE])),
        "enqueue_existing_path_ms": _per_call(lambda: ledger.enqueue_paths("/q", [mid]), most=100),
        "get_file_ms": _per_call(lambda: store.get_file("/q", mid)),
    }
    store.close()
    return out


def queue_scaling(base: Path, small: int, large: int) -> dict[str, Result]:
    a, b = queue_costs(base, small), queue_costs(base, large)
    ratio = {k: b[k] / a[k] for k in a}
    return {f"queued_{small}": a, f"queued_{large}": b, "ratio_large_vs_small": ratio}


def hashing_speed(base: Path, megabytes: int) -> Result:
    """syncd's streamed SHA-256 against ``openssl dgst -sha256`` on the same file."""
    path = base / "big.bin"
    block = os.urandom(4 << 20)
    with open(path, "wb") as out:
        for _ in range(megabytes // 4):
            out.write(block)
    ours = theirs = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        with Root(base) as root:  # as the daemon reads: beneath the held root
            hashing.sha256_file(root, path.name)
        ours = min(ours, time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(["openssl", "dgst", "-sha256", str(path)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        theirs = min(theirs, time.perf_counter() - start)
    path.unlink()
    return {
        "megabytes": megabytes,
        "syncd_mb_per_s": megabytes / ours,
        "openssl_mb_per_s": megabytes / theirs,
        "ratio_syncd_vs_openssl": theirs / ours,
    }
