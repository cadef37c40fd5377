"""Walk a hot folder in relpath order, streaming, without following it out of its root.

The order is the point: entries come out sorted exactly as Python compares ``str`` (code
point order, which is also SQLite's BINARY order of UTF-8 text), so the caller can
merge-join a scan of a million files against ``ORDER BY relpath`` with constant memory.
Each directory is listed and sorted on its own, folders keyed ``name + "/"``, and the
walk goes depth first: every relpath below ``d/`` starts with ``d/``, so a folder sorts
among its siblings exactly where its contents do. Memory is one listing per level.

What a scan does not say is as important as what it does: a folder that could not be
listed (``unreadable_dirs``) or a file that could not be stat'ed (``unreadable_files``)
is *unknown*, and the caller must not read the files it tracks there as deleted; so is a
folder deeper than ``max_depth`` (``too_deep``).

Every folder is listed through a descriptor opened from its parent's with ``O_NOFOLLOW``
(:mod:`syncd.safepath`), starting at the root's: a folder swapped for a symlink while
the walk runs is refused, never followed out of the root.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import structlog

from syncd.config import FolderConfig
from syncd.hashing import file_stat
from syncd.model import FileStat
from syncd.safepath import DIR_FLAGS, Outside, Root
from syncd.tags import Rules, is_storable, printable

log = structlog.get_logger(__name__)

SkipHook = Callable[[str, str], None]

#: Folders nested deeper than this below a root are not walked (a folder's ``max_depth``).
DEFAULT_MAX_DEPTH: int = FolderConfig.max_depth


@dataclass(frozen=True, slots=True)
class ScanEntry:
    """A file the folder holds now; for a symlink, the relpath of the link, the target's stat."""

    relpath: str
    stat: FileStat


class RootState(StrEnum):
    OK = "ok"
    MISSING = "missing"
    UNREADABLE = "unreadable"
    NOT_A_DIRECTORY = "not a directory"
    OTHER_DEVICE = "other device"
    REPLACED = "replaced"


@dataclass(frozen=True, slots=True)
class RootHealth:
    """Whether a root can be trusted; ``dev`` is its device when it could be stat'ed."""

    ok: bool
    reason: str | None = None
    dev: int | None = None
    state: RootState = RootState.OK
    ino: int | None = None

    @property
    def absent(self) -> bool:
        """Missing, unreadable or not a folder: nothing in it can be looked at."""
        return self.state in (RootState.MISSING, RootState.UNREADABLE, RootState.NOT_A_DIRECTORY)


@dataclass(frozen=True, slots=True)
class _Item:
    key: str
    name: str
    is_dir: bool
    is_link: bool


