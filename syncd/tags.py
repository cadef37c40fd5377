"""What a path means: its tags, its asset name, and whether syncd looks at it at all.

Pure string work on relpaths (always ``/``-separated, relative to the folder root); no
file system calls, so the scanner, the watcher and the planner all agree by construction.

Matching rules (the ``include``/``exclude`` globs and the built-in ignores):

* Names are compared after Unicode NFC normalisation and lower-casing, so ``IMG.JPG``
  matches ``*.jpg`` and a name written in NFD by a Mac client matches a pattern typed
  in NFC.
* A glob without ``/`` matches the file or folder *name* at any depth (``*.psd``,
  ``raw``). A glob with a ``/`` inside matches the whole relpath (``clients/old/*``); a
  leading ``/`` is dropped, and ``*`` may cross ``/``.
* ``exclude`` globs apply to folders too, like ``.gitignore``: ``raw`` excludes files and
  folders named ``raw``, ``raw/`` (a trailing slash) only folders. Nothing below an
  excluded folder is scanned or watched.
* ``include`` applies to files only; an empty ``include`` lets every file through that
  nothing else ignores.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

#: Hidden names (a leading ``.``) are ignored separately, at any depth.
BUILTIN_FILE_GLOBS: tuple[str, ...] = (
    # temporary and partial files: never upload half a file
    "*.tmp",
    "*.temp",
    "*.part",
    "*.partial",
    "*.crdownload",
    "*.download",
    "~*",
    ".~lock*",
    "*.swp",
    # studio and NAS debris
    "thumbs.db",
    "desktop.ini",
    ".ds_store",
    "*.xmp",
)

BUILTIN_DIR_GLOBS: tuple[str, ...] = (
    "@eadir",
    "captureone",
    "#recycle",
    "#snapshot",
    "$recycle.bin",
    "system volume information",
    "lost+found",
    ".trash-*",
)


def _norm(text: str) -> str:
    return unicodedata.normalize("NFC", text).lower()


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def folder_tags(relpath: str, configured: Sequence[str]) -> tuple[str, ...]:
    """Configured tags, then each folder between the root and the file, first one wins.

    Tags are NFC-normalised so a folder named on a Mac (NFD) and on Linux (NFC) tags
    alike, and the asset identity does not depend on which machine made the folder.
    """
    seen: dict[str, None] = {}
    for tag in (*configured, *relpath.split("/")[:-1]):
        normal = _nfc(tag)
        if normal:
            seen.setdefault(normal, None)
    return tuple(seen)


def asset_name(relpath: str) -> str:
    """The file name without its last extension: ``a/b/c.jpg`` names the asset ``c``."""
    name = posixpath.basename(relpath)
    return _nfc(posixpath.splitext(name)[0])


def is_storable(relpath: str) -> bool:
    """Whether the path is valid UTF-8; names with undecodable bytes cannot be stored."""
    try:
        relpath.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: What a folder takes when its ``include`` is not set.
DEFAULT_INCLUDE = ("*.jpg", "*.jpeg", "*.png", "*.webp")


def printable(relpath: str) -> str:
    """A path safe to log: undecodable bytes appear as ``\\xNN`` escapes."""
    return relpath.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROLS_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def for_people(text: str, *, keep_newlines: bool = False) -> str:
    """Text safe for a terminal: control characters (C0, DEL, C1; ESC among them) and
    undecodable bytes appear as ``\\xNN``. A file name or a server's error text can then
    neither move the cursor, recolour, retitle the terminal nor fake a line of output.
    """
    pattern = _CONTROLS_BUT_NEWLINE if keep_newlines else _CONTROLS
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", printable(text))


@dataclass(frozen=True, slots=True)
class _Globs:
    """One compiled set of globs: some match the name, some the whole relpath."""

    by_name: re.Pattern[str] | None
    by_path: re.Pattern[str] | None

    @classmethod
    def compile(cls, globs: Sequence[str]) -> _Globs:
        names = [g for g in globs if "/" not in g]
        paths = [g.lstrip("/") for g in globs if "/" in g]
        return cls(_union(names), _union(paths))

    def match(self, name: str, relpath: str) -> bool:
        if self.by_name is not None and self.by_name.match(name):
            return True
        return self.by_path is not None and self.by_path.match(relpath) is not None


def _union(globs: Sequence[str]) -> re.Pattern[str] | None:
    if not globs:
        return None
    return re.compile("|".join(fnmatch.translate(_norm(g)) for g in globs))


@dataclass(frozen=True, slots=True)
class _NameGlobs:
    """Globs of a name sorted by shape, so most are string tests rather than a regex:
    ``thumbs.db`` a name, ``*.jpg`` a suffix, ``~*`` a prefix; the rest a regex."""

    names: frozenset[str]
    prefixes: tuple[str, ...]
    suffixes: tuple[str, ...]
    other: re.Pattern[str] | None

    @classmethod
    def compile(cls, globs: Sequence[str]) -> _NameGlobs:
        names, prefixes, suffixes, other = set(), [], [], []
        for glob in map(_norm, globs):
            head, tail = glob[:1], glob[1:]
            if not _WILD.search(glob):
                names.add(glob)
            elif head == "*" and not _WILD.search(tail):
                suffixes.append(tail)
            elif glob[-1:] == "*" and not _WILD.search(glob[:-1]):
                prefixes.append(glob[:-1])
            else:
                other.append(glob)
        return cls(frozenset(names), tuple(prefixes), tuple(suffixes), _union(other))


_WILD = re.compile(r"[*?\[]")


def _name_test(include: Sequence[str], exclude: Sequence[str]) -> Callable[[str], bool] | None:
    """Not hidden, no exclude glob, some include glob (if any), told from the name alone;
    None when a glob looks at the whole relpath."""
    if any("/" in g for g in (*include, *exclude)):
        return None
    ex = _NameGlobs.compile(exclude)
    ex_names, ex_pre, ex_suf, ex_other = ex.names, ex.prefixes, ex.suffixes, ex.other
    inc = _NameGlobs.compile(include or ["*"])
    in_names, in_pre, in_suf, in_other = inc.names, inc.prefixes, inc.suffixes, inc.other
    normalize = unicodedata.normalize

    def keeps(name: str) -> bool:
        norm = name.lower() if name.isascii() else normalize("NFC", name).lower()  # as _norm
        if (
            not norm
            or norm[0] == "."
            or norm.endswith(ex_suf)
            or norm in ex_names
            or norm.startswith(ex_pre)
            or (ex_other is not None and ex_other.match(norm) is not None)
        ):
            return False
        return (
            norm.endswith(in_suf)
            or norm in in_names
            or norm.startswith(in_pre)
            or (in_other is not None and in_other.match(norm) is not None)
        )

    return keeps


def _split_excludes(exclude: Sequence[str]) -> tuple[list[str], list[str]]:
    """Excludes for files (no trailing ``/``) and for folders (all of them)."""
    files: list[str] = []
    dirs: list[str] = []
    for raw in exclude:
        glob = raw.strip()
        if not glob.strip("/"):
            continue
        if glob.endswith("/"):
            dirs.append(glob.rstrip("/"))
        else:
            files.append(glob)
            dirs.append(glob)
    return files, dirs


@dataclass(frozen=True)
class Rules:
    """Which files and folders of a hot folder syncd ignores (see the module docstring).

    ``parents_checked=True`` tells a caller that walks the tree top-down (and so has
    already refused every ignored parent) that only the last component needs a look.
    """

    include: Sequence[str] = DEFAULT_INCLUDE
    exclude: Sequence[str] = ()
    _include: _Globs | None = field(init=False, repr=False, compare=False)
    _exclude_files: _Globs = field(init=False, repr=False, compare=False)
    _exclude_dirs: _Globs = field(init=False, repr=False, compare=False)
    _name_test: Callable[[str], bool] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        include = tuple(g.strip() for g in self.include if g.strip())
        exclude = tuple(self.exclude)
        file_excludes, dir_excludes = _split_excludes(exclude)
        object.__setattr__(self, "include", include)
        object.__setattr__(self, "exclude", exclude)
        object.__setattr__(self, "_include", _Globs.compile(include) if include else None)
        object.__setattr__(
            self, "_exclude_files", _Globs.compile([*BUILTIN_FILE_GLOBS, *file_excludes])
        )
        object.__setattr__(
            self, "_exclude_dirs", _Globs.compile([*BUILTIN_DIR_GLOBS, *dir_excludes])
        )
        file_globs = [*BUILTIN_FILE_GLOBS, *file_excludes]
        object.__setattr__(self, "_name_test", _name_test(include, file_globs))

    def name_test(self) -> Callable[[str], bool] | None:
        """Whether a file of this name is kept, told from the name alone, when no glob
        looks at the whole relpath (None when one does: ask :meth:`ignores_file`).

        Says what ``not ignores_file(relpath, parents_checked=True)`` says for a file of
        that name (a test holds the two together); a rescan asks it of every file, so
        most globs are string tests here (a suffix, a prefix, a name), not a regex.
        """
        return self._name_test

    def ignores_file(self, relpath: str, *, parents_checked: bool = False) -> bool:
        """Whether the file at ``relpath`` is left alone (by its name or its folders)."""
        head, _, name = relpath.rpartition("/")
        if not parents_checked and head and self.ignores_dir(head):
            return True
        norm_name = _norm(name)
        if not norm_name or norm_name.startswith("."):
            return True
        norm_path = _norm(relpath)
        if self._exclude_files.match(norm_name, norm_path):
            return True
        return self._include is not None and not self._include.match(norm_name, norm_path)

    def why_ignored(self, relpath: str) -> str | None:
        """Which rule ignores this file, in words (for ``syncd explain``), or None.

        Says the same as :meth:`ignores_file`, rule by rule; a test holds the two together.
        """
        head, _, name = relpath.rpartition("/")
        parts = head.split("/") if head else []
        for depth in range(len(parts)):
            folder = "/".join(parts[: depth + 1])
            if self._dir_name_ignored(parts[depth], folder):
                return f"inside the ignored folder {folder!r}: {self._dir_reason(parts[depth])}"
        norm_name, norm_path = _norm(name), _norm(relpath)
        if not norm_name or norm_name.startswith("."):
            return "hidden name (starts with '.')"
        if _Globs.compile(BUILTIN_FILE_GLOBS).match(norm_name, norm_path):
            return "temporary or system file name (built-in ignore list)"
        if self._exclude_files.match(norm_name, norm_path):
            return f"matches an exclude glob of the folder ({', '.join(self.exclude)})"
        if self._include is not None and not self._include.match(norm_name, norm_path):
            return f"matches no include glob of the folder ({', '.join(self.include)})"
        return None

    def _dir_reason(self, name: str) -> str:
        norm = _norm(name)
        if not norm or norm.startswith("."):
            return "hidden folder"
        if _Globs.compile(BUILTIN_DIR_GLOBS).match(norm, norm):
            return "system or NAS folder (built-in ignore list)"
        return f"an exclude glob ({', '.join(self.exclude)})"

    def ignores_dir(self, relpath: str, *, parents_checked: bool = False) -> bool:
        """Whether the folder at ``relpath`` (or one above it) is never scanned nor watched."""
        if not relpath:
            return False
        parts = relpath.split("/")
        first = len(parts) - 1 if parents_checked else 0
        for depth in range(first, len(parts)):
            if self._dir_name_ignored(parts[depth], "/".join(parts[: depth + 1])):
                return True
        return False

    def _dir_name_ignored(self, name: str, relpath: str) -> bool:
        norm_name = _norm(name)
        if not norm_name or norm_name.startswith("."):
            return True
        return self._exclude_dirs.match(norm_name, _norm(relpath))
