"""The one place that turns (hot folder, relpath) into an open file or a folder listing.

A hot folder is written by other people than the daemon. Whatever they put there (a
symlink where a folder was, a folder swapped for a link while a file is read, the root
itself replaced), nothing outside the folder may be read. So nothing is opened by path:

* :class:`Root` holds a directory descriptor on the folder's root and its (dev, inode),
  taken once; every open below it starts from that descriptor.
* Folders on the way to a file are never symlinks: with ``openat2`` (Linux 5.6+) the
  kernel refuses them (``RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS``),
  atomically, whatever is renamed meanwhile; elsewhere each component is opened with
  ``O_NOFOLLOW | O_DIRECTORY`` relative to the one before.
* The file itself may be a symlink to another file of the same folder (it is then a
  copy): its target is resolved beneath the root descriptor, never above it. A link that
  leads out raises :class:`Outside`.

What a caller gets is a descriptor; the bytes it hashes and uploads come from it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

_SYS_OPENAT2 = 437  # the same number on every architecture (added in Linux 5.6)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_NO_SYMLINKS = 0x04
_RESOLVE_BENEATH = 0x08
_MAX_HOPS = 40  # as the kernel's own limit on symlinks in one lookup
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
#: For reading a file: a named pipe called ``x.jpg`` must not block the reader.
FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | _CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC
_STRICT = _RESOLVE_BENEATH | _RESOLVE_NO_SYMLINKS | _RESOLVE_NO_MAGICLINKS


class Outside(OSError):
    """A symlink whose target lies outside the hot folder."""

    def __init__(self, relpath: str) -> None:
        super().__init__(errno.EXDEV, "symlink leads outside the hot folder", relpath)


class _OpenHow(ctypes.Structure):
    _fields_ = (
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    )


_libc: ctypes.CDLL | None = None
_have_openat2: bool | None = None
_probe_lock = threading.Lock()


def _openat2(dir_fd: int, path: str, flags: int, resolve: int) -> int:
    assert _libc is not None
    how = _OpenHow(flags, 0, resolve)
    fd = int(
        _libc.syscall(
            _SYS_OPENAT2,
            ctypes.c_int(dir_fd),
            ctypes.c_char_p(os.fsencode(path)),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        )
    )
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return fd


def openat2_available() -> bool:
    """Whether the kernel (and a seccomp filter, if any) lets us call openat2; asked once."""
    global _have_openat2  # noqa: PLW0603 - a process-wide probe result
    with _probe_lock:
        if _have_openat2 is None:
            _have_openat2 = _probe()
        return _have_openat2


def _probe() -> bool:
    global _libc  # noqa: PLW0603 - loaded once with the probe
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        top = os.open("/", DIR_FLAGS)
    except (OSError, AttributeError):
        return False
    try:
        os.close(_openat2(top, ".", DIR_FLAGS, _STRICT))
    except OSError:
        return False  # ENOSYS: an old kernel; EPERM: a seccomp filter without it
    finally:
        os.close(top)
    return True


def use_openat2(enabled: bool) -> None:
    """Force the component walk (``False``) or the probe's answer (``True``); for tests."""
    global _have_openat2  # noqa: PLW0603
    _have_openat2 = None
    if enabled:
        openat2_available()
    else:
        _have_openat2 = False


def _parts(relpath: str) -> list[str]:
    """A relpath's components; '..', '.', empty and absolute ones are refused outright."""
    parts = relpath.split("/") if relpath else []
    if any(p in ("", ".", "..") for p in parts):
        raise Outside(relpath)
    return parts


