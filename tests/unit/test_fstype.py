"""The filesystem-type probe: a mount table read, and the watch mode chosen from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd import checks, fstype
from syncd.checks import Level
from syncd.config import Config, FolderConfig

ROOT = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"


def table(*lines: tuple[str, str]) -> str:
    """A mountinfo text: the root on ext4, then (mount point, type) lines."""
    text = ROOT
    for i, (point, kind) in enumerate(lines):
        escaped = point.replace(" ", "\\040")
        text += f"{40 + i} 22 0:{50 + i} / {escaped} rw,relatime shared:{9 + i} - {kind} src rw\n"
    return text


def test_parse_unescapes_mount_points_and_skips_junk() -> None:
    """Octal escapes in mount points are undone; malformed lines are skipped."""
    mounts = fstype.parse_mountinfo(table(("/srv/my share", "cifs")) + "garbage line\n")
    assert [(m.mount_point, m.fstype) for m in mounts] == [("/", "ext4"), ("/srv/my share", "cifs")]


@pytest.mark.parametrize(
    ("kind", "polled"),
    [
        ("nfs", True), ("nfs4", True), ("cifs", True), ("smb3", True), ("fuse.sshfs", True),
        ("fuse.rclone", True), ("9p", True), ("ceph", True), ("glusterfs", True),
        ("ext4", False), ("xfs", False), ("btrfs", False), ("tmpfs", False),
        ("fuseblk", False), ("fuse.ntfs-3g", False),
    ],
)  # fmt: skip
def test_auto_polls_network_and_fuse_filesystems(tmp_path: Path, kind: str, polled: bool) -> None:
    """polling = "auto" polls NFS, SMB, FUSE, 9p, Ceph...; local filesystems use inotify."""
    mounts = fstype.parse_mountinfo(table((str(tmp_path), kind)))
    choice = fstype.choose("auto", tmp_path / "hot", mounts)
    assert choice.polling is polled
    assert kind in choice.reason


def test_deepest_mount_wins_and_a_missing_folder_uses_its_parent(tmp_path: Path) -> None:
    """The mount holding a folder is the deepest one above it, even before it exists."""
    mounts = fstype.parse_mountinfo(table((str(tmp_path), "nfs4"), (str(tmp_path / "l"), "xfs")))
    assert fstype.mount_of(tmp_path / "l" / "not-yet", mounts).fstype == "xfs"  # type: ignore[union-attr]
    assert fstype.mount_of(tmp_path / "lx", mounts).fstype == "nfs4"  # type: ignore[union-attr]


def test_forced_settings_win_and_say_so(tmp_path: Path) -> None:
    """true and false override the filesystem; false on NFS says other machines go unseen."""
    mounts = fstype.parse_mountinfo(table((str(tmp_path), "nfs")))
    forced_off = fstype.choose(False, tmp_path, mounts)
    assert not forced_off.polling and forced_off.network
    assert "not seen" in forced_off.reason
    assert fstype.choose(True, tmp_path, fstype.parse_mountinfo(ROOT)).polling


def test_unreadable_table_means_inotify(tmp_path: Path) -> None:
    """No mount table (not Linux, no /proc): auto falls back to inotify."""
    assert fstype.read_mounts(tmp_path / "absent") == []
    assert not fstype.choose("auto", tmp_path, []).polling


def _config(folder: FolderConfig) -> Config:
    return Config(folders=(folder,))


def test_check_warns_for_a_network_mount_forced_to_inotify(tmp_path: Path) -> None:
    """`check` names each folder's mode and why, and warns for NFS with polling = false."""
    info = tmp_path / "mountinfo"
    info.write_text(table((str(tmp_path), "nfs4")))
    [forced] = checks.mode_findings(_config(FolderConfig(tmp_path, polling=False)), info)
    assert forced.level is Level.WARNING and "not seen" in forced.text
    [auto] = checks.mode_findings(_config(FolderConfig(tmp_path)), info)
    assert auto.level is Level.OK and auto.text.startswith(f"{tmp_path}: polling (auto: nfs4")


def test_polled_folders_take_no_inotify_watches(tmp_path: Path) -> None:
    """A folder that auto-polls is not counted against the inotify limit."""
    info = tmp_path / "mountinfo"
    info.write_text(table((str(tmp_path), "cifs")))
    limit = tmp_path / "limit"
    limit.write_text("1\n")
    [finding] = checks.watch_findings(_config(FolderConfig(tmp_path)), limit, info)
    assert finding.text == "no folder needs inotify watches"
