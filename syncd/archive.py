"""The ingest-and-archive workflow: a file leaves its hot folder once its asset is safe.

Per folder ``after_upload = "archive"`` moves the file to ``archive_path/<relpath>``;
``"remove"`` unlinks it. A file leaves only when its asset is ``ready`` (or, with
``after_upload_when = "sent"``, once the upload was answered), the library's asset
carries the identity tag of the file's content, its size is the file's (unless syncd
sent an adapted copy), and the file on disk is still what was hashed.

The hot folder is a trust boundary: its files are looked at, moved and removed beneath
the folder's held root (:meth:`Context.open_root`), never by path (see
:mod:`syncd.fsmove`).

Order, for crash safety: the departure is recorded (and the file untracked, without a
deletion) before the file is touched; the move itself is :func:`syncd.fsmove.relocate`,
which never overwrites and can be repeated; the departure is closed after. A restart
finds open departures and completes them, so a kill -9 at any point leaves each file in
the hot folder or in the archive, and once completed in exactly one of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from syncd import fsmove, hashing
from syncd.config import FolderConfig
from syncd.context import Context
from syncd.departures import Departures
from syncd.errors import ApiError, NotFound, RootUnavailable
from syncd.model import FileStat
from syncd.safepath import Root
from syncd.store import Row

log = structlog.get_logger(__name__)

#: Files taken per folder per round: a card dump leaves in steps, never all at once.
BATCH = 200
#: Why a departure ended without an archive copy: the file was no longer in the hot folder.
GONE = "gone from the hot folder before it could leave"


class AfterUpload:
    """Runs after-upload rounds (from the processing thread, after each follow-up)."""

    def __init__(self, ctx: Context, departures: Departures, turn: Callable[[], None]) -> None:
        self.ctx = ctx
        self.departures = departures
        #: Waits for a request's turn; shared with the processing follow-up's pace.
        self.turn = turn
        self._unverifiable: set[str] = set()

    def round(self) -> None:
        """Finish what was begun, then let go what is ready to leave."""
        for departure in self.departures.moving():
            folder = self.ctx.folders.get(departure["folder"])
            if folder is None:
                continue  # a folder taken out of the config: its files are left where they are
            with self._root(folder) as root:
                if root is not None:
                    self._carry_out(root, folder, departure)
        for folder in self.ctx.folders.values():
            if folder.after_upload == "keep" or self.ctx.root_problem(folder):
                continue
            rows = self.departures.candidates(folder, BATCH)
            if not rows:
                continue
            with self._root(folder) as root:
                for row in rows:
                    if root is not None and self._verified(folder, row):
                        self._depart(root, folder, row)

    @contextlib.contextmanager
    def _root(self, folder: FolderConfig) -> Iterator[Root | None]:
        """The folder's root held open, or None while it is missing or another folder."""
        try:
            root = self.ctx.open_root(folder)
        except RootUnavailable:
            yield None
            return
        with root:
            yield root

    def _verified(self, folder: FolderConfig, row: Row) -> bool:
        """Identity tag and size: the bytes in the library are the bytes on disk."""
        if not self.ctx.identity_tag:
            if folder.key not in self._unverifiable:
                self._unverifiable.add(folder.key)
                log.warning("after_upload.unverifiable", folder=folder.key,
                            reason="api.identity_tag = false: files are kept")  # fmt: skip
            return False
        if row["adapted"]:
            return True  # the library holds the converted copy of exactly these bytes
        size = row["remote_size"]
        if size is None:
            size = self._fetch_size(row)
        return bool(size == row["size"])

    def _fetch_size(self, row: Row) -> int | None:
        """An adopted asset's size is not known from a listing: ask for it once."""
        self.turn()
        try:
            remote = self.ctx.client.get(row["asset_id"])
        except (NotFound, ApiError):
            return None
        if remote.file_size is not None:
            self.departures.remote_size(row["asset_key"], remote.file_size)
        return remote.file_size

    def _depart(self, root: Root, folder: FolderConfig, row: Row) -> None:
        if _changed(root, row) is not False:
            return  # changed since it was hashed (its file job decides first), or not there
        dest = None
        if folder.after_upload == "archive":
            assert folder.archive_path is not None
            dest = str(fsmove.free_name(folder.archive_path / row["relpath"]))
        departure = self.departures.begin(row, folder.after_upload, dest)
        if departure is not None:
            self._carry_out(root, folder, {**row, "id": departure,
                            "action": folder.after_upload, "dest": dest})  # fmt: skip

    def _carry_out(self, root: Root, folder: FolderConfig, departure: Row) -> None:
        """Move or remove the file; repeated after a crash until it is in one place."""
        relpath = departure["relpath"]
        try:
            if _changed(root, departure) and not _arrived(departure):
                self._keep(departure, folder, "changed before it could leave")
                return
            if departure["action"] == "remove":
                fsmove.remove(root, relpath)
            elif not self._relocate(root, departure):
                self.departures.finish(departure["id"], state="cancelled", reason=GONE)
                log.info("after_upload.gone", folder=folder.key, path=relpath)
                return
        except fsmove.Changed:
            self._keep(departure, folder, "its bytes are not the uploaded content")
            return
        except OSError as exc:
            reason = f"cannot {departure['action']}: {exc.strerror or exc}"
            log.warning("after_upload.failed", folder=folder.key, path=relpath, reason=reason)
            self.departures.note(departure["id"], reason)
            return
        self.departures.finish(departure["id"])
        log.info("after_upload.done", folder=folder.key, path=relpath,
                 action=departure["action"], to=departure.get("dest"))  # fmt: skip

    def _relocate(self, root: Root, departure: Row) -> bool:
        """Into the archive under a free name; False when the file was gone meanwhile."""
        dest = Path(departure["dest"])
        while True:
            try:
                return fsmove.relocate(root, departure["relpath"], dest, departure["sha256"])
            except fsmove.Clash:
                dest = fsmove.free_name(dest)
                self.departures.set_dest(departure["id"], str(dest))
                departure["dest"] = str(dest)

    def _keep(self, departure: Row, folder: FolderConfig, reason: str) -> None:
        """The file stays and is looked at again as new content."""
        self.departures.finish(departure["id"], state="cancelled", reason=reason)
        self.ctx.ledger.enqueue_paths(folder.key, [departure["relpath"]])
        log.info("after_upload.kept", folder=folder.key, path=departure["relpath"], reason=reason)


def _changed(root: Root, departure: Row) -> bool | None:
    """The hot-folder file is there but is not the one recorded; None when it is not there.

    Looked up beneath the root: a path through a folder now swapped for a symlink is not
    there, whatever the link points at.
    """
    recorded = FileStat(departure["size"], departure["mtime_ns"], departure["inode"])
    try:
        return not hashing.file_stat(root.lstat(departure["relpath"])).same_content_as(recorded)
    except OSError:
        return None


def _arrived(departure: Row) -> bool:
    """The archive copy exists already (a link shares the source's inode)."""
    return departure["action"] == "archive" and Path(departure["dest"]).exists()
