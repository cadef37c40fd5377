"""kill -9 inside group commits, over a 2,000-file burst: nothing lost, nothing twice.

A kill is sent only while the daemon holds SQLite's WAL write lock, that is while a
batch of records is open (its records being written, or its COMMIT on its way to the
disk). The lock is read with ``F_GETLK`` on the ``-shm`` file, which observes without
taking it.
"""

from __future__ import annotations

import fcntl
import os
import random
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from syncd.emulator import EmulatorServer
from tests.integration.test_crash import alive, expected_pairs, library_pairs, start
from tests.support import config_text, image_bytes, wait_until, write_private

FILES = 2000
KILLS = 6
#: SQLite's WAL write lock: byte 120 of the -shm file (WALINDEX_LOCK_OFFSET + WAL_WRITE_LOCK).
WAL_WRITE_LOCK = 120


def batch_open(shm: Path) -> bool:
    """Whether another process holds the WAL write lock (a write transaction is open)."""
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        query = struct.pack("@hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, WAL_WRITE_LOCK, 1, 0)
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, query)
    finally:
        os.close(fd)
    return struct.unpack("@hhqqi4x", answer)[0] != fcntl.F_UNLCK


def kill_inside_a_batch(
    proc: subprocess.Popen[bytes], shm: Path, log: Path, rng: random.Random
) -> None:
    """SIGKILL at a random moment inside a batch: seen open, and after a random 0-20 ms
    (that batch or a later one: records being written, or a COMMIT running) open again."""
    deadline = time.monotonic() + 30
    while True:
        assert alive(proc, log)
        assert time.monotonic() < deadline, "no write transaction seen open in 30 s"
        if batch_open(shm):
            time.sleep(rng.random() * 0.02)  # a random point, not a batch's first moment
            if batch_open(shm):
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_kill_9_inside_group_commits_loses_and_duplicates_nothing(
    tmp_path: Path, emulator: EmulatorServer
) -> None:
    """2,000 files, six SIGKILLs each landing while a group commit is open: the library
    ends with exactly one asset per (content, tags)."""
    rng = random.Random(int(os.environ.get("SYNCD_CRASH_SEED", "20261201")))
    card, hot = tmp_path / "card", tmp_path / "hot"
    for i in range(FILES):
        path = card / f"d{i % 20:02d}" / f"IMG_{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(image_bytes(10_000 + i))
    hot.mkdir()
    conf = tmp_path / "syncd.toml"
    write_private(
        conf,
        config_text(
            emulator.base_url,
            [hot],
            tmp_path / "state.db",
            tags=["crash"],
            settle=0.0,
            concurrency=16,
        ),
    )
    log, shm = tmp_path / "daemon.log", tmp_path / "state.db-shm"
    proc = start(conf, log)
    wait_until(lambda: alive(proc, log) and shm.exists(), 30, message="the daemon's database")
    for path in sorted(card.rglob("*.jpg")):  # the card dump, while the daemon runs
        dest = hot / path.relative_to(card)
        dest.parent.mkdir(exist_ok=True)
        os.link(path, dest)
    want = expected_pairs(hot)
    targets = sorted(rng.sample(range(50, len(want) - 100), KILLS))
    for target in targets:
        wait_until(
            lambda t=target, p=proc: alive(p, log) and sum(library_pairs(emulator).values()) >= t,
            120,
            interval=0.01,
            message=f"{target} assets before a kill",
        )
        kill_inside_a_batch(proc, shm, log, rng)
        proc = start(conf, log)
    try:
        wait_until(
            lambda: alive(proc, log) and set(library_pairs(emulator)) == set(want),
            120,
            interval=0.2,
            message="the library holding every (content, tags) pair",
        )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    got = library_pairs(emulator)
    duplicates = sum(n - 1 for n in got.values() if n > 1)
    missing = len(set(want) - set(got))
    extra = len(set(got) - set(want))
    requests = emulator.stats()["requests"]
    posts = requests.get("POST /v1/training-asset", 0)
    deletes = requests.get("DELETE /v1/assets/{id}", 0)
    print(
        f"\ngroup-commit crash test: kills={KILLS} at {targets} files={FILES} posts={posts} "
        f"deletes={deletes} duplicates={duplicates} missing={missing} extra={extra}"
    )
    assert (duplicates, missing, extra) == (0, 0, 0)
    # Not even healed: no second copy was ever made (a POST that got through before a
    # kill was found by the look before the next attempt), so none had to be deleted. A
    # POST cut off before the server stored it is sent again: posts may exceed pairs.
    assert deletes == 0
