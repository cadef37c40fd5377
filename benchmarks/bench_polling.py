"""What polling a hot folder costs, per 10,000 files, against a bare walk-and-stat baseline.

    python benchmarks/bench_polling.py [--files 10000 50000] [--interval 5]

A polled folder (``polling = true``, or ``"auto"`` on a network or FUSE mount) is listed
once per ``poll_interval_seconds``: the watcher builds a snapshot of every entry (one
``lstat`` each, no file is read) and compares it with the previous one. For each tree
size this builds N small files, then times:

* baseline: ``os.walk`` + ``os.lstat`` of every entry (the least any poll must do);
* one poll: a watchdog snapshot with the watcher's own listing and stat calls, plus the
  diff against the previous snapshot (what each polling interval does);

and prints the seconds per poll, the same per 10k files, the ratio to the baseline, the
Python memory the kept snapshot holds (tracemalloc) and the share of one core polling
takes at the given interval. On a network share every ``lstat`` is a round trip, so
the time there is the file count times the share's latency; the memory is the same.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

from watchdog.utils.dirsnapshot import DirectorySnapshot, DirectorySnapshotDiff


def build_tree(root: Path, files: int) -> None:
    per_dir = 500
    for i in range(files):
        d = root / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"img{i:07d}.jpg").write_bytes(b"\xff\xd8\xff" + i.to_bytes(8, "big"))


def walk_and_stat(root: Path) -> int:
    count = 0
    for dirpath, dirs, names in os.walk(root):
        for name in dirs + names:
            os.lstat(os.path.join(dirpath, name))
            count += 1
    return count


def listdir(path: str) -> Iterator[os.DirEntry[str]]:
    with os.scandir(path) as entries:
        yield from entries


def snapshot(root: Path) -> DirectorySnapshot:
    return DirectorySnapshot(str(root), recursive=True, stat=os.lstat, listdir=listdir)


def best_of(runs: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(files: int, interval: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-poll-") as tmp:
        root = Path(tmp) / "hot"
        build_tree(root, files)
        baseline = best_of(3, lambda: walk_and_stat(root))
        previous = snapshot(root)
        poll = best_of(3, lambda: DirectorySnapshotDiff(previous, snapshot(root)))
        tracemalloc.start()
        kept = snapshot(root)
        held, _peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        del kept
        per_10k = poll * 10_000 / files
        print(
            f"{files:>8} files | baseline walk+lstat {baseline:7.3f} s | one poll"
            f" (snapshot+diff) {poll:7.3f} s = {per_10k:6.3f} s per 10k files,"
            f" x{poll / baseline:4.1f} the baseline | snapshot kept {held / 2**20:6.1f} MiB"
            f" = {held / 2**20 * 10_000 / files:5.2f} MiB per 10k | {100 * poll / interval:5.1f}%"
            f" of a core at {interval:g} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--interval", type=float, default=5.0)
    args = parser.parse_args()
    for files in args.files:
        measure(files, args.interval)


if __name__ == "__main__":
    main()
