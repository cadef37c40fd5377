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
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import compress
from operator import attrgetter, methodcaller, not_
from pathlib import Path
from stat import S_ISREG

import structlog

from syncd.config import FolderConfig
from syncd.hashing import file_stat
from syncd.model import FileStat
from syncd.plan import Seen, Segment
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


#: Why a link to a folder is not walked (a folder is only ever entered as itself).
FOLDER_LINK = "symlink to a folder: not followed"

#: Files per :class:`~syncd.plan.Segment` at most: a huge folder is compared in parts.
SEGMENT_FILES = 1000


@dataclass(slots=True)
class _Run:
    """Files of one folder between two of its subfolders (or at most SEGMENT_FILES),
    still to be stat'ed, and the relpath range they cover in the folder (``lo``, ``hi``)."""

    dir: str  # the folder, relative to the scan's prefix: "" or "a/b/"
    fd: int
    names: list[str]
    links: frozenset[str]
    lo: str
    hi: str | None


@dataclass(slots=True)
class _Dir:
    """A folder being walked: its files and subfolders (keys: name + "/"), each sorted,
    how far the walk is in each, and the start of the range its next run covers."""

    rel: str
    fd: int
    files: list[str]
    subdirs: list[str]
    links: frozenset[str]
    lo: str
    end: str | None
    next_file: int = 0
    next_dir: int = 0


