"""The deletion workflow: remove an asset from the library once nothing uses it.

A delete job is created by the ledger when an asset's last file goes, after the folder's
grace period, and only for folders that mirror deletions. Before the DELETE goes out it is
checked again: a file may use the asset again (cancel), or the folder's root may look
unmounted (wait: a guess never deletes). 404 means the goal is reached.
"""

from __future__ import annotations

import json
from typing import Any

import structlog

from syncd.context import ROOT_RETRY_SECONDS, Context, api_retry
from syncd.errors import ApiError, NotFound, PermanentError, StaleAttempt
from syncd.model import Job, JobState

log = structlog.get_logger(__name__)


class DeleteWorkflow:
    """Runs ``delete`` jobs."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run(self, job: Job) -> None:
        asset = self._still_to_delete(job)
        if asset is None:
            return
        ctx = self.ctx
        started = ctx.clock()
        try:
            ctx.client.delete(asset["asset_id"])
        except NotFound:
            pass
        except PermanentError as exc:
            ctx.ledger.store.transition(job, JobState.FAILED, reason=f"rejected by the API: {exc}")
            return
        except ApiError as exc:
            api_retry(ctx, job, exc, "delete.retry", asset_id=asset["asset_id"])
            return
        ctx.breaker.success()
        try:
            ctx.ledger.delete_done(job)
        except StaleAttempt:
            return
        log.info(
            "delete.done",
            folder=job.folder,
            path=job.relpath,
            asset_id=asset["asset_id"],
            tags=json.loads(asset["tags"]),
            duration=round(ctx.clock() - started, 3),
        )

    def _still_to_delete(self, job: Job) -> dict[str, Any] | None:
        """The asset, if the DELETE should go out now; otherwise the job is settled here."""
        ctx = self.ctx
        assert job.asset_key is not None
        if ctx.ledger.delete_cancelled_if_used(job):
            return None
        asset = ctx.admin.asset(job.asset_key)
        if asset is None or not asset["asset_id"]:
            ctx.ledger.delete_done(job)
            return None
        folder = ctx.folders.get(job.folder)
        if folder is None or not folder.mirror_deletes:
            # The config changed since the release: a folder removed or no longer mirrored.
            why = "folder no longer configured" if folder is None else "mirror_deletes is off"
            ctx.ledger.store.transition(job, JobState.CANCELLED, reason=why)
            return None
        if problem := ctx.root_problem(folder):
            ctx.ledger.retry_later(job, ROOT_RETRY_SECONDS, f"held: {problem}")
            return None
        return asset
