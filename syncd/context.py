"""What the workflows share: their collaborators, the root guard, the API retry rule.

Built once by the daemon (or ``syncd sync``); the upload, delete and scan workflows take
it and nothing else, so a test can assemble one from real parts.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from syncd import plan, scanner
from syncd.admin import Admin
from syncd.api import AssetsClient
from syncd.breaker import Breaker
from syncd.config import FolderConfig
from syncd.errors import (
    ApiError,
    AuthError,
    OutcomeUnknown,
    RateLimited,
    RootUnavailable,
    TransientError,
)
from syncd.handoff import Handoff
from syncd.ledger import KEY_PAUSE, Ledger
from syncd.model import LATE_POST, Job
from syncd.safepath import Root
from syncd.scanner import RootHealth, RootState
from syncd.tags import Rules

log = structlog.get_logger(__name__)

#: How soon a job held by a root guard looks again.
ROOT_RETRY_SECONDS = 30.0
#: How soon a job paused by a rejected key looks again (the daemon probes meanwhile).
AUTH_RETRY_SECONDS = 30.0


@dataclass
class Context:
    """What the workflows share; built once by the daemon.

    ``ledger`` records what the workflows do; ``admin`` answers their lookups (an asset,
    its files, its reference count) and the daemon's figures and pruning.
    """

    ledger: Ledger
    client: AssetsClient
    folders: Mapping[str, FolderConfig]
    rules: Mapping[str, Rules]
    breaker: Breaker
    identity_tag: bool = True
    clock: Callable[[], float] = field(kw_only=True)
    admin: Admin = field(kw_only=True)
    late: plan.LateAnswers = field(default_factory=plan.LateAnswers, kw_only=True)
    rand: Callable[[], float] = field(default=random.random, kw_only=True)
    #: Uploads created claimed by the hash workers, for the API workers (None: none).
    handoff: Handoff | None = field(default=None, kw_only=True)

    def root_problem(
        self,
        folder: FolderConfig,
        *,
        row: Mapping[str, Any] | None = None,
        health: RootHealth | None = None,
    ) -> str | None:
        """Why deletions must not be mirrored for this folder now, or None.

        A guard that holds is also written to the folder's health, so ``syncd status``
        shows it and ``syncd approve-deletes`` can accept it, whoever noticed it first.
        A caller that has just read the folder's row and its root's health passes them.
        """
        store = self.ledger.store
        if row is None:
            row = store.folder_row(folder.key) or {}
        if health is None:
            health = scanner.root_health(
                folder.path, expected_dev=row.get("dev"), expected_ino=row.get("ino")
            )
        facts = plan.RootFacts(
            absent=health.absent,
            other_device=health.state is RootState.OTHER_DEVICE,
            replaced=health.state is RootState.REPLACED,
            approved=bool(row.get("approved")),
            reason=health.reason,
        )
        if plan.root_needs_listing(facts):
            several = facts.replaced or store.tracks_several(folder.key)
            emptied = several and scanner.is_empty(folder.path, self.rules[folder.key])
            facts = replace(facts, emptied=emptied)
        decided = plan.root_problem(facts)
        if decided is None:
            return None
        problem, state = decided
        replaced = int(facts.replaced and state == "unavailable")
        if (row.get("health"), row.get("reason"), row.get("replaced") or 0) != (
            state,
            problem,
            replaced,
        ):
            store.set_folder(folder.key, health=state, reason=problem, replaced=replaced)
        return problem

    def open_root(self, folder: FolderConfig) -> Root:
        """The folder's root held open, proven (on the descriptor) to be the folder recorded.

        Everything a job reads is opened beneath it. A root that is missing, or now another
        folder (renamed away and replaced, a symlink put in its place), raises
        :class:`RootUnavailable`; the second is also written to the folder's health.
        """
        try:
            root = Root(folder.path)
        except OSError as exc:
            raise RootUnavailable(f"root unavailable: {exc.strerror or exc}") from exc
        row = self.ledger.store.folder_row(folder.key) or {}
        verdict = scanner.judge_identity(*root.identity, row.get("dev"), row.get("ino"))
        if verdict.state is RootState.REPLACED and not row.get("approved"):
            root.close()
            assert verdict.reason is not None
            log.info("folder.replaced", folder=folder.key, reason=verdict.reason)
            raise RootUnavailable(verdict.reason)
        return root


def api_retry(
    ctx: Context, job: Job, exc: ApiError, event: str, *, size: int = 0, **where: Any
) -> None:
    """Put a job back after an API failure, feeding the breaker; never drops it.

    Logs ``event`` (e.g. ``upload.retry``) with ``where`` (path, asset_id, ...). An
    unknown outcome is looked up soon when the server is done with it (it dropped the
    connection or failed), and only after ``ctx.late`` allows for a body of ``size``
    bytes when it may still be working on it (a timeout, a gateway's 504).
    """
    log.warning(event, **where, error=type(exc).__name__, detail=str(exc), attempt=job.attempt)
    now = ctx.clock()
    if isinstance(exc, AuthError):
        ctx.breaker.auth_rejected(now, str(exc))
        ctx.ledger.retry_later(job, AUTH_RETRY_SECONDS, f"{KEY_PAUSE} ({exc})")
        return
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, (TransientError, RateLimited)):
        ctx.breaker.failure(now, str(exc), retry_after)
    delay = plan.retry_delay(job.attempt, retry_after, ctx.rand())
    reason = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OutcomeUnknown) and exc.late:
        # Marked: once uploaded, one more look later for a copy this POST may still make.
        ctx.ledger.retry_later(job, ctx.late.wait(size), reason, detail={LATE_POST: True})
        return
    if isinstance(exc, OutcomeUnknown):
        delay = min(delay, 2.0)
    ctx.ledger.retry_later(job, delay, reason)
