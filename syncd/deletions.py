"""The deletion workflow: remove an asset from the library once nothing uses it.

A delete job is created by the ledger when an asset's last file goes, after the folder's
grace period, and only for folders that mirror deletions. Before the DELETE goes out it is
checked again: a file may use the asset again (cancel), or the folder's root may look
unmounted (wait: a guess never deletes). 404 means the goal is reached.
"""

from __future__ import annotations

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
        ctx = self.ctx
        assert job.asset_key is not None
        asset = ctx.ledger.asset(job.asset_key)
        if ctx.ledger.refcount(job.asset_key):
            ctx.ledger.store.transition(job, JobState.CANCELLED, reason="a file uses the asset")
            return
        if asset is None or not asset["asset_id"]:
            ctx.ledger.delete_done(job)
            return
        folder = ctx.folders.get(job.folder)
        problem = ctx.root_problem(folder) if folder else "folder no longer configured"
        if problem:
            ctx.ledger.retry_later(job, ROOT_RETRY_SECONDS, f"held: {problem}")
            return
        started = ctx.clock()
        try:
            ctx.client.delete(asset["asset_id"])
        except NotFound:
            pass
        except PermanentError as exc:
            ctx.ledger.store.transition(job, JobState.FAILED, reason=f"rejected by the API: {exc}")
            return
        except ApiError as exc:
            api_retry(ctx, job, exc)
            log.warning(
                "delete.retry",
                asset_id=asset["asset_id"],
                error=type(exc).__name__,
                detail=str(exc),
                attempt=job.attempt,
            )
            return
        ctx.breaker.success()
        try:
            ctx.ledger.delete_done(job)
        except StaleAttempt:
            return
        log.info(
            "delete.done",
            folder=job.folder,
            asset_id=asset["asset_id"],
            tags=asset["tags"],
            duration=round(ctx.clock() - started, 3),
        )