class Scan:
    """One pass over a root (or the folder ``prefix`` in it): iterate it once, then read
    what could not be seen.

    ``on_skip(relpath, reason)`` hears of files that exist but will not be tracked
    (unstorable names, symlinks out of the root, broken links, special files, folders
    deeper than ``max_depth``); relpaths given to it are :func:`syncd.tags.printable`.
    A file that vanishes between the listing and its stat is left out silently: it is
    gone, and the watcher says so. Relpaths yielded are relative to ``prefix``.
    """

    def __init__(
        self,
        root: Root | Path,
        rules: Rules,
        *,
        prefix: str = "",
        max_depth: int = DEFAULT_MAX_DEPTH,
        on_skip: SkipHook | None = None,
    ) -> None:
        self._given = root if isinstance(root, Root) else None
        self._path = Path(root) if not isinstance(root, Root) else root.path
        self.rules = rules
        self.prefix = prefix
        self.max_depth = max_depth
        self.unreadable_dirs: list[str] = []
        self.unreadable_files: list[str] = []
        self.too_deep: list[str] = []
        self._on_skip = on_skip
        self._root: Root | None = None
        self._base = len(prefix.split("/")) if prefix else 0

    def __iter__(self) -> Iterator[ScanEntry]:
        self.unreadable_dirs.clear()
        self.unreadable_files.clear()
        self.too_deep.clear()
        root = self._given or self._open_root()
        if root is None:
            return
        self._root = root
        fds: list[int] = []
        try:
            yield from self._walk(root, fds)
        finally:
            for fd in fds:
                os.close(fd)
            if self._given is None:
                root.close()

    def _open_root(self) -> Root | None:
        try:
            return Root(self._path)
        except OSError as exc:
            self.unreadable_dirs.append("")
            log.warning("scan.unreadable_dir", path="", error=exc.strerror)
            return None

    def _walk(self, root: Root, fds: list[int]) -> Iterator[ScanEntry]:
        """Depth first; ``fds`` holds one open folder per level (closed by the caller)."""
        stack: list[tuple[str, int, Iterator[_Item]]] = []
        top = self._top(root)
        if top is None:
            return
        fds.append(top)
        listing = self._listing("", top)
        if listing is not None:
            stack.append(("", top, iter(listing)))
        while stack:
            prefix, fd, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                os.close(fds.pop())
                continue
            relpath = prefix + item.name
            if item.is_dir:
                child = self._enter(relpath, item.name, fd)
                if child is not None:
                    fds.append(child[0])
                    stack.append((relpath + "/", child[0], iter(child[1])))
                continue
            entry = self._file(relpath, item, fd)
            if entry is not None:
                yield entry

    def _top(self, root: Root) -> int | None:
        """The folder the walk starts at; a prefix that is no real folder has nothing to walk."""
        try:
            return root.open_dir(self.prefix)
        except (FileNotFoundError, NotADirectoryError, Outside):
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link where the folder was: not followed
                return None
            self.unreadable_dirs.append("")
            log.warning("scan.unreadable_dir", path=printable(self.prefix), error=exc.strerror)
            return None

    def _skip(self, relpath: str, reason: str) -> None:
        log.debug("scan.skip", path=printable(relpath), reason=reason)
        if self._on_skip is not None:
            self._on_skip(printable(relpath), reason)

    def _enter(self, relpath: str, name: str, parent: int) -> tuple[int, list[_Item]] | None:
        if self.rules.ignores_dir(relpath, parents_checked=True):
            return None
        if not is_storable(relpath):
            self._skip(relpath, "folder name is not valid UTF-8: it cannot be stored")
            return None
        if self._base + relpath.count("/") + 1 > self.max_depth:
            self.too_deep.append(relpath)
            self._skip(relpath, f"deeper than max_depth ({self.max_depth}): not scanned")
            return None
        fd = self._open_dir(relpath, name, parent)
        if fd is None:
            return None
        listing = self._listing(relpath, fd)
        if listing is None:
            os.close(fd)
            return None
        return fd, listing

    def _open_dir(self, relpath: str, name: str, parent: int) -> int | None:
        """A listed folder, opened from its parent without following a link."""
        try:
            return os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
        except (FileNotFoundError, NotADirectoryError):
            return None  # gone, or swapped for a file or a link since it was listed
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                self._unreadable(relpath, exc)
            return None

    def _unreadable(self, relpath: str, exc: OSError) -> None:
        self.unreadable_dirs.append(relpath)
        log.warning("scan.unreadable_dir", path=printable(relpath), error=exc.strerror)

    def _listing(self, relpath: str, fd: int) -> list[_Item] | None:
        """One folder's entries in key order, or None (and noted) when it cannot be read."""
        try:
            with os.scandir(fd) as it:
                items = [_item(entry) for entry in it]
        except OSError as exc:
            self._unreadable(relpath, exc)
            return None
        items.sort(key=lambda item: item.key)
        return items

    def _file(self, relpath: str, item: _Item, dir_fd: int) -> ScanEntry | None:
        if self.rules.ignores_file(relpath, parents_checked=True):
            return None
        if not is_storable(relpath):
            self._skip(relpath, "file name is not valid UTF-8: it cannot be stored")
            return None
        st = self._stat(relpath, item, dir_fd)
        if st is None:
            return None
        reason = _refusal(st)
        if reason is not None:
            self._skip(relpath, reason)
            return None
        return ScanEntry(relpath, file_stat(st))

    def _stat(self, relpath: str, item: _Item, dir_fd: int) -> os.stat_result | None:
        """The file's stat (the target's, for a link), or None once the failure is noted."""
        try:
            if item.is_link:
                return self._link_stat(relpath)
            return os.stat(item.name, dir_fd=dir_fd, follow_symlinks=False)
        except Outside:
            self._skip(relpath, "symlink points outside the folder")
        except (FileNotFoundError, NotADirectoryError):
            if item.is_link:
                self._skip(relpath, "broken symlink")
        except OSError as exc:
            if item.is_link and exc.errno == errno.ELOOP:
                self._skip(relpath, "symlink loop")
            else:
                self.unreadable_files.append(relpath)
                self._skip(relpath, f"cannot stat: {exc.strerror or exc}")
        return None

    def _link_stat(self, relpath: str) -> os.stat_result:
        """A link's target, opened beneath the root (never stat'ed by path)."""
        assert self._root is not None
        full = f"{self.prefix}/{relpath}" if self.prefix else relpath
        fd = self._root.open_file(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)


