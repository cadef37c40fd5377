"""Moving a file out of a hot folder without ever overwriting, losing or doubling it.

The only module that writes to or removes from a hot folder (``after_upload``), kept to
a few small functions so that every such file operation can be routed through one place.

``relocate(src, dest, sha256)`` puts ``src`` at ``dest`` and then removes ``src``:

* same filesystem: a hard link to ``dest`` (which fails rather than replace an existing
  file), then the unlink of ``src``;
* otherwise (or where hard links are refused): a copy into a hidden partial file beside
  ``dest``, fsync, a comparison of its bytes with the uploaded content's hash, a link to
  ``dest`` (again never replacing), then the unlink of ``src``.

Each step can be repeated after a crash: ``relocate`` called again for the same pair
finishes what was begun (``dest`` already holding the same bytes means only ``src`` is
left to remove). ``Clash`` says ``dest`` holds another file: pick another name.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

_CHUNK = 1 << 20


class Clash(Exception):
    """The destination exists and holds another file: it is never overwritten."""


class Changed(Exception):
    """The source's bytes are not the content that was uploaded: it is left alone."""


def relocate(src: Path, dest: Path, sha256: str) -> None:
    """Move ``src`` to ``dest`` (see the module docstring); safe to call again after a crash."""
    if dest.exists():
        if not _ours(src, dest, sha256):
            raise Clash(str(dest))
    elif src.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        if _link(src, dest):
            _partial(dest).unlink(missing_ok=True)  # a copy a crash cut short, if any
        else:
            _copy_in(src, dest, sha256)
    else:
        return  # neither: the file was deleted by someone meanwhile
    src.unlink(missing_ok=True)
    _sync_dir(src.parent)


def remove(src: Path) -> None:
    """Unlink ``src`` (already gone is fine) and make the removal durable."""
    src.unlink(missing_ok=True)
    _sync_dir(src.parent)


def free_name(dest: Path) -> Path:
    """``dest``, or ``name (1).ext``, ``name (2).ext``... whichever does not exist yet."""
    candidate, n = dest, 0
    while candidate.exists() or _partial(candidate).exists():
        n += 1
        candidate = dest.with_name(f"{dest.stem} ({n}){dest.suffix}")
    return candidate


def _ours(src: Path, dest: Path, sha256: str) -> bool:
    """Whether ``dest`` already is this file: the same inode, or the uploaded bytes."""
    try:
        if src.exists() and src.samefile(dest):
            return True
    except OSError:
        pass
    return _sha256(dest) == sha256


def _link(src: Path, dest: Path) -> bool:
    """A hard link (never replaces); False where links cannot be made (another fs...)."""
    try:
        os.link(src, dest, follow_symlinks=False)
    except FileExistsError:
        raise Clash(str(dest)) from None
    except OSError as exc:
        if exc.errno in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.ENOTSUP):
            return False
        raise
    _sync_dir(dest.parent)
    return True


def _copy_in(src: Path, dest: Path, sha256: str) -> None:
    """Copy to a partial file, fsync, check the bytes, then link it to ``dest``."""
    partial = _partial(dest)
    partial.unlink(missing_ok=True)
    digest = hashlib.sha256()
    with open(src, "rb") as reader, open(partial, "xb") as writer:
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
            digest.update(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    if digest.hexdigest() != sha256 or _sha256(partial) != sha256:
        partial.unlink()
        raise Changed(str(src))
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
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as reader:
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
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
