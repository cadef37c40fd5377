"""The upload workflow: file jobs (hash and link) and upload jobs (exactly-once POST).

A file job looks at one path: if its size, mtime and inode are what the store has, the
stored hash stands; otherwise it is hashed once it has settled. Then it is linked to the
asset of its (content, tags), which queues an upload only if no such asset exists.

An upload job reads the bytes of any tracked file of that asset (checking the hash),
prepares them (imaging), and POSTs with the folder tags plus the identity tag. Its intent
was committed when it was claimed; a second attempt therefore first asks the library
whether an earlier POST got through, and adopts that asset instead of sending again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any

import structlog

from syncd import hashing, imaging, plan
from syncd.config import FolderConfig
from syncd.context import ROOT_RETRY_SECONDS, Context, api_retry
from syncd.departures import Departures
from syncd.errors import (
    ApiError,
    FileChanged,
    FileProblem,
    PermanentError,
    RootUnavailable,
    StaleAttempt,
)
from syncd.ledger import Linked
from syncd.listing import remove_duplicates
from syncd.model import LATE_POST, FileStat, Job, JobState, RemoteAsset, identity_tag
from syncd.safepath import Root
from syncd.tags import asset_name, folder_tags

log = structlog.get_logger(__name__)

#: An upload reads up to this many of its asset's files (once the prepare slot is its):
#: for one in a configured folder, then for one to read its bytes from.
COPIES_LOOKED_AT = 100


class FileWorkflow:
    """Runs ``file`` jobs."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._raw_reported: set[str] = set()

    def run(self, job: Job) -> None:
        ctx = self.ctx
        folder = ctx.folders.get(job.folder)
        assert job.relpath is not None
        if folder is None or self._leaving(job, folder):
            if folder is None:
                ctx.ledger.store.transition(
                    job, JobState.DONE, reason="folder no longer configured"
                )
            return
        try:
            root = ctx.open_root(folder)
        except RootUnavailable as exc:
            ctx.ledger.retry_later(job, ROOT_RETRY_SECONDS, f"held: {exc.reason}")
            return
        with root:
            self._look(job, folder, root)

    def _look(self, job: Job, folder: FolderConfig, root: Root) -> None:
        """Open the file beneath the root once: its stat, signature and hash come from it."""
        ctx = self.ctx
        assert job.relpath is not None
        try:
            with hashing.opened(root, job.relpath, regular=False) as (fd, st):
                stat = hashing.file_stat(st)
                if ctx.rules[folder.key].ignores_file(job.relpath):
                    # Newly excluded files stop being tracked; their assets stay in the library.
                    ctx.ledger.file_forget(job, "ignored by the folder's rules")
                    return
                if self._settling(job, folder, stat):
                    return
                self._hash_and_link(job, folder, Opened(root, fd, st), stat)
        except FileNotFoundError:
            self._gone(job, folder)
        except FileProblem as exc:
            ctx.ledger.file_failed(job, None, None, exc.reason)
            log.warning("file.failed", folder=folder.key, path=job.relpath, reason=exc.reason)

    def _report_raw(self, folder: FolderConfig, relpath: str) -> None:
        """Camera raw files are said once per folder, not once per file, then left alone."""
        if folder.key not in self._raw_reported:
            self._raw_reported.add(folder.key)
            log.warning("folder.camera_raw", folder=folder.key, example=relpath,
                        hint=imaging.CAMERA_RAW)  # fmt: skip

    def _leaving(self, job: Job, folder: FolderConfig) -> bool:
        """A file on its way to the archive (after_upload) is not tracked again."""
        assert job.relpath is not None
        if folder.after_upload == "keep":
            return False
        if not Departures(self.ctx.ledger.store, self.ctx.folders).departing(
            folder.key, job.relpath
        ):
            return False
        self.ctx.ledger.store.transition(job, JobState.DONE, reason="leaving the hot folder")
        return True

    def _settling(self, job: Job, folder: FolderConfig, stat: FileStat) -> bool:
        """Put the job back until the file has been still for ``settle_seconds``.

        The mtime says when the file last changed, unless it lies in the future (a camera
        card written in local time, a NAS with a fast clock): waiting for that moment could
        take hours, so such a file must instead look the same twice, one settle apart.
        """
        now = self.ctx.clock()
        age = now - stat.mtime_ns / 1e9
        seen = [stat.size, stat.mtime_ns, stat.inode]
        wait = plan.settle_wait(
            age, folder.settle_seconds, seen_unchanged=job.detail.get("seen") == seen
        )
        if wait is None:
            return False
        if age >= 0:
            self.ctx.ledger.retry_later(job, wait, "settling")
            return True
        self.ctx.ledger.store.transition(
            job,
            JobState.PENDING,
            not_before=now + wait,
            reason="settling (its mtime is in the future)",
            detail={**job.detail, "seen": seen},
        )
        return True

    def _hash(
        self, job: Job, folder: FolderConfig, file: Opened, stat: FileStat
    ) -> tuple[str, FileStat]:
        """The content hash, from the open file (or a moved file's known hash)."""
        assert job.relpath is not None
        if not S_ISREG(file.st.st_mode):
            raise FileProblem("not a regular file")
        imaging.check_header(
            hashing.read_head(file.fd, imaging.HEAD_BYTES),
            stat.size,
            job.relpath.rsplit("/", 1)[-1],
            oversize=folder.oversize,
            convert=folder.convert,
        )
        moved = self.ctx.ledger.store.find_moved(folder.key, stat)
        if moved and moved.relpath != job.relpath and not file.root.lexists(moved.relpath):
            assert moved.sha256 is not None
            return moved.sha256, stat
        return hashing.sha256_fd(file.fd, file.st, file.root, job.relpath)

    def _gone(self, job: Job, folder: FolderConfig) -> None:
        problem = self.ctx.root_problem(folder)
        if problem:
            self.ctx.ledger.retry_later(job, ROOT_RETRY_SECONDS, f"held: {problem}")
            return
        if self.ctx.ledger.file_gone(job):
            log.info("file.gone", folder=job.folder, path=job.relpath)

    def _hash_and_link(self, job: Job, folder: FolderConfig, file: Opened, stat: FileStat) -> None:
        ctx = self.ctx
        assert job.relpath is not None
        tracked = ctx.ledger.store.get_file(folder.key, job.relpath)
        sha = None
        if tracked and not tracked.problem and not plan.needs_hash(tracked, stat):
            sha = tracked.sha256
        try:
            if sha is None:
                sha, stat = self._hash(job, folder, file, stat)
        except FileChanged:
            log.info("file.changed_while_read", folder=folder.key, path=job.relpath)
            ctx.ledger.retry_later(job, max(folder.settle_seconds, 0.5), "changed while being read")
            return
        except FileNotFoundError:
            self._gone(job, folder)
            return
        except imaging.CameraRaw as exc:
            ctx.ledger.file_set_aside(job, stat, exc.reason)
            self._report_raw(folder, job.relpath)
            return
        except FileProblem as exc:
            ctx.ledger.file_failed(job, stat, None, exc.reason)
            log.warning("file.failed", folder=folder.key, path=job.relpath, reason=exc.reason)
            return
        assert sha is not None
        tags = folder_tags(job.relpath, folder.tags)
        linked = self._link(job, stat, sha, tags)
        log.info(
            "file.linked",
            folder=folder.key,
            path=job.relpath,
            sha256=sha[:12],
            tags=list(tags),
            queued_upload=linked.queued_upload,
            asset_id=linked.asset_id,
        )

    def _link(self, job: Job, stat: FileStat, sha: str, tags: tuple[str, ...]) -> Linked:
        """Record the hash; an upload it queues goes to an API worker in memory if there
        is room (created claimed, so no worker claims it from the store).

        Not waited for: nothing outside acts on it before a record that waits (the API
        worker waits for this one before it starts a handed-over upload).
        """
        assert job.relpath is not None
        store = self.ctx.ledger.store
        handoff = self.ctx.handoff
        slot = handoff is not None and handoff.reserve()
        linked = None
        try:
            linked = self.ctx.ledger.file_linked(
                job, stat, sha, tags, asset_name(job.relpath), handoff=slot, durable=False
            )
        finally:
            if handoff is not None and slot:
                if linked is not None and linked.upload is not None:
                    handoff.put(linked.upload, store.last_record())
                else:
                    handoff.release()
        return linked


