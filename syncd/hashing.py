"""Content hashes, read beneath the hot folder's root so that a change underneath is noticed.

A file is hashed while a photographer's tool may still be writing it, or while a sync
client replaces it. The hash is only trusted when the file looked the same (size, mtime,
ctime, inode) before and after the read, through the open descriptor *and* when looked
up again beneath the root; otherwise :class:`~syncd.errors.FileChanged` says "look again
once it settles". Every file is opened through :mod:`syncd.safepath`: a link out of the
folder, or a folder on the way swapped for a link, never reaches a byte outside it.

Errors: a path that is not there (or whose folder on the way is no longer a folder)
raises the plain :class:`FileNotFoundError`, so a caller can tell "gone" (a deletion is
on its way) from "broken"; every other failure is a :class:`~syncd.errors.FileProblem`
whose ``reason`` is written for people.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

from syncd.errors import FileChanged, FileProblem
from syncd.model import FileStat
from syncd.safepath import Outside, Root

#: The Assets API refuses bodies above 10 MB (10 * 1024 * 1024 bytes).
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
OUTSIDE_LINK = "symlink to a file outside the hot folder: not followed"


def file_stat(st: os.stat_result) -> FileStat:
    """The part of a stat result that tells whether a file changed."""
    return FileStat(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, dev=st.st_dev)


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _reason(exc: OSError) -> str:
    if isinstance(exc, Outside):
        return OUTSIDE_LINK
    if isinstance(exc, PermissionError):
        return "unreadable: permission denied"
    if isinstance(exc, IsADirectoryError):
        return "not a file: it is a directory"
    if exc.errno == errno.ELOOP:
        return f"unreadable: symlink loop ({os.strerror(errno.ELOOP)})"
    return f"unreadable: {exc.strerror or exc}"


def _open(root: Root, relpath: str) -> int:
    """Open beneath the root; "not there" passes as FileNotFoundError, the rest is a FileProblem.

    A folder on the way that is now a link or a file means the path is not there any more.
    """
    try:
        return root.open_file(relpath)
    except (FileNotFoundError, NotADirectoryError) as exc:
        raise FileNotFoundError(errno.ENOENT, "not there", relpath) from exc
    except OSError as exc:
        raise FileProblem(_reason(exc)) from exc


def _regular(fd: int) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem("not a regular file")
    return st


@contextmanager
def opened(
    root: Root, relpath: str, *, regular: bool = True
) -> Iterator[tuple[int, os.stat_result]]:
    """A file open beneath the root, with its stat; closed on exit.

    The one descriptor serves the stat, the signature and the hash of a file job. With
    ``regular`` anything but a regular file is a FileProblem at once.
    """
    fd = _open(root, relpath)
    try:
        try:
            st = _regular(fd) if regular else os.fstat(fd)
        except OSError as exc:
            raise FileProblem(_reason(exc)) from exc
        yield fd, st
    finally:
        os.close(fd)


def _check_unchanged(fd: int, root: Root, relpath: str, before: os.stat_result, read: int) -> None:
    """Raise FileChanged unless the descriptor and a fresh look beneath the root agree."""
    after = os.fstat(fd)
    if _identity(before) != _identity(after) or read != after.st_size:
        raise FileChanged("changed while being read")
    try:
        again = _open(root, relpath)
    except (FileNotFoundError, FileProblem) as exc:
        raise FileChanged("changed while being read: the file was removed") from exc
    try:
        now = os.fstat(again)
    finally:
        os.close(again)
    if _identity(after) != _identity(now):
        raise FileChanged("changed while being read: the file was replaced")


#: The smallest read buffer: a file that grows while it is hashed is read in pieces of
#: this size (the hash is refused then all the same: the size no longer matches).
_MIN_CHUNK = 1 << 16


def sha256_fd(
    fd: int, before: os.stat_result, root: Root, relpath: str, *, chunk: int = 1 << 20
) -> tuple[str, FileStat]:
    """Stream an open file through SHA-256; the stat returned is the one the hash belongs to.

    The buffer fits the file (at least ``_MIN_CHUNK``, at most ``chunk``): a new buffer
    is zeroed, and zeroing 1 MB for a small image cost more than hashing it.
    """
    digest = hashlib.sha256()
    buffer = bytearray(min(chunk, max(before.st_size + 1, _MIN_CHUNK)))
    view = memoryview(buffer)
    total = 0
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        while n := os.readv(fd, [buffer]):
            digest.update(view[:n])
            total += n
        _check_unchanged(fd, root, relpath, before, total)
    except OSError as exc:
        raise FileProblem(_reason(exc)) from exc
    return digest.hexdigest(), file_stat(before)


def sha256_file(root: Root, relpath: str, *, chunk: int = 1 << 20) -> tuple[str, FileStat]:
    """Open ``relpath`` beneath ``root`` and hash it (see :func:`sha256_fd`)."""
    with opened(root, relpath) as (fd, before):
        return sha256_fd(fd, before, root, relpath, chunk=chunk)


def read_head(fd: int, size: int) -> bytes:
    """The first ``size`` bytes of an open file, for the signature check."""
    try:
        return os.pread(fd, size, 0)
    except OSError as exc:
        raise FileProblem(_reason(exc)) from exc


def same_file(st: os.stat_result, expected: FileStat) -> bool:
    """Whether an open file is the one a stat was taken of: device, inode, size, mtime."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) == (
        expected.dev,
        expected.inode,
        expected.size,
        expected.mtime_ns,
    )


def read_bytes_checked(
    root: Root,
    relpath: str,
    expected_sha: str,
    expected_stat: FileStat | None = None,
    *,
    limit: int = MAX_UPLOAD_BYTES,
) -> bytes:
    """The file's bytes for an upload, only if they are still the bytes that were hashed.

    With ``expected_stat`` (the stat the hash was taken with) the open file must be that
    same file (device, inode, size, mtime), checked on the descriptor the bytes come
    from; the content then has to hash the same.
    """
    with opened(root, relpath) as (fd, before):
        if before.st_size > limit:
            raise FileProblem(f"too large: {before.st_size} bytes, the limit is {limit}")
        if expected_stat is not None and before.st_size != expected_stat.size:
            raise FileChanged("changed since it was hashed: the size differs")
        if expected_stat is not None and not same_file(before, expected_stat):
            raise FileChanged("changed since it was hashed: not the same file")
        try:
            data = _read_at_most(fd, limit + 1)
        except OSError as exc:
            raise FileProblem(_reason(exc)) from exc
    if len(data) > limit:
        raise FileProblem(f"too large: over {limit} bytes")
    if hashlib.sha256(data).hexdigest() != expected_sha:
        raise FileChanged("changed since it was hashed")
    return data


def _read_at_most(fd: int, size: int) -> bytes:
    parts: list[bytes] = []
    left = size
    while left > 0 and (part := os.read(fd, min(left, 1 << 20))):
        parts.append(part)
        left -= len(part)
    return b"".join(parts)