class Root:
    """A hot folder's root, held open: everything below it is reached from this descriptor."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.fd = os.open(self.path, DIR_FLAGS)
        st = os.fstat(self.fd)
        self.identity = (st.st_dev, st.st_ino)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Root:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- opening ---------------------------------------------------------------------

    def open_dir(self, relpath: str) -> int:
        """A descriptor on a folder below the root (``""``: the root); no symlink followed."""
        parts = _parts(relpath)
        if not parts:
            return os.dup(self.fd)
        if openat2_available():
            return _openat2(self.fd, relpath, DIR_FLAGS, _STRICT)
        return self._walk(parts, DIR_FLAGS | os.O_NOFOLLOW)

    def open_file(self, relpath: str, flags: int = FILE_FLAGS) -> int:
        """A descriptor on ``relpath``; a final symlink is followed only inside the root.

        Raises ``FileNotFoundError`` for a path (or link target) that is not there,
        :class:`Outside` for a link out, ``OSError(ELOOP)`` for a loop, and ``OSError``
        with ``ENOTDIR``/``ELOOP`` when a folder on the way is not a real folder.
        """
        parts = _parts(relpath)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "the folder's root", relpath)
        parent = self._parent(relpath, parts)
        try:
            try:
                return os.open(parts[-1], flags | os.O_NOFOLLOW, dir_fd=parent)
            except OSError as exc:
                if exc.errno != errno.ELOOP or not _is_link(parent, parts[-1]):
                    raise
            target = os.readlink(parts[-1], dir_fd=parent)
        finally:
            os.close(parent)
        return self._follow(relpath, parts[:-1], target, flags)

    def open_parent(self, relpath: str) -> tuple[int, str]:
        """A descriptor on the folder holding ``relpath``, and the name it has there.

        What acts on a hot-folder file by name (stat, link, unlink) does it relative to
        this descriptor, so no folder on the way can be a symlink: one that is, or that
        is not a folder, raises ``NotADirectoryError``; a missing one ``FileNotFoundError``.
        """
        parts = _parts(relpath)
        if not parts:
            raise IsADirectoryError(errno.EISDIR, "the folder's root", relpath)
        return self._parent(relpath, parts), parts[-1]

    def _parent(self, relpath: str, parts: list[str]) -> int:
        """The folder holding the last component; one that is a link or a file is not there."""
        try:
            return self.open_dir("/".join(parts[:-1]))
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise NotADirectoryError(
                    errno.ENOTDIR, "a folder on the way is a symlink or not a folder", relpath
                ) from exc
            raise

    def _follow(self, relpath: str, base: list[str], target: str, flags: int) -> int:
        """Open a link's target, resolved beneath the root; an escape raises Outside."""
        return self._resolve(relpath, [*base, *self._target(relpath, target)], flags)

    def _target(self, relpath: str, target: str) -> list[str]:
        """A link target's components; an absolute one must name a place in this root."""
        if not target.startswith("/"):
            return target.split("/")
        root = os.path.realpath(self.path).rstrip("/")
        if target.rstrip("/") != root and not target.startswith(root + "/"):
            raise Outside(relpath)
        return ["/", *target[len(root) :].split("/")]

    def _walk(self, parts: list[str], flags: int) -> int:
        """Component by component, each opened from the one before, no symlink followed."""
        fd = os.dup(self.fd)
        try:
            for name in parts[:-1]:
                nxt = os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                os.close(fd)
                fd = nxt
            return os.open(parts[-1], flags, dir_fd=fd)
        finally:
            os.close(fd)

    def _resolve(self, relpath: str, parts: list[str], flags: int) -> int:
        """Resolve a path with symlinks by hand, held to the root by a stack of descriptors.

        Each component is opened from the one before with ``O_NOFOLLOW``; '..' pops the
        stack instead of asking the kernel, and "/" (an absolute link into this root)
        starts again from the root's descriptor, so nothing renamed meanwhile can carry
        the walk above the root.
        """
        stack = [os.dup(self.fd)]
        pending = list(parts)
        hops = 0
        try:
            while pending:
                name = pending.pop(0)
                if name in ("", "."):
                    continue
                if name == "/":
                    while len(stack) > 1:
                        os.close(stack.pop())
                    continue
                if name == "..":
                    if len(stack) == 1:
                        raise Outside(relpath)
                    os.close(stack.pop())
                    continue
                opened = self._step(stack[-1], name, flags if not pending else DIR_FLAGS)
                if isinstance(opened, str):
                    hops += 1
                    if hops > _MAX_HOPS:
                        raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), relpath)
                    pending[:0] = self._target(relpath, opened)
                    continue
                if not pending:
                    return opened
                stack.append(opened)
            return os.open(".", flags, dir_fd=stack[-1])
        finally:
            for fd in stack:
                os.close(fd)

    @staticmethod
    def _step(dir_fd: int, name: str, flags: int) -> int | str:
        """Open one component without following it; a symlink gives its target instead."""
        try:
            return os.open(name, flags | os.O_NOFOLLOW, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR) or not _is_link(dir_fd, name):
                raise
        return os.readlink(name, dir_fd=dir_fd)

    # -- looking -----------------------------------------------------------------------

    @contextlib.contextmanager
    def scandir(self, dir_fd: int) -> Iterator[Iterator[os.DirEntry[str]]]:
        """List a folder by its descriptor (from :meth:`open_dir`); entries are names."""
        with os.scandir(dir_fd) as entries:
            yield entries

    def lstat(self, relpath: str) -> os.stat_result:
        """``relpath``'s own stat (a final link is not followed), looked up beneath the root."""
        parent, name = self.open_parent(relpath)
        try:
            return os.stat(name, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)

    def lexists(self, relpath: str) -> bool:
        """Whether a name exists at ``relpath`` (a link counts), looked up without following."""
        try:
            self.lstat(relpath)
        except OSError:
            return False
        return True


def _is_link(dir_fd: int, name: str) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode)
    except OSError:
        return False


def identity_of(path: Path) -> tuple[int, int]:
    """The (dev, inode) the path resolves to now; raises ``OSError`` as ``os.stat`` does."""
    st = Path(path).stat()
    return st.st_dev, st.st_ino
