"""kill -9 at random moments, under API faults: exactly one asset per (content, tags)."""

from __future__ import annotations

import collections
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from syncd.emulator import EmulatorServer, Faults
from tests.support import config_text, image_bytes, wait_until

FILES = 200
KILLS = 3


def start(conf: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "syncd", "run", "-c", str(conf)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def alive(proc: subprocess.Popen[bytes], log: Path) -> bool:
    """Fail at once, with the log's tail, if the daemon died on its own."""
    if proc.poll() is not None:
        tail = log.read_text(errors="replace")[-3000:]
        raise AssertionError(f"the daemon exited with {proc.returncode}:\n{tail}")
    return True


def expected_pairs(hot: Path) -> collections.Counter[tuple[str, tuple[str, ...]]]:
    """What the library must hold: one (content, folder tags) per distinct pair on disk."""
    pairs = set()
    for path in hot.rglob("*.jpg"):
        rel = path.relative_to(hot)
        tags = ("crash", *rel.parts[:-1])
        pairs.add((hashlib.sha256(path.read_bytes()).hexdigest(), tags))
    return collections.Counter(pairs)


def library_pairs(emulator: EmulatorServer) -> collections.Counter[tuple[str, tuple[str, ...]]]:
    return collections.Counter(
        (a["sha256"], tuple(t for t in a["tags"] if not t.startswith("sha256:")))
        for a in emulator.assets()
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_under_faults_loses_and_duplicates_nothing(tmp_path: Path, emulator) -> None:
    """200 files, 20% 5xx and 20% ambiguous failures, three SIGKILLs: the library converges."""
    rng = random.Random(int(os.environ.get("SYNCD_CRASH_SEED", "20261130")))
    hot = tmp_path / "hot"
    for i in range(FILES):
        folder = ("red", "blue", "green/dark", "")[i % 4]
        path = hot / folder / f"p{i:03d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        # Every tenth file is a copy of another: same content and tags must dedupe.
        path.write_bytes(image_bytes(i - (i % 40 == 39) * 4))
    emulator.set_faults(Faults(error_rate=0.2, ambiguous_rate=0.2, seed=rng.randrange(1 << 30)))
    conf = tmp_path / "syncd.toml"
    conf.write_text(
        config_text(
            emulator.base_url,
            [hot],
            tmp_path / "state.db",
            tags=["crash"],
            settle=0.0,
            concurrency=4,
        )
    )
    conf.chmod(0o600)  # it holds the key: a config open to others does not load
    log = tmp_path / "daemon.log"
    want = expected_pairs(hot)
    kills = 0
    for _ in range(KILLS):
        proc = start(conf, log)
        # Kill once some, but not all, of the work has happened.
        target = rng.randrange(5, len(want) - 20)
        wait_until(
            lambda t=target, p=proc: alive(p, log) and sum(library_pairs(emulator).values()) >= t,
            120,
            interval=0.01,
            message=f"{target} assets before a kill",
        )
        time.sleep(rng.random() * 0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        kills += 1
    proc = start(conf, log)
    try:
        wait_until(
            lambda: alive(proc, log) and set(library_pairs(emulator)) == set(want),
            240,
            interval=0.2,
            message="the library holding every (content, tags) pair",
        )
        emulator.set_faults(Faults())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    got = library_pairs(emulator)
    duplicates = sum(n - 1 for n in got.values() if n > 1)
    missing = len(set(want) - set(got))
    extra = len(set(got) - set(want))
    stats = emulator.stats()
    print(
        f"\ncrash test: runs={kills + 1} kills={kills} files={FILES} pairs={len(want)} "
        f"requests={sum(stats['requests'].values())} posts="
        f"{stats['requests'].get('POST /v1/training-asset', 0)} faults={stats['faults']} "
        f"duplicates={duplicates} missing={missing} extra={extra}"
    )
    assert (duplicates, missing, extra) == (0, 0, 0)
