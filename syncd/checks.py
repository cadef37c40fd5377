"""What ``syncd check`` looks at, each problem with the way to fix it.

Loading the config is the first check and happens before this module is called (a bad
config is exit status 2). The rest looks at the setup as the daemon would meet it: the
folders, the inotify watch limit, the state database, the key and whether the API takes
it. Nothing here changes anything: the state database is only opened when this user
owns it (so a check run as root cannot leave root-owned files next to the service's
database), and a missing one is not created.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from syncd import fstype
from syncd.api import AssetsClient
from syncd.apikey import ApiKey
from syncd.config import Config, FolderConfig, require_api_key
from syncd.errors import ApiError, AuthError, ConfigError, StoreError, StoreLocked, TransientError
from syncd.schema import SCHEMA_VERSION
from syncd.store import Store
from syncd.tags import Rules

INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_watches")
#: With 1 (the default of most distributions) nobody can hard-link a file they cannot read.
PROTECTED_HARDLINKS = Path("/proc/sys/fs/protected_hardlinks")
#: Above this share of the per-user limit, other programs of the same user may take the rest.
WATCH_WARN_SHARE = 0.8
#: The API probe waits no longer than this, whatever ``api.timeout_seconds`` says.
PROBE_TIMEOUT = 10.0


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of the check: what was found, and for anything not ok, how to fix it."""

    check: str
    text: str
    fix: str = ""
    level: Level = Level.OK

    @classmethod
    def problem(cls, check: str, text: str, fix: str) -> Finding:
        return cls(check, text, fix, Level.PROBLEM)


def run_all(
    config: Config,
    *,
    inotify_limit: Path = INOTIFY_LIMIT,
    hardlinks: Path = PROTECTED_HARDLINKS,
    mountinfo: Path = fstype.MOUNTINFO,
) -> list[Finding]:
    """Every check, in the order a person would fix things."""
    findings = [*folder_findings(config), *root_findings(config), *mode_findings(config, mountinfo)]
    findings += watch_findings(config, inotify_limit, mountinfo)
    findings += hardlink_findings(hardlinks)
    findings += state_findings(config.state.path)
    key_results, key = key_findings(config)
    findings += key_results
    if key is not None:
        findings += api_findings(config, key)
    return findings


def failed(findings: Iterable[Finding]) -> bool:
    """Warnings are printed with their fix but do not fail the check."""
    return any(f.level is Level.PROBLEM for f in findings)


# --- folders -------------------------------------------------------------------------


def folder_findings(config: Config) -> list[Finding]:
    problems = check_folders(config)
    if not problems:
        return [Finding("folders", f"{len(config.folders)} folder(s) present and readable")]
    return [
        Finding.problem("folders", text, _folder_fix(folder))
        for i, folder in enumerate(config.folders)
        for text in problems
        if text.startswith(f"folders[{i}].")
    ]


def _folder_fix(folder: FolderConfig) -> str:
    path = folder.path
    if not path.exists():
        return (
            f"create it (mkdir -p {path}), mount the drive or share it lives on, or"
            " correct the path in the config; syncd waits for a missing folder"
        )
    if not path.is_dir():
        return "point the folder's path at a directory"
    return (
        f"let the user syncd runs as read it: e.g. chgrp -R hotfolders {path} &&"
        f" chmod -R g+rX {path} (and search permission on every parent folder)"
    )


def root_findings(config: Config) -> list[Finding]:
    """Roots the state database holds as replaced (another folder at the path now)."""
    if not config.state.path.exists():
        return []
    try:
        store = Store.open_readonly(config.state.path)
    except StoreError:
        return []  # state_findings says what is wrong with it
    try:
        rows = {r["key"]: r for r in store.query("SELECT * FROM folders WHERE replaced = 1")}
    except StoreError:
        return []  # a database from before the root identity was recorded
    finally:
        store.close()
    return [
        Finding.problem(
            "folders",
            f"folders[{i}].path {folder.path}: {rows[folder.key]['reason']}",
            "look at what the path holds now; if it is the folder you mean, run"
            f" syncd approve-deletes --folder {folder.path}",
        )
        for i, folder in enumerate(config.folders)
        if folder.key in rows
    ]


