"""Moving a file out of a hot folder without ever overwriting, losing or doubling it.

The only module that writes to or removes from a hot folder (``after_upload``), kept to
a few small functions so that every such file operation goes through one place.

The hot folder is a trust boundary (see :mod:`syncd.safepath`): its file is never
reached by path. Its parent folder is opened beneath the held :class:`Root` (no folder
on the way may be a symlink), and the file is looked at, linked, read and unlinked
relative to that descriptor, never following a link. A path through a folder swapped
for a symlink is simply not in the hot folder. The archive is the operator's: it is
reached by path, but nothing there is ever overwritten or read through a link.

``relocate(root, relpath, dest, sha256)`` puts the file at ``dest`` and then removes it:

* same filesystem: a hard link to ``dest`` (which fails rather than replace an existing
  file), then the unlink of the source;
* otherwise (or where hard links are refused): a copy, from a descriptor on the source,
  into a hidden partial file beside ``dest``, fsync, a comparison of its bytes with the
  uploaded content's hash, a link to ``dest`` (again never replacing), then the unlink.

Each step can be repeated after a crash: ``relocate`` called again for the same pair
finishes what was begun (``dest`` already holding the same bytes means only the source is
left to remove). ``Clash`` says ``dest`` holds another file: pick another name.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from syncd.safepath import FILE_FLAGS, Root

_CHUNK = 1 << 20


class Clash(Exception):
    """The destination exists and holds another file: it is never overwritten."""


class Changed(Exception):
    """The source's bytes are not the content that was uploaded: it is left alone."""


@dataclass(frozen=True)
class _Source:
    """A hot-folder file as a name in a folder held open beneath the root."""

    dir_fd: int
    name: str

    def stat(self) -> os.stat_result | None:
        try:
            return os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            return None

    def open(self) -> int:
        return os.open(self.name, FILE_FLAGS | os.O_NOFOLLOW, dir_fd=self.dir_fd)

    def unlink(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.name, dir_fd=self.dir_fd)
        _fsync(self.dir_fd)


@contextlib.contextmanager
def _held(root: Root, relpath: str) -> Iterator[_Source | None]:
    """The file's folder held open; None when the path is not in the hot folder any more."""
    try:
        dir_fd, name = root.open_parent(relpath)
    except (FileNotFoundError, NotADirectoryError):
        yield None  # gone, or a folder on the way is now a symlink: not ours to follow
        return
    try:
        yield _Source(dir_fd, name)
    finally:
        os.close(dir_fd)


def relocate(root: Root, relpath: str, dest: Path, sha256: str) -> bool:
    """Move the file to ``dest`` (see the module docstring); safe to call again after a crash.

    False when the file was gone from the hot folder and ``dest`` does not hold it.
    """
    with _held(root, relpath) as src:
        st = src.stat() if src else None
        if st is not None and not stat.S_ISREG(st.st_mode):
            raise Changed(relpath)  # a link or something else now stands at the name
        if os.path.lexists(dest):
            if not _ours(st, dest, sha256):
                raise Clash(str(dest))
        elif src is not None and st is not None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if _link(src, st, dest):
                _partial(dest).unlink(missing_ok=True)  # a copy a crash cut short, if any
            else:
                _copy_in(src, st, dest, sha256)
        else:
            return False  # neither: the file was deleted by someone meanwhile
        if src is not None:
            src.unlink()
    return True


def remove(root: Root, relpath: str) -> None:
    """Unlink the file (already gone is fine) and make the removal durable."""
    with _held(root, relpath) as src:
        if src is not None:
            src.unlink()


def free_name(dest: Path) -> Path:
    """``dest``, or ``name (1).ext``, ``name (2).ext``... whichever does not exist yet."""
    candidate, n = dest, 0
    while os.path.lexists(candidate) or os.path.lexists(_partial(candidate)):
        n += 1
        candidate = dest.with_name(f"{dest.stem} ({n}){dest.suffix}")
    return candidate


def _same(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _ours(st: os.stat_result | None, dest: Path, sha256: str) -> bool:
    """Whether ``dest`` already is this file: the same inode, or the uploaded bytes."""
    try:
        if st is not None and _same(st, os.lstat(dest)):
            return True
    except OSError:
        pass
    return _sha256(dest) == sha256


def _link(src: _Source, st: os.stat_result, dest: Path) -> bool:
    """A hard link (never replaces); False where links cannot be made (another fs...).

    The name is linked without following it; should it have been swapped since it was
    looked at, the new link is not the file and is taken back.
    """
    try:
        os.link(src.name, dest, src_dir_fd=src.dir_fd, follow_symlinks=False)
    except FileExistsError:
        raise Clash(str(dest)) from None
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP):
            return False
        raise
    if not _same(st, os.lstat(dest)):
        dest.unlink()
        raise Changed(src.name)
    _sync_dir(dest.parent)
    return True


def _copy_in(src: _Source, st: os.stat_result, dest: Path, sha256: str) -> None:
    """Copy from a descriptor on the source to a partial file, fsync, check, link to ``dest``."""
    partial = _partial(dest)
    partial.unlink(missing_ok=True)
    digest = hashlib.sha256()
    with open(src.open(), "rb") as reader:
        if not _same(st, os.fstat(reader.fileno())):
            raise Changed(src.name)  # another file than the one looked at
        with open(partial, "xb") as writer:
            while chunk := reader.read(_CHUNK):
                writer.write(chunk)
                digest.update(chunk)
            writer.flush()
            os.fsync(writer.fileno())
    if digest.hexdigest() != sha256 or _sha256(partial) != sha256:
        partial.unlink()
        raise Changed(src.name)
    try:
        os.link(partial, dest)
    except FileExistsError:
        raise Clash(str(dest)) from None
    finally:
        partial.unlink(missing_ok=True)
    _sync_dir(dest.parent)


def _partial(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.syncd-partial")


def _sha256(path: Path) -> str | None:
    """The hash of an archive file's bytes; a symlink there is not followed."""
    digest = hashlib.sha256()
    try:
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb") as reader:
            while chunk := reader.read(_CHUNK):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _sync_dir(path: Path) -> None:
    """A rename or unlink is durable once its directory is synced."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        _fsync(fd)
    finally:
        os.close(fd)


def _fsync(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.fsync(fd)
