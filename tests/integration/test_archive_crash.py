"""kill -9 at random moments while a hot folder empties into its archive."""

from __future__ import annotations

import collections
import hashlib
import os
import random
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.emulator import EmulatorServer
from tests.integration.test_crash import alive, start
from tests.support import config_text, image_bytes, wait_until, write_private

FILES = 200
KILLS = 5


@pytest.fixture(params=["same-fs", "other-fs"])
def archive_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """The archive beside the hot folder (link, unlink) or on tmpfs (copy, fsync, compare)."""
    if request.param == "same-fs":
        yield tmp_path / "archive"
        return
    if not Path("/dev/shm").is_dir():
        pytest.skip("no /dev/shm on this machine")
    path = Path(tempfile.mkdtemp(prefix="syncd-crash-archive-", dir="/dev/shm"))
    yield path / "archive"
    shutil.rmtree(path, ignore_errors=True)


def every_file(*roots: Path) -> list[Path]:
    return [p for root in roots if root.exists() for p in root.rglob("*") if p.is_file()]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill_9_while_archiving_leaves_every_file_in_exactly_one_place(
    tmp_path: Path, emulator: EmulatorServer, archive_dir: Path
) -> None:
    """200 files, five SIGKILLs mid-archive: each file ends in one place, each asset once."""
    rng = random.Random(int(os.environ.get("SYNCD_CRASH_SEED", "20261201")))
    hot = tmp_path / "hot"
    originals: dict[str, bytes] = {}
    for i in range(FILES):
        rel = f"{('red', 'blue', 'green/dark', '')[i % 4]}/p{i:03d}.jpg".lstrip("/")
        (hot / rel).parent.mkdir(parents=True, exist_ok=True)
        originals[rel] = image_bytes(i)
        (hot / rel).write_bytes(originals[rel])
    conf = tmp_path / "syncd.toml"
    extra = (
        f'after_upload = "archive"\nafter_upload_when = "sent"\narchive_path = "{archive_dir}"\n'
    )
    write_private(
        conf,
        config_text(
            emulator.base_url,
            [hot],
            tmp_path / "state.db",
            tags=["crash"],
            settle=0.0,
            concurrency=4,
            extra_folder=extra,
        ),
    )
    log = tmp_path / "daemon.log"
    midway = []  # (left in the hot folder, in the archive) at each kill
    for _ in range(KILLS):
        proc = start(conf, log)
        deadline = time.monotonic() + rng.uniform(1.0, 4.0)
        while time.monotonic() < deadline and alive(proc, log):
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        midway.append((len(every_file(hot)), len(every_file(archive_dir))))
    assert any(h and a for h, a in midway), f"no kill came while archiving: {midway}"
    proc = start(conf, log)
    try:
        wait_until(
            lambda: alive(proc, log) and not every_file(hot), 120, message="the hot folder empty"
        )
    finally:
        proc.terminate()
        proc.wait(15)
    found = every_file(hot, archive_dir)
    assert sorted(p.relative_to(archive_dir).as_posix() for p in found) == sorted(originals)
    contents = collections.Counter(hashlib.sha256(p.read_bytes()).hexdigest() for p in found)
    assert contents == collections.Counter(
        hashlib.sha256(data).hexdigest() for data in originals.values()
    )
    for rel, data in originals.items():
        assert (archive_dir / rel).read_bytes() == data
    library = collections.Counter(
        (a["sha256"], tuple(t for t in a["tags"] if not t.startswith("sha256:")))
        for a in emulator.assets()
    )
    assert library == collections.Counter(
        (hashlib.sha256(data).hexdigest(), ("crash", *Path(rel).parts[:-1]))
        for rel, data in originals.items()
    )
    assert "DELETE /v1/assets/{id}" not in emulator.stats()["requests"]
