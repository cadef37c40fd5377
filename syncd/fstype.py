"""Which filesystem a folder lives on, and so whether inotify can see its changes.

inotify reports only what this kernel does to a filesystem. On a network share (NFS,
SMB/CIFS), a FUSE mount (sshfs, rclone mount), 9p or a cluster filesystem (Ceph,
GlusterFS, Lustre) a file written by another machine raises no event at all, so such a
folder must be polled. ``polling = "auto"`` (the default) decides by the filesystem type
of the mount that holds the folder, read from ``/proc/self/mountinfo`` (the table a test
injects); an unknown or unreadable table means inotify, as before.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")

#: Filesystem types whose changes from elsewhere raise no inotify event here.
NETWORK_TYPES = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "lustre",
        "afs", "ncpfs", "davfs", "fuse", "fuseblk", "gpfs", "beegfs", "ocfs2", "gfs2",
        "vboxsf", "vmhgfs", "virtiofs",
    }
)  # fmt: skip
#: Local FUSE filesystems (a disk formatted NTFS or exFAT through FUSE) see every change.
LOCAL_FUSE = frozenset({"fuseblk", "fuse.ntfs-3g", "fuse.exfat"})


@dataclass(frozen=True, slots=True)
class Mount:
    """One line of the mount table: where, what type, from where."""

    mount_point: str
    fstype: str
    source: str


@dataclass(frozen=True, slots=True)
class WatchChoice:
    """How a folder is watched and why, as ``check`` and ``status`` say it."""

    polling: bool
    reason: str
    #: The folder sits on a filesystem where other machines' changes raise no event.
    network: bool = False

    @property
    def mode(self) -> str:
        return "polling" if self.polling else "inotify"


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (``\\040``)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a ``/proc/<pid>/mountinfo`` text; malformed lines are skipped."""
    mounts = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if not sep or len(fields) < 5 or len(tail) < 2:
            continue
        mounts.append(Mount(_unescape(fields[4]), tail[0], _unescape(tail[1])))
    return mounts


def read_mounts(path: Path = MOUNTINFO) -> list[Mount]:
    """The mount table, or an empty one where it cannot be read (not Linux, no /proc)."""
    try:
        return parse_mountinfo(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []


def mount_of(path: Path, mounts: Sequence[Mount]) -> Mount | None:
    """The mount holding ``path`` (the deepest mount point above it; the last one wins)."""
    target = _resolved(path)
    best: Mount | None = None
    for mount in mounts:
        point = mount.mount_point.rstrip("/") or "/"
        inside = target == point or target.startswith(point + "/") or point == "/"
        if inside and (best is None or len(point) >= len(best.mount_point.rstrip("/") or "/")):
            best = mount
    return best


def _resolved(path: Path) -> str:
    """The real path of the folder, or of its nearest existing parent while it is missing."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    tail = path.relative_to(probe) if probe != path else Path()
    return os.path.normpath(Path(os.path.realpath(probe)) / tail)


def is_network(fstype: str) -> bool:
    """Whether changes on this filesystem type can come from elsewhere, unseen by inotify."""
    if fstype in LOCAL_FUSE:
        return False
    return fstype in NETWORK_TYPES or fstype.startswith("fuse.")


def choose(setting: bool | str, path: Path, mounts: Sequence[Mount]) -> WatchChoice:
    """How to watch a folder for its ``polling`` setting (``True``, ``False`` or "auto")."""
    mount = mount_of(path, mounts)
    fstype = mount.fstype if mount else None
    network = fstype is not None and is_network(fstype)
    on = f"{fstype} at {mount.mount_point}" if mount else "an unknown filesystem"
    if setting is True:
        return WatchChoice(True, f"polling = true ({on})", network)
    if setting is False:
        why = f"polling = false ({on})"
        if network:
            why += "; changes made by other machines are not seen"
        return WatchChoice(False, why, network)
    if network:
        return WatchChoice(True, f"auto: {on} is a network or FUSE filesystem", True)
    return WatchChoice(False, f"auto: {on} is local", False)
