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
from datetime import datetime
from pathlib import Path

import structlog

from syncd import hashing, imaging, plan
from syncd.config import FolderConfig
from syncd.context import ROOT_RETRY_SECONDS, Context, api_retry
from syncd.departures import Departures
from syncd.errors import ApiError, FileChanged, FileProblem, PermanentError, StaleAttempt
from syncd.model import FileStat, Job, JobState, RemoteAsset, identity_tag
from syncd.tags import asset_name, folder_tags

log = structlog.get_logger(__name__)

OUTSIDE_LINK = "symlink to a file outside the hot folder: not followed"


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
        path = folder.path / job.relpath
        try:
            stat = hashing.stat_of(path)
        except (FileNotFoundError, NotADirectoryError):
            self._gone(job, folder)
            return
        except OSError as exc:
            ctx.ledger.file_failed(job, None, None, f"unreadable: {exc.strerror or exc}")
            return
        if ctx.rules[folder.key].ignores_file(job.relpath):
            # Newly excluded files stop being tracked; their assets stay in the library.
            ctx.ledger.file_forget(job, "ignored by the folder's rules")
            return
        if not _inside(path, folder.path):
            ctx.ledger.file_failed(job, None, None, OUTSIDE_LINK)
            log.warning("file.failed", folder=folder.key, path=job.relpath, reason=OUTSIDE_LINK)
            return
        if self._settling(job, folder, stat):
            return
        self._hash_and_link(job, folder, path, stat)

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
        if age >= folder.settle_seconds:
            return False
        if age >= 0:
            self.ctx.ledger.retry_later(job, folder.settle_seconds - age + 0.05, "settling")
            return True
        seen = [stat.size, stat.mtime_ns, stat.inode]
        if job.detail.get("seen") == seen:
            return False
        self.ctx.ledger.store.transition(
            job,
            JobState.PENDING,
            not_before=now + folder.settle_seconds,
            reason="settling (its mtime is in the future)",
            detail={**job.detail, "seen": seen},
        )
        return True

    def _gone(self, job: Job, folder: FolderConfig) -> None:
        problem = self.ctx.root_problem(folder)
        if problem:
            self.ctx.ledger.retry_later(job, ROOT_RETRY_SECONDS, f"held: {problem}")
            return
        if self.ctx.ledger.file_gone(job):
            log.info("file.gone", folder=job.folder, path=job.relpath)

    def _hash_and_link(self, job: Job, folder: FolderConfig, path: Path, stat: FileStat) -> None:
        ctx = self.ctx
        assert job.relpath is not None
        tracked = ctx.ledger.store.get_file(folder.key, job.relpath)
        sha = None
        if tracked and not tracked.problem and not plan.needs_hash(tracked, stat):
            sha = tracked.sha256
        try:
            if sha is None:
                imaging.check_header(
                    hashing.read_head(path, imaging.HEAD_BYTES),
                    stat.size,
                    path.name,
                    oversize=folder.oversize,
                    convert=folder.convert,
                )
                moved = ctx.ledger.store.find_moved(folder.key, stat)
                if (
                    moved
                    and moved.relpath != job.relpath
                    and not (folder.path / moved.relpath).exists()
                ):
                    sha = moved.sha256
                else:
                    sha, stat = hashing.sha256_file(path)
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
        linked = ctx.ledger.file_linked(job, stat, sha, tags, asset_name(job.relpath))
        log.info(
            "file.linked",
            folder=folder.key,
            path=job.relpath,
            sha256=sha[:12],
            tags=list(tags),
            queued_upload=linked.queued_upload,
            asset_id=linked.asset_id,
        )


class UploadWorkflow:
    """Runs ``upload`` jobs."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run(self, job: Job) -> None:
        ctx = self.ctx
        assert job.asset_key is not None
        asset = ctx.ledger.asset(job.asset_key)
        if asset is None or not ctx.ledger.refcount(job.asset_key):
            ctx.ledger.upload_cancelled(job, "no file needs this asset now")
            return
        if asset["asset_id"]:
            ctx.ledger.store.transition(job, JobState.DONE, reason="already uploaded")
            return
        if adopted := ctx.ledger.upload_from_index(job):
            log.info("upload.adopt", asset_id=adopted, name=asset["name"], via="library index")
            return
        if not self._configured_copy(job):
            ctx.ledger.upload_cancelled(job, "folder no longer configured")
            return
        source = self._read_source(job, asset["sha256"])
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

    def _configured_copy(self, job: Job) -> bool:
        """Whether a file of this asset still sits in a folder of the current config."""
        assert job.asset_key is not None
        rows = self.ctx.ledger.files_for_asset(job.asset_key, limit=100)
        return not rows or any(row["folder"] in self.ctx.folders for row in rows)

    def _read_source(self, job: Job, sha: str) -> tuple[FolderConfig, str, bytes] | None:
        """The bytes of a tracked copy whose hash still matches; stale copies are re-queued."""
        ctx = self.ctx
        assert job.asset_key is not None
        for row in ctx.ledger.files_for_asset(job.asset_key):
            folder = ctx.folders.get(row["folder"])
            if folder is None:
                continue
            try:
                data = hashing.read_bytes_checked(
                    folder.path / row["relpath"], sha, limit=imaging.MAX_SOURCE_BYTES
                )
            except (OSError, FileProblem):
                ctx.ledger.enqueue_paths(folder.key, [row["relpath"]])
                continue
            return folder, row["relpath"], data
        delay = plan.backoff(job.attempt, base=5.0, jitter=ctx.rand())
        ctx.ledger.retry_later(job, delay, "no readable copy of the file right now")
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
            api_retry(ctx, job, exc, "upload.retry", folder=folder.key, path=relpath)
            return
        ctx.breaker.success()
        try:
            ctx.ledger.upload_done(job, remote, prepared.adapted)
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
        """Did an earlier attempt's POST get through? Look, and adopt what it made."""
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
            log.info("upload.adopt", asset_id=remote.asset_id, name=name)
            return remote
        return None


def _inside(path: Path, root: Path) -> bool:
    """A symlink may point inside its hot folder, never out of it."""
    if not path.is_symlink():
        return True
    target = Path(os.path.realpath(path))
    return target.is_relative_to(Path(os.path.realpath(root)))


def _epoch(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