class UploadWorkflow:
    """Runs ``upload`` jobs."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run(self, job: Job) -> None:
        ctx = self.ctx
        assert job.asset_key is not None
        asset = ctx.admin.asset(job.asset_key)
        if asset is None or not ctx.admin.refcount(job.asset_key):
            self._unneeded(job, asset)
            return
        if asset["asset_id"]:
            ctx.ledger.store.transition(job, JobState.DONE, reason="already uploaded")
            return
        if adopted := ctx.ledger.upload_from_index(job, asset):
            log.info("upload.adopt", asset_id=adopted, name=asset["name"], via="library index")
            return
        with imaging.slot():  # the source (up to 256 MB) and its re-encode: one at a time
            copies = ctx.admin.files_for_asset(job.asset_key, limit=COPIES_LOOKED_AT)
            if not _configured_copy(copies, ctx.folders):
                ctx.ledger.upload_cancelled(job, "folder no longer configured")
                return
            source = self._read_source(job, asset["sha256"], copies)
            if source is None:
                return
            folder, relpath, data = source
            try:
                prepared = imaging.prepare(
                    data, Path(relpath).name, oversize=folder.oversize, convert=folder.convert
                )
            except FileProblem as exc:
                ctx.ledger.store.transition(job, JobState.FAILED, reason=exc.reason)
                log.warning("upload.failed", folder=folder.key, path=relpath, reason=exc.reason)
                return
        tags = list(json.loads(asset["tags"]))
        if ctx.identity_tag:
            tags.append(identity_tag(asset["sha256"]))
        self._send(job, folder, relpath, asset, prepared=prepared, tags=tags)

    def _unneeded(self, job: Job, asset: Mapping[str, Any] | None) -> None:
        """No file needs the asset now: cancel, unless an earlier POST may have stored it.

        Then look first: what is found is recorded, so its remote deletion follows as for
        any released asset; cancelling blind would leave it in the library, known to no one.
        """
        ctx = self.ctx
        if asset is None or asset["asset_id"] or not ctx.ledger.posted_before(job):
            ctx.ledger.upload_cancelled(job, "no file needs this asset now")
            return
        tags = list(json.loads(asset["tags"]))
        if ctx.identity_tag:
            tags.append(identity_tag(asset["sha256"]))
        try:
            remote = self._reconcile(job, str(asset["name"]), tags, 0)
        except ApiError as exc:
            api_retry(ctx, job, exc, "upload.retry", asset=asset["name"])
            return
        if remote is None:
            ctx.ledger.upload_cancelled(job, "no file needs this asset now")
            return
        ctx.breaker.success()
        ctx.ledger.upload_done(job, remote)
        log.info("upload.adopt_released", asset_id=remote.asset_id, name=asset["name"])

    def _read_source(
        self, job: Job, sha: str, copies: list[dict[str, Any]]
    ) -> tuple[FolderConfig, str, bytes] | None:
        """The bytes of a tracked copy (of ``copies``, the asset's files) whose hash still
        matches; stale copies are re-queued."""
        ctx = self.ctx
        for row in copies:
            folder = ctx.folders.get(row["folder"])
            if folder is None:
                continue
            data = self._read_copy(folder, row, sha)
            if data is not None:
                return folder, row["relpath"], data
        delay = plan.backoff(job.attempt, base=5.0, jitter=ctx.rand())
        ctx.ledger.retry_later(job, delay, "no readable copy of the file right now")
        return None

    def _read_copy(self, folder: FolderConfig, row: dict[str, Any], sha: str) -> bytes | None:
        """A tracked copy's bytes, from the very file that was hashed (same dev, inode, size,
        mtime on the open descriptor) and beneath its root; else None and it is looked at again.
        """
        try:
            with self.ctx.open_root(folder) as root:
                return hashing.read_bytes_checked(
                    root, row["relpath"], sha, tracked_stat(row), limit=imaging.MAX_SOURCE_BYTES
                )
        except RootUnavailable:
            return None
        except (OSError, FileProblem):
            self.ctx.ledger.enqueue_paths(folder.key, [row["relpath"]])
            return None

    def _send(
        self,
        job: Job,
        folder: FolderConfig,
        relpath: str,
        asset: dict[str, object],
        *,
        prepared: imaging.Prepared,
        tags: list[str],
    ) -> None:
        ctx = self.ctx
        name = str(asset["name"])
        started = ctx.clock()
        try:
            remote = None
            if ctx.ledger.posted_before(job):
                remote = self._reconcile(job, name, tags, len(prepared.data))
            adopted = remote is not None
            if remote is None:
                remote = ctx.client.upload(
                    prepared.data,
                    filename=prepared.filename,
                    content_type=prepared.content_type,
                    name=name,
                    tags=tags,
                )
        except PermanentError as exc:
            ctx.ledger.store.transition(job, JobState.FAILED, reason=f"rejected by the API: {exc}")
            log.warning("upload.failed", folder=folder.key, path=relpath, reason=str(exc))
            return
        except ApiError as exc:
            size = len(prepared.data)
            api_retry(ctx, job, exc, "upload.retry", size=size, folder=folder.key, path=relpath)
            return
        ctx.breaker.success()
        try:
            late = ctx.late.wait(len(prepared.data)) if job.detail.get(LATE_POST) else None
            # Not waited for: lost, the job is in flight on disk with its intent, and its
            # next attempt finds the asset by looking before any POST (README, Decisions).
            ctx.ledger.upload_done(job, remote, prepared.adapted, recheck_after=late, durable=False)
        except StaleAttempt:
            log.warning("upload.stale", path=relpath, asset_id=remote.asset_id)
            return
        log.info(
            "upload.done",
            folder=folder.key,
            path=relpath,
            asset_id=remote.asset_id,
            tags=tags,
            bytes=len(prepared.data),
            adopted=adopted,
            duration=round(ctx.clock() - started, 3),
            adapted=prepared.adapted,
        )

    def _reconcile(self, job: Job, name: str, tags: list[str], size: int) -> RemoteAsset | None:
        """Did an earlier POST get through? Look, and adopt what it made.

        With identity tags every copy is looked at: two mean a late answer landed beside
        a re-send; the oldest is adopted and the other removed.
        """
        ctx = self.ctx
        found = self._matches(job, name, tags, size)
        if not ctx.identity_tag:
            return next(found, None)
        copies = list(found)
        if not copies:
            return None
        kept = min(copies, key=lambda remote: (remote.created_at, remote.asset_id))
        if len(copies) > 1:
            pairs = [(remote.created_at, remote.asset_id) for remote in copies]
            remove_duplicates(ctx.admin, ctx.client, pairs, kept.asset_id)
        log.info("upload.adopt", asset_id=kept.asset_id, name=name)
        return kept

    def _matches(self, job: Job, name: str, tags: list[str], size: int) -> Iterator[RemoteAsset]:
        """Library assets an earlier attempt may have made: filtered by the identity tag
        (one page, as a rule), and checked here for name and the exact tag set."""
        ctx = self.ctx
        if ctx.identity_tag:
            candidates = ctx.client.iter_assets(tag=tags[-1])
        else:
            candidates = ctx.client.iter_assets(tag=tags[0] if tags else None)
        for remote in candidates:
            if remote.status == "failed":
                continue  # a failed asset is being replaced, never adopted
            created = _epoch(remote.created_at)
            if not plan.matches_intent(
                remote,
                name=name,
                tags=tags,
                since=job.intent_at,
                created_at=created if not ctx.identity_tag else None,
            ):
                continue
            if not ctx.identity_tag:
                full = ctx.client.get(remote.asset_id)
                if not plan.matches_intent(
                    full, name=name, tags=tags, file_size=full.file_size, size=size
                ):
                    continue
            yield remote


@dataclass(frozen=True, slots=True)
class Opened:
    """A file job's file: open beneath its root, with the stat taken on the descriptor."""

    root: Root
    fd: int
    st: os.stat_result


def _configured_copy(copies: list[dict[str, Any]], folders: Mapping[str, FolderConfig]) -> bool:
    """Whether a file of the asset (of ``copies``) still sits in a configured folder."""
    return not copies or any(row["folder"] in folders for row in copies)


def tracked_stat(row: dict[str, Any]) -> FileStat:
    """The stat a tracked file's hash was taken with, from its ``files`` row."""
    return FileStat(size=row["size"], mtime_ns=row["mtime_ns"], inode=row["inode"], dev=row["dev"])


def _epoch(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
