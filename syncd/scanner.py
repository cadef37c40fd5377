"""Walk a hot folder in relpath order, streaming, without following it out of its root.

The order is the point: entries come out sorted exactly as Python compares ``str`` (code
point order, which is also SQLite's BINARY order of UTF-8 text), so the caller can
merge-join a scan of a million files against ``ORDER BY relpath`` with constant memory.
Each directory is listed and sorted on its own, folders keyed ``name + "/"``, and the
walk goes depth first: every relpath below ``d/`` starts with ``d/``, so a folder sorts
among its siblings exactly where its contents do. Memory is one listing per level.

What a scan does not say is as important as what it does: a folder that could not be
listed (``unreadable_dirs``) or a file that could not be stat'ed (``unreadable_files``)
is *unknown*, and the caller must not read the files it tracks there as deleted.
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

from syncd.hashing import file_stat
from syncd.model import FileStat
from syncd.tags import Rules, is_storable, printable

log = structlog.get_logger(__name__)

SkipHook = Callable[[str, str], None]


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


@dataclass(frozen=True, slots=True)
class RootHealth:
    """Whether a root can be trusted; ``dev`` is its device when it could be stat'ed."""

    ok: bool
    reason: str | None = None
    dev: int | None = None
    state: RootState = RootState.OK

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
    """One pass over a root: iterate it once, then read what could not be seen.

    ``on_skip(relpath, reason)`` hears of files that exist but will not be tracked
    (unstorable names, symlinks out of the root, broken links, special files); relpaths
    given to it are :func:`syncd.tags.printable`. A file that vanishes between the
    listing and its stat is left out silently: it is gone, and the watcher says so.
    """

    def __init__(self, root: Path, rules: Rules, *, on_skip: SkipHook | None = None) -> None:
        self.root = root
        self.rules = rules
        self.unreadable_dirs: list[str] = []
        self.unreadable_files: list[str] = []
        self._on_skip = on_skip
        self._root = os.fspath(root).rstrip("/") or "/"
        self._real_root = os.path.realpath(root)

    def __iter__(self) -> Iterator[ScanEntry]:
        self.unreadable_dirs.clear()
        self.unreadable_files.clear()
        stack: list[tuple[str, Iterator[_Item]]] = []
        top = self._listing("")
        if top is not None:
            stack.append(("", iter(top)))
        while stack:
            prefix, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                continue
            relpath = prefix + item.name
            if item.is_dir:
                listing = self._enter(relpath)
                if listing is not None:
                    stack.append((relpath + "/", iter(listing)))
                continue
            entry = self._file(relpath, item)
            if entry is not None:
                yield entry

    def _skip(self, relpath: str, reason: str) -> None:
        log.debug("scan.skip", path=printable(relpath), reason=reason)
        if self._on_skip is not None:
            self._on_skip(printable(relpath), reason)

    def _enter(self, relpath: str) -> list[_Item] | None:
        if self.rules.ignores_dir(relpath, parents_checked=True):
            return None
        if not is_storable(relpath):
            self._skip(relpath, "folder name is not valid UTF-8: it cannot be stored")
            return None
        return self._listing(relpath)

    def _listing(self, relpath: str) -> list[_Item] | None:
        """One folder's entries in key order, or None (and noted) when it cannot be read."""
        path = self._path(relpath) if relpath else self._root
        try:
            with os.scandir(path) as it:
                items = [_item(entry) for entry in it]
        except OSError as exc:
            self.unreadable_dirs.append(relpath)
            log.warning("scan.unreadable_dir", path=printable(relpath), error=exc.strerror)
            return None
        items.sort(key=lambda item: item.key)
        return items

    def _path(self, relpath: str) -> str:
        """Plain strings, not Path objects: a scan builds a million of these."""
        return f"{self._root.rstrip('/')}/{relpath}"

    def _file(self, relpath: str, item: _Item) -> ScanEntry | None:
        if self.rules.ignores_file(relpath, parents_checked=True):
            return None
        if not is_storable(relpath):
            self._skip(relpath, "file name is not valid UTF-8: it cannot be stored")
            return None
        st = self._stat(relpath, item)
        if st is None:
            return None
        reason = self._refusal(relpath, item, st)
        if reason is not None:
            self._skip(relpath, reason)
            return None
        return ScanEntry(relpath, file_stat(st))

    def _stat(self, relpath: str, item: _Item) -> os.stat_result | None:
        """The file's stat (the target's, for a link), or None once the failure is noted."""
        path = self._path(relpath)
        try:
            return os.stat(path) if item.is_link else os.lstat(path)  # noqa: PTH116 - hot path
        except FileNotFoundError:
            if item.is_link and os.path.lexists(path):
                self._skip(relpath, "broken symlink")
        except OSError as exc:
            if item.is_link and exc.errno == errno.ELOOP:
                self._skip(relpath, "symlink loop")
            else:
                self.unreadable_files.append(relpath)
                self._skip(relpath, f"cannot stat: {exc.strerror or exc}")
        return None

    def _refusal(self, relpath: str, item: _Item, st: os.stat_result) -> str | None:
        if stat.S_ISDIR(st.st_mode):
            return "symlink to a folder: not followed"
        if item.is_link and not self._inside(self._path(relpath)):
            return "symlink points outside the folder"
        if not stat.S_ISREG(st.st_mode):
            return "not a regular file"
        return None

    def _inside(self, path: str) -> bool:
        target = os.path.realpath(path)
        return target.startswith(self._real_root.rstrip("/") + "/")


def _item(entry: os.DirEntry[str]) -> _Item:
    """A listing entry; one that vanishes before its type is known is taken as a file."""
    try:
        is_dir = entry.is_dir(follow_symlinks=False)
        is_link = entry.is_symlink()
    except OSError:
        is_dir = is_link = False
    key = entry.name + "/" if is_dir else entry.name
    return _Item(key, entry.name, is_dir, is_link)


def walk(root: Path, rules: Rules, *, on_skip: SkipHook | None = None) -> Scan:
    """A :class:`Scan` of ``root``; iterate it for entries, then read ``unreadable_dirs``."""
    return Scan(root, rules, on_skip=on_skip)


def is_empty(root: Path, rules: Rules) -> bool:
    """Whether no file syncd would track is found; stops at the first one.

    A root that cannot be read counts as empty: for the deletion guard that asks this,
    "cannot see any file" must hold deletions just like "there are none".
    """
    return next(iter(Scan(root, rules)), None) is None


def root_health(root: Path, *, expected_dev: int | None) -> RootHealth:
    """Whether deletions may be mirrored for this root: present, a readable folder, same device."""
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
    if expected_dev is not None and st.st_dev != expected_dev:
        reason = f"on another device than before ({st.st_dev}, expected {expected_dev})"
        return RootHealth(ok=False, reason=reason, dev=st.st_dev, state=RootState.OTHER_DEVICE)
    return RootHealth(ok=True, dev=st.st_dev)
