"""Streaming hashes, read beneath a root, that notice a file changing underneath."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest

from syncd import hashing
from syncd.errors import FileChanged, FileProblem
from syncd.hashing import file_stat
from syncd.safepath import Root


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> tuple[str, hashing.FileStat]:
    """Hash a file by its path, through a root opened on its folder."""
    with Root(path.parent) as root:
        return hashing.sha256_file(root, path.name, chunk=chunk)


def read_bytes_checked(path: Path, *args: object, **kwargs: object) -> bytes:
    with Root(path.parent) as root:
        return hashing.read_bytes_checked(root, path.name, *args, **kwargs)  # type: ignore[arg-type]


def stat_of(path: Path) -> hashing.FileStat:
    return file_stat(os.stat(path))


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("size", [0, 1, 1023, 1024, 1025, 300_000])
def test_sha256_matches_hashlib(tmp_path: Path, size: int) -> None:
    """The streamed digest equals hashlib's over the whole file, at chunk edges too."""
    data = os.urandom(size)
    path = _write(tmp_path / "f.jpg", data)
    digest, stat = sha256_file(path, chunk=1024)
    assert digest == hashlib.sha256(data).hexdigest()
    assert stat == stat_of(path)
    assert stat.size == size


def test_a_link_inside_hashes_its_target(tmp_path: Path) -> None:
    """A link to a file of the same folder is read as its target, inode and size included."""
    target = _write(tmp_path / "t.jpg", b"abc")
    link = tmp_path / "l.jpg"
    link.symlink_to(target)
    st = os.stat(target)
    _, got = sha256_file(link)
    assert (got.size, got.inode, got.dev, got.mtime_ns) == (3, st.st_ino, st.st_dev, st.st_mtime_ns)


def test_file_growing_while_hashed_raises_file_changed(tmp_path: Path) -> None:
    """A file appended to while it is being read is reported as changed, never hashed."""
    path = _write(tmp_path / "growing.jpg", os.urandom(256 * 1024))
    stop = threading.Event()

    def append() -> None:
        with path.open("ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"x" * 64)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        deadline = time.monotonic() + 20
        with pytest.raises(FileChanged, match="changed while being read"):
            while time.monotonic() < deadline:
                sha256_file(path, chunk=4096)
    finally:
        stop.set()
        writer.join()


def test_file_replaced_after_hashing_is_noticed(tmp_path: Path) -> None:
    """A hash whose path now names another file (a save by rename) is not trusted."""
    path = _write(tmp_path / "a.jpg", b"old" * 1000)
    stop = threading.Event()

    def replace() -> None:
        n = 0
        while not stop.is_set():
            tmp = tmp_path / "a.jpg.tmp"
            tmp.write_bytes(b"new" * 1000 + str(n).encode())
            tmp.replace(path)
            n += 1

    writer = threading.Thread(target=replace)
    writer.start()
    try:
        deadline = time.monotonic() + 20
        with pytest.raises(FileChanged):
            while time.monotonic() < deadline:
                sha256_file(path, chunk=512)
    finally:
        stop.set()
        writer.join()


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    """A vanished file is FileNotFoundError, distinguishable from a broken one."""
    with pytest.raises(FileNotFoundError):
        sha256_file(tmp_path / "gone.jpg")
    with pytest.raises(FileNotFoundError):
        read_bytes_checked(tmp_path / "gone.jpg", "0" * 64)


def test_directory_is_a_file_problem(tmp_path: Path) -> None:
    """Hashing a directory is a FileProblem with a reason for people."""
    (tmp_path / "d.jpg").mkdir()
    with pytest.raises(FileProblem) as info:
        sha256_file(tmp_path / "d.jpg")
    assert not isinstance(info.value, FileChanged)
    assert "directory" in info.value.reason or "not a regular file" in info.value.reason


def test_fifo_is_a_file_problem(tmp_path: Path) -> None:
    """A named pipe with no writer is refused at once instead of blocking the reader."""
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(FileProblem, match="not a regular file"):
        sha256_file(fifo)
    with pytest.raises(FileProblem, match="not a regular file"):
        read_bytes_checked(fifo, "0" * 64)


def test_symlink_loop_is_a_file_problem(tmp_path: Path) -> None:
    """A symlink loop is unreadable, with a reason that says so."""
    loop = tmp_path / "loop.jpg"
    loop.symlink_to("loop.jpg")
    with pytest.raises(FileProblem, match="symlink loop"):
        sha256_file(loop)


def test_read_bytes_checked_returns_the_hashed_bytes(tmp_path: Path) -> None:
    """The bytes come back when their SHA-256 is still the expected one."""
    data = os.urandom(5000)
    path = _write(tmp_path / "a.png", data)
    digest, stat = sha256_file(path)
    assert read_bytes_checked(path, digest, stat) == data
    assert read_bytes_checked(path, digest) == data


def test_read_bytes_checked_refuses_changed_content(tmp_path: Path) -> None:
    """Same size, other bytes: FileChanged, so the upload never sends the wrong content."""
    path = _write(tmp_path / "a.png", b"a" * 100)
    digest, stat = sha256_file(path)
    path.write_bytes(b"b" * 100)
    with pytest.raises(FileChanged, match="changed since it was hashed"):
        read_bytes_checked(path, digest, stat)


def test_read_bytes_checked_refuses_other_size(tmp_path: Path) -> None:
    """A size that differs from the hashed stat is a change, told before reading."""
    path = _write(tmp_path / "a.png", b"a" * 100)
    digest, stat = sha256_file(path)
    path.write_bytes(b"a" * 101)
    with pytest.raises(FileChanged, match="size"):
        read_bytes_checked(path, digest, stat)


def test_read_bytes_checked_refuses_another_file_with_the_same_bytes(tmp_path: Path) -> None:
    """Same bytes under a new inode: not the file that was hashed, so not read (fstat proof)."""
    path = _write(tmp_path / "a.png", b"a" * 100)
    digest, stat = sha256_file(path)
    path.unlink()
    _write(tmp_path / "a.png", b"a" * 100)
    assert stat_of(path).inode != stat.inode or stat_of(path).mtime_ns != stat.mtime_ns
    with pytest.raises(FileChanged, match="not the same file"):
        read_bytes_checked(path, digest, stat)


def test_read_bytes_checked_caps_the_size(tmp_path: Path) -> None:
    """A file over the limit is a FileProblem (permanent), not a change."""
    data = os.urandom(2048)
    path = _write(tmp_path / "big.jpg", data)
    with pytest.raises(FileProblem, match="too large") as info:
        read_bytes_checked(path, hashlib.sha256(data).hexdigest(), limit=2047)
    assert not isinstance(info.value, FileChanged)
    assert read_bytes_checked(path, hashlib.sha256(data).hexdigest(), limit=2048) == data