def _refusal(st: os.stat_result) -> str | None:
    if stat.S_ISDIR(st.st_mode):
        return "symlink to a folder: not followed"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"
    return None


def _item(entry: os.DirEntry[str]) -> _Item:
    """A listing entry; one that vanishes before its type is known is taken as a file."""
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
        is_link = entry.is_symlink()
    except OSError:
        is_dir = is_link = False
    key = entry.name + "/" if is_dir else entry.name
    return _Item(key, entry.name, is_dir, is_link)


def walk(
    root: Root | Path,
    rules: Rules,
    *,
    prefix: str = "",
    max_depth: int = DEFAULT_MAX_DEPTH,
    on_skip: SkipHook | None = None,
) -> Scan:
    """A :class:`Scan` of ``root``; iterate it for entries, then read ``unreadable_dirs``."""
    return Scan(root, rules, prefix=prefix, max_depth=max_depth, on_skip=on_skip)


def is_empty(root: Root | Path, rules: Rules) -> bool:
    """Whether no file syncd would track is found; stops at the first one.

    A root that cannot be read counts as empty: for the deletion guard that asks this,
    "cannot see any file" must hold deletions just like "there are none".
    """
    return next(iter(Scan(root, rules)), None) is None


#: Says how an operator accepts a root that now resolves to another folder.
REPLACED_HINT = "syncd approve-deletes --folder PATH accepts it"


def root_health(
    root: Path, *, expected_dev: int | None, expected_ino: int | None = None
) -> RootHealth:
    """Whether this root may be used: present, a readable folder, the same folder as before.

    A root whose inode differs from the one recorded resolves to another folder (renamed
    away and replaced, or a symlink put in its place): it is ``REPLACED`` and unusable until
    it comes back or an operator accepts it. The same inode on another device is a disk
    swapped at a mount point: ``OTHER_DEVICE``.
    """
    try:
        st = Path(root).stat()
    except (FileNotFoundError, NotADirectoryError):
        return RootHealth(ok=False, reason="missing", state=RootState.MISSING)
    except OSError as exc:
        return RootHealth(
            ok=False, reason=f"unreadable: {exc.strerror or exc}", state=RootState.UNREADABLE
        )
    if not stat.S_ISDIR(st.st_mode):
        return RootHealth(
            ok=False, reason="not a directory", dev=st.st_dev, state=RootState.NOT_A_DIRECTORY
        )
    try:
        with os.scandir(root) as it:
            next(it, None)
    except OSError as exc:
        return RootHealth(
            ok=False,
            reason=f"unreadable: {exc.strerror or exc}",
            dev=st.st_dev,
            state=RootState.UNREADABLE,
        )
    return judge_identity(st.st_dev, st.st_ino, expected_dev, expected_ino)


def judge_identity(
    dev: int, ino: int, expected_dev: int | None, expected_ino: int | None
) -> RootHealth:
    """The verdict on a root folder's (dev, inode) against the one recorded for it."""
    if expected_ino is not None and ino != expected_ino:
        reason = (
            f"root now resolves to another folder than before (inode {ino}, expected "
            f"{expected_ino}); nothing is uploaded or deleted; {REPLACED_HINT}"
        )
        return RootHealth(ok=False, reason=reason, dev=dev, state=RootState.REPLACED, ino=ino)
    if expected_dev is not None and dev != expected_dev:
        reason = f"on another device than before ({dev}, expected {expected_dev})"
        return RootHealth(ok=False, reason=reason, dev=dev, state=RootState.OTHER_DEVICE, ino=ino)
    return RootHealth(ok=True, dev=dev, ino=ino)
