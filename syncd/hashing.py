"""Content hashes and file signatures, read so that a file changing underneath is noticed.

A file is hashed while a photographer's tool may still be writing it, or while a sync
client replaces it. The hash is only trusted when the file looked the same (size, mtime,
ctime, inode) before and after the read, through the open descriptor *and* through the
path; otherwise :class:`~syncd.errors.FileChanged` says "look again once it settles".

Errors: a path that does not exist raises the plain :class:`FileNotFoundError`, so a
caller can tell "gone" (a deletion is on its way) from "broken"; every other failure to
read is a :class:`~syncd.errors.FileProblem` whose ``reason`` is written for people.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path

from syncd.errors import FileChanged, FileProblem
from syncd.model import FileStat

#: The Assets API refuses bodies above 10 MB (10 * 1024 * 1024 bytes).
MAX_UPLOAD_BYTES = 10 * 1024 * 1024

_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_HEIF_GENERIC = frozenset({b"mif1", b"msf1"})


def file_stat(st: os.stat_result) -> FileStat:
    """The part of a stat result that tells whether a file changed."""
    return FileStat(size=st.st_size, mtime_ns=st.st_mtime_ns, inode=st.st_ino, dev=st.st_dev)


def stat_of(path: Path) -> FileStat:
    """Stat through symlinks; raises ``OSError`` as ``os.stat`` does."""
    return file_stat(Path(path).stat())


def _identity(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


def _reason(exc: OSError) -> str:
    if isinstance(exc, PermissionError):
        return "unreadable: permission denied"
    if isinstance(exc, IsADirectoryError):
        return "not a file: it is a directory"
    if exc.errno == errno.ELOOP:
        return "unreadable: symlink loop"
    return f"unreadable: {exc.strerror or exc}"


def _open(path: Path) -> int:
    """Open for reading; FileNotFoundError passes, the rest becomes FileProblem.

    O_NONBLOCK: a named pipe called ``x.jpg`` must not block the worker until a writer
    comes; it has no effect on regular files.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise FileProblem(_reason(exc)) from exc


def _regular(fd: int) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem("not a regular file")
    return st


def _check_unchanged(fd: int, path: Path, before: os.stat_result, read: int) -> None:
    """Raise FileChanged unless the descriptor and the path still show what we read."""
    after = os.fstat(fd)
    try:
        now = Path(path).stat()
    except FileNotFoundError as exc:
        raise FileChanged("changed while being read: the file was removed") from exc
    if _identity(before) != _identity(after) or read != after.st_size:
        raise FileChanged("changed while being read")
    if _identity(after) != _identity(now):
        raise FileChanged("changed while being read: the file was replaced")


def sha256_file(path: Path, *, chunk: int = 1 << 20) -> tuple[str, FileStat]:
    """Stream the file through SHA-256; the stat returned is the one the hash belongs to."""
    fd = _open(path)
    try:
        before = _regular(fd)
        digest = hashlib.sha256()
        buffer = bytearray(chunk)
        view = memoryview(buffer)
        total = 0
        while n := os.readv(fd, [buffer]):
            digest.update(view[:n])
            total += n
        _check_unchanged(fd, path, before, total)
    except OSError as exc:
        raise FileProblem(_reason(exc)) from exc
    finally:
        os.close(fd)
    return digest.hexdigest(), file_stat(before)


def read_head(path: Path, size: int) -> bytes:
    """The first ``size`` bytes, for the signature check.

    Opened like :func:`sha256_file`: a FIFO named ``x.jpg`` or a link to a folder fails
    as "not a regular file" instead of blocking or crashing the worker.
    """
    fd = _open(path)
    try:
        _regular(fd)
        return os.read(fd, size)
    except OSError as exc:
        raise FileProblem(_reason(exc)) from exc
    finally:
        os.close(fd)


def read_bytes_checked(
    path: Path,
    expected_sha: str,
    expected_stat: FileStat | None = None,
    *,
    limit: int = MAX_UPLOAD_BYTES,
) -> bytes:
    """The file's bytes for an upload, only if they are still the bytes that were hashed.

    The content decides, not the stat: a file touched without a change still uploads.
    ``expected_stat`` lets a caller skip the read when the size alone already differs.
    """
    fd = _open(path)
    try:
        before = _regular(fd)
        if before.st_size > limit:
            raise FileProblem(f"too large: {before.st_size} bytes, the limit is {limit}")
        if expected_stat is not None and before.st_size != expected_stat.size:
            raise FileChanged("changed since it was hashed: the size differs")
        data = _read_at_most(fd, limit + 1)
    except OSError as exc:
        raise FileProblem(_reason(exc)) from exc
    finally:
        os.close(fd)
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


def sniff_format(head: bytes) -> str | None:
    """The image format by its signature (first 32 bytes), whatever the file is called."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[4:8] == b"ftyp" and _is_heif(head):
        return "heic"
    return None


def _is_heif(head: bytes) -> bool:
    """HEIF by its ``ftyp`` brands; an AVIF (same container, other codec) is not."""
    box_end = min(len(head), int.from_bytes(head[:4], "big") or len(head))
    major = head[8:12]
    brands = [head[i : i + 4] for i in range(16, box_end - 3, 4)]
    if b"avif" in brands or major == b"avif":
        return False
    if major in _HEIF_BRANDS:
        return True
    return major in _HEIF_GENERIC and any(b in _HEIF_BRANDS for b in brands)
