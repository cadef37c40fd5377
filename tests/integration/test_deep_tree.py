"""Nothing in a hot folder stalls the daemon: a 1,200-level tree beside a normal folder."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncd.report import gather
from tests.running import Running
from tests.support import image_bytes, wait_until, write_image

DEPTH = 1200


def _build(top: Path, depth: int, data: bytes) -> None:
    """``depth`` nested folders ``d/d/...`` with an image at the bottom, made by descriptor
    (the path is longer than many tools like)."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fds[-1])
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        fd = os.open("bottom.jpg", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fds[-1])
        os.write(fd, data)
        os.close(fd)
    finally:
        for fd in fds:
            os.close(fd)


def _remove(top: Path, depth: int) -> None:
    """Remove what :func:`_build` made, bottom up, without recursion."""
    fds = [os.open(top, os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(depth):
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        os.unlink("bottom.jpg", dir_fd=fds[-1])
        for level in range(depth, 0, -1):
            os.close(fds.pop())
            os.rmdir("d", dir_fd=fds[level - 1])
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture
def deep(tmp_path: Path) -> Iterator[Path]:
    top = tmp_path / "deep"
    top.mkdir()
    _build(top, DEPTH, image_bytes(3))
    yield top
    _remove(top, DEPTH)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_1200_deep_tree_costs_the_other_folder_nothing(start_daemon, hot: Path, deep: Path):
    """The deep folder is listed first; the normal one still syncs within seconds."""
    top = write_image(deep / "top.jpg", 1)
    run: Running = start_daemon(folders=[deep, hot])
    started = time.monotonic()
    mine = write_image(hot / "a.jpg", 2)
    wait_until(
        lambda: sha(mine) in {a["sha256"] for a in run.assets()}, 15, message="normal folder"
    )
    took = time.monotonic() - started
    print(f"normal folder's image uploaded {took:.2f} s after it was written")
    wait_until(lambda: sha(top) in {a["sha256"] for a in run.assets()}, 15, message="deep top")
    assert run.alive()
    assert sha(image_bytes(3)) not in {a["sha256"] for a in run.assets()}
    assert run.daemon.store is not None
    report = gather(run.daemon.store, run.config.folders, now=time.time(), stale_after=15)
    (shown,) = [f for f in report["folders"] if f["path"] == deep.as_posix()]
    assert shown["health"] == "ok" and "max_depth (64)" in (shown["reason"] or ""), shown