def hardlink_findings(path: Path) -> list[Finding]:
    """A hard link cannot be told from a copy: the kernel must refuse links to others' files."""
    try:
        value = path.read_text().strip()
    except OSError:
        return [Finding("kernel", f"fs.protected_hardlinks is not readable here ({path})")]
    if value != "0":
        return [Finding("kernel", f"fs.protected_hardlinks = {value}")]
    setting = "fs.protected_hardlinks=1"
    return [
        Finding(
            "kernel",
            "fs.protected_hardlinks = 0: anyone who may write a hot folder can hard-link into"
            " it a file they cannot read but syncd can, and syncd would upload it",
            f"sudo sysctl {setting}, and to keep it: echo {setting} |"
            " sudo tee /etc/sysctl.d/60-syncd.conf",
            Level.WARNING,
        )
    ]


# --- inotify --------------------------------------------------------------------------


def mode_findings(config: Config, mountinfo: Path) -> list[Finding]:
    """How each folder will be watched, and why; a network mount on inotify is a warning."""
    mounts = fstype.read_mounts(mountinfo)
    findings = []
    for folder in config.folders:
        choice = fstype.choose(folder.polling, folder.path, mounts)
        text = f"{folder.path}: {choice.mode} ({choice.reason})"
        if choice.network and not choice.polling:
            fix = 'set polling = "auto" (or true) for this folder, or watch it where it is local'
            findings.append(Finding("mode", text, fix, Level.WARNING))
        else:
            findings.append(Finding("mode", text))
    return findings


def watch_findings(
    config: Config, limit_path: Path, mountinfo: Path = fstype.MOUNTINFO
) -> list[Finding]:
    """One inotify watch per watched directory, against the per-user limit."""
    mounts = fstype.read_mounts(mountinfo)
    watched = [
        f
        for f in config.folders
        if not fstype.choose(f.polling, f.path, mounts).polling and f.path.is_dir()
    ]
    if not watched:
        return [Finding("inotify", "no folder needs inotify watches")]
    try:
        limit = int(limit_path.read_text().strip())
    except (OSError, ValueError):
        return [Finding("inotify", f"the watch limit is not readable here ({limit_path})")]
    dirs = count_dirs(watched, cap=limit + 1)
    usage = f"{dirs if dirs <= limit else f'more than {limit}'} directories to watch"
    if dirs >= limit * WATCH_WARN_SHARE:
        level = Level.PROBLEM if dirs > limit else Level.WARNING
        more = "than" if dirs > limit else "close to"
        text = f"{usage}: {more} the inotify limit fs.inotify.max_user_watches = {limit}"
        return [Finding("inotify", text, _watch_fix(dirs), level)]
    return [Finding("inotify", f"{usage}, limit {limit}")]


def _watch_fix(dirs: int) -> str:
    wanted = max(524_288, 1 << (2 * dirs).bit_length())
    setting = f"fs.inotify.max_user_watches={wanted}"
    return (
        f"sudo sysctl {setting}, and to keep it after a reboot: echo {setting} |"
        " sudo tee /etc/sysctl.d/60-syncd.conf (or set polling = true for this folder)"
    )


def count_dirs(folders: Iterable[FolderConfig], *, cap: int) -> int:
    """Directories the watcher would watch (ignored ones excluded), counting up to ``cap``."""
    count = 0
    for folder in folders:
        rules = Rules(folder.include, folder.exclude)
        stack = [(folder.path, "")]
        while stack and count < cap:
            path, rel = stack.pop()
            count += 1
            stack.extend(_subdirs(path, rel, rules))
    return min(count, cap)


def _subdirs(path: Path, rel: str, rules: Rules) -> list[tuple[Path, str]]:
    try:
        with os.scandir(path) as entries:
            found = []
            for entry in entries:
                sub = f"{rel}/{entry.name}" if rel else entry.name
                if entry.is_dir(follow_symlinks=False) and not rules.ignores_dir(
                    sub, parents_checked=True
                ):
                    found.append((Path(entry.path), sub))
            return found
    except OSError:
        return []


# --- the state database -----------------------------------------------------------------


def state_findings(path: Path) -> list[Finding]:
    if not path.exists():
        return [_new_state(path)]
    if not path.is_file():
        return [
            Finding.problem(
                "state",
                f"{path} is not a file",
                "point [state] path at a file (it is created at first run)",
            )
        ]
    for target in (path, path.parent):
        if not os.access(target, os.R_OK | os.W_OK):
            return [
                Finding.problem(
                    "state",
                    f"{target} is not writable by this user",
                    "run syncd as the user that owns the state database, or give it a [state]"
                    " path of its own",
                )
            ]
    try:
        return [_open_state(path)]
    except StoreError as exc:
        return [
            Finding.problem(
                "state",
                f"{path}: {exc}",
                "restore a backup, or move the file aside to start afresh"
                " (the library is then matched again by content)",
            )
        ]


