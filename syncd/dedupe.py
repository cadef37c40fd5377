"""The ``dedupe`` job: one more look, later, for a copy a slow server made of an upload.

An upload whose POST timed out is looked up in the library before it is sent again, but
no sooner than the late-answer wait (``plan.LateAnswers``). A server slower even than
that stores the first POST after the re-send: two copies of one (content, tags). So an
upload that had such a POST leaves a ``dedupe`` job, due one late-answer wait after it
finished; it lists the library by the identity tag (one filtered GET, as a rule) and
removes every copy of the same tags and name but the one the state database records.
"""

from __future__ import annotations

import json

import structlog

from syncd.context import Context, api_retry
from syncd.errors import ApiError
from syncd.listing import remove_duplicates
from syncd.model import Job, JobState, identity_tag

log = structlog.get_logger(__name__)


class DedupeWorkflow:
    """Runs ``dedupe`` jobs."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def run(self, job: Job) -> None:
        ctx = self.ctx
        assert job.asset_key is not None
        asset = ctx.admin.asset(job.asset_key)
        kept = asset["asset_id"] if asset is not None else None
        if asset is None or kept is None or not ctx.identity_tag:
            ctx.ledger.store.transition(job, JobState.DONE, reason="no asset to compare with")
            return
        identity = identity_tag(asset["sha256"])
        want = {*json.loads(asset["tags"]), identity}
        try:
            copies = [
                (remote.created_at, remote.asset_id)
                for remote in ctx.client.iter_assets(tag=identity)
                if set(remote.tags) == want and remote.name == asset["name"]
            ]
            removed = 0
            if len(copies) > 1 and kept in {asset_id for _created, asset_id in copies}:
                removed = remove_duplicates(ctx.admin, ctx.client, copies, kept)
        except ApiError as exc:
            api_retry(ctx, job, exc, "dedupe.retry", asset_id=kept)
            return
        ctx.ledger.store.transition(job, JobState.DONE, reason=f"{removed} extra copies removed")
        log.info("dedupe.done", asset_id=kept, removed=removed)