class Scan:
    """One pass over a root (or the folder ``prefix`` in it): iterate it once (as
    entries, or as :meth:`segments`), then read what could not be seen.

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
        self._keeps = rules.name_test()

    def __iter__(self) -> Iterator[ScanEntry]:
        """Each file, stat'ed only when its turn comes."""
        for run in self._runs():
            for name, st in self._stats(run):
                yield ScanEntry(run.dir + name, file_stat(st))

    def segments(self) -> Iterator[Segment]:
        """The walk as :class:`~syncd.plan.Segment` s, relpaths relative to the folder:
        what a rescan compares with the store, one segment at a time."""
        top = self.prefix + "/" if self.prefix else ""
        for run in self._runs():
            seen: list[Seen] = []
            devs: list[int] = []
            base = top + run.dir
            for name, st in self._stats(run):
                seen.append((base + name, st.st_size, st.st_mtime_ns, st.st_ino))
                devs.append(st.st_dev)
            yield Segment(base, run.lo, run.hi, seen, devs)

    def _stats(self, run: _Run) -> Iterator[tuple[str, os.stat_result]]:
        """The run's files syncd tracks, each with its stat (a link: its target's), stat'ed
        when its turn comes. Names the rules leave out are dropped before any stat; a
        plain file with a plain name takes one ``lstat``, anything else :meth:`_file`."""
        keeps, fd = self._keeps, run.fd
        if keeps is None:
            for name in run.names:
                if (st := self._file(run, name, kept=False)) is not None:
                    yield name, st
            return
        for name in filter(keeps, run.names):
            if name.isascii():
                try:
                    st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    pass
                else:
                    if S_ISREG(st.st_mode):
                        yield name, st
                        continue
            if (st := self._file(run, name, kept=True)) is not None:  # the careful way
                yield name, st

    def _runs(self) -> Iterator[_Run]:
        """The walk's runs in relpath order; the descriptors it opens are closed at its end."""
        self.unreadable_dirs.clear()
        self.unreadable_files.clear()
        self.too_deep.clear()
        top = self.prefix + "/" if self.prefix else ""
        end = self.prefix + "0" if self.prefix else None  # "0" follows "/"
        root = self._given or self._open_root()
        stack: list[_Dir] = []
        try:
            first = self._first(root, top, end) if root is not None else None
            if first is None:  # nothing listed: every tracked path there is gone or unknown
                yield _Run("", -1, [], frozenset(), top, end)
                return
            stack.append(first)
            yield from self._walk(stack, top)
        finally:
            for d in stack:
                os.close(d.fd)
            if root is not None and self._given is None:
                root.close()

    def _first(self, root: Root, top: str, end: str | None) -> _Dir | None:
        self._root = root
        fd = self._top(root)
        if fd is None:
            return None
        listing = self._listing("", fd)
        if listing is None:
            os.close(fd)
            return None
        return _Dir("", fd, *listing, lo=top, end=end)

    def _open_root(self) -> Root | None:
        try:
            return Root(self._path)
        except OSError as exc:
            self.unreadable_dirs.append("")
            log.warning("scan.unreadable_dir", path="", error=exc.strerror)
            return None

    def _walk(self, stack: list[_Dir], top: str) -> Iterator[_Run]:
        """Depth first; a run ends at each subfolder (whose range it leaves out), each
        SEGMENT_FILES files and at its folder's end."""
        while stack:
            d = stack[-1]
            if d.next_dir == len(d.subdirs):
                yield from _runs_of(d, len(d.files), d.end, top)
                os.close(stack.pop().fd)
                continue
            key = d.subdirs[d.next_dir]
            d.next_dir += 1
            sub = d.rel + key
            yield from _runs_of(d, bisect_left(d.files, key, d.next_file), top + sub, top)
            d.lo = top + sub[:-1] + "0"  # "0" follows "/": past everything below sub
            child = self._enter(sub[:-1], key[:-1], d.fd)
            if child is None:  # not walked: what is tracked below is gone or unknown
                yield _Run(sub, -1, [], frozenset(), top + sub, d.lo)
                continue
            stack.append(_Dir(sub, child[0], *child[1], lo=top + sub, end=d.lo))

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

    def _enter(self, relpath: str, name: str, parent: int) -> tuple[int, _Listing] | None:
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

    def _listing(self, relpath: str, fd: int) -> _Listing | None:
        """One folder's files and subfolders (keys), each sorted, and its symlinks' names,
        or None (and noted) when it cannot be read. The types come with the listing
        (d_type): no stat per entry here. One that vanishes before its type is known is a
        file (its stat will say it is gone)."""
        try:
            with os.scandir(fd) as it:
                entries = list(it)
        except OSError as exc:
            self._unreadable(relpath, exc)
            return None
        names = list(map(_NAME, entries))
        try:
            is_dir = list(map(_IS_DIR, entries))
            links = frozenset(map(_NAME, filter(_IS_LINK, entries)))
        except OSError:
            is_dir = [_is_dir(e) for e in entries]
            links = frozenset(e.name for e in entries if _is_link(e))
        if not any(is_dir):
            return sorted(names), [], links
        files = sorted(compress(names, map(not_, is_dir)))
        return files, sorted(n + "/" for n in compress(names, is_dir)), links

    def _file(self, run: _Run, name: str, *, kept: bool) -> os.stat_result | None:
        """The stat of a file syncd tracks, or None; ``kept``: the rules keep its name."""
        if not (kept and name.isascii()) and not self._storable(run, name, kept=kept):
            return None
        link = name in run.links
        try:
            if link:
                st = self._link_stat(run.dir + name)
            else:
                st = os.stat(name, dir_fd=run.fd, follow_symlinks=False)
        except OSError as exc:
            self._stat_failed(run.dir + name, exc, link=link)
            return None
        if S_ISREG(st.st_mode):
            return st
        folder = stat.S_ISDIR(st.st_mode)
        self._skip(run.dir + name, FOLDER_LINK if folder else "not a regular file")
        return None

    def _storable(self, run: _Run, name: str, *, kept: bool) -> bool:
        """Whether the rules keep the file (by its relpath, unless ``kept``) and its name
        can be stored; a name that cannot is told."""
        relpath = run.dir + name
        if not kept and self.rules.ignores_file(relpath, parents_checked=True):
            return False
        if not is_storable(relpath):
            self._skip(relpath, "file name is not valid UTF-8: it cannot be stored")
            return False
        return True

    def _stat_failed(self, relpath: str, exc: OSError, *, link: bool) -> None:
        """Note why a file could not be stat'ed: a link's trouble, or an unreadable file."""
        if isinstance(exc, Outside):
            self._skip(relpath, "symlink points outside the folder")
        elif isinstance(exc, FileNotFoundError | NotADirectoryError):
            if link:
                self._skip(relpath, "broken symlink")
        elif link and exc.errno == errno.ELOOP:
            self._skip(relpath, "symlink loop")
        else:
            self.unreadable_files.append(relpath)
            self._skip(relpath, f"cannot stat: {exc.strerror or exc}")

    def _link_stat(self, relpath: str) -> os.stat_result:
        """A link's target, opened beneath the root (never stat'ed by path)."""
        assert self._root is not None
        full = f"{self.prefix}/{relpath}" if self.prefix else relpath
        fd = self._root.open_file(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)


#: A folder's listing: its files and its subfolders' keys in order, and its symlinks.
_Listing = tuple[list[str], list[str], frozenset[str]]
_NAME = attrgetter("name")
_IS_DIR = methodcaller("is_dir", follow_symlinks=False)
_IS_LINK = methodcaller("is_symlink")


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _runs_of(d: _Dir, upto: int, hi: str | None, top: str) -> Iterator[_Run]:
    """Runs of the folder's files from where the walk is up to ``upto`` (SEGMENT_FILES
    at most each), the last one covering the range up to ``hi``."""
    while upto - d.next_file > SEGMENT_FILES:
        cut = d.next_file + SEGMENT_FILES
        middle = top + d.rel + d.files[cut]
        yield _Run(d.rel, d.fd, d.files[d.next_file : cut], d.links, d.lo, middle)
        d.next_file, d.lo = cut, middle
    yield _Run(d.rel, d.fd, d.files[d.next_file : upto], d.links, d.lo, hi)
    d.next_file = upto


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