def _new_state(path: Path) -> Finding:
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return Finding("state", f"{path} does not exist yet: it is created at first run")
    return Finding.problem(
        "state",
        f"{path} cannot be created: {parent} is not writable by this user",
        f"create its folder for the user syncd runs as (install -d -m 0700 {path.parent}),"
        " or set [state] path to a writable place on a local disk",
    )


def _open_state(path: Path) -> Finding:
    reader = Store.open_readonly(path)
    try:
        version = reader.schema_version()
    finally:
        reader.close()
    if version > SCHEMA_VERSION:
        raise StoreError(f"schema {version} is newer than this syncd ({SCHEMA_VERSION}): upgrade")
    if version < SCHEMA_VERSION:
        return Finding(
            "state",
            f"{path} is readable (schema {version}: brought up to date"
            f" to {SCHEMA_VERSION} when syncd next starts)",
        )
    if path.stat().st_uid != os.geteuid():
        return Finding(
            "state",
            f"{path} is readable (owned by another user: not opened for"
            " writing; run the check as that user to test the lock)",
        )
    try:
        Store.open(path).close()
    except StoreLocked:
        return Finding("state", f"{path} is in use by a running syncd")
    return Finding("state", f"{path} opens and is not in use")


# --- the key and the API -------------------------------------------------------------------


def key_findings(config: Config) -> tuple[list[Finding], ApiKey | None]:
    """The key itself when it can be read (a config holding it open to others never loads)."""
    findings: list[Finding] = []
    try:
        key = require_api_key(config)
    except ConfigError as exc:
        findings.append(Finding.problem("key", str(exc), _key_fix(config.api.api_key)))
        return findings, None
    where = f" ({key.file})" if key.file else ""
    return [Finding("key", f"API key found: {key.origin}{where}"), *findings], key


def _key_fix(key: ApiKey | None) -> str:
    if key is None or key.file is None:
        return (
            "put the key in a file readable by its owner only (install -m 0600 /dev/null"
            " FILE, then write the key into it) and set api.api_key_file, or use"
            " LoadCredential=api_key:FILE under systemd"
        )
    try:
        mode = stat.S_IMODE(key.file.stat().st_mode)
    except OSError:
        return f"create {key.file} with the key in it (mode 0600), or correct api.api_key_file"
    if mode & 0o077:
        return f"chmod 600 {key.file}"
    return (
        f"make {key.file} readable by the user syncd runs as (and only that user),"
        " with the key as its only content"
    )


def api_findings(config: Config, key: ApiKey) -> list[Finding]:
    base = config.api.base_url
    timeout = min(config.api.timeout_seconds, PROBE_TIMEOUT)
    try:
        with AssetsClient(base, key.reveal, timeout=timeout) as client:
            client.check_auth()
    except AuthError as exc:
        return [
            Finding.problem(
                "api",
                f"the API key is not accepted: {exc}",
                f"replace the key ({key.origin}) with a valid one from your account; a key file"
                " is re-read when it changes, a systemd credential needs a restart",
            )
        ]
    except TransientError as exc:
        return [
            Finding.problem(
                "api",
                f"cannot reach the API at {base}: {exc}",
                "check the network, a proxy or firewall, and api.base_url; syncd keeps jobs"
                " queued and retries while the API is away",
            )
        ]
    except ApiError as exc:
        return [
            Finding.problem(
                "api",
                f"unexpected answer from {base}: {exc}",
                "check that api.base_url points at the Assets API",
            )
        ]
    return [Finding("api", f"{base} accepts the key")]


# --- the config's own checks ------------------------------------------------------


def check_folders(config: Config) -> list[str]:
    """Problems with the folder roots as they are now; none of them is fatal to ``run``."""
    problems = []
    for i, folder in enumerate(config.folders):
        if problem := _root_problem(folder.path):
            problems.append(f"folders[{i}].path: {folder.path} {problem}")
    return problems


def _root_problem(path: Path) -> str | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return "does not exist (syncd waits for it: is the drive or share mounted?)"
    except OSError as exc:
        return f"cannot be checked: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return "is not readable by this user (needs read and execute permission)"
    return None
