"""What the workflows share: their collaborators, the root guard, the API retry rule.

Built once by the daemon (or ``syncd sync``); the upload, delete and scan workflows take
it and nothing else, so a test can assemble one from real parts.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from syncd import plan, scanner
from syncd.api import AssetsClient
from syncd.breaker import Breaker
from syncd.config import FolderConfig
from syncd.errors import ApiError, AuthError, OutcomeUnknown, RateLimited, TransientError
from syncd.ledger import KEY_PAUSE, Ledger
from syncd.model import Job
from syncd.tags import Rules

#: How soon a job held by a root guard looks again.
ROOT_RETRY_SECONDS = 30.0
#: How soon a job paused by a rejected key looks again (the daemon probes meanwhile).
AUTH_RETRY_SECONDS = 30.0


@dataclass
class Context:
    """What the workflows share; built once by the daemon."""

    ledger: Ledger
    client: AssetsClient
    folders: Mapping[str, FolderConfig]
    rules: Mapping[str, Rules]
    breaker: Breaker
    identity_tag: bool = True
    clock: Callable[[], float] = field(default=lambda: 0.0)
    rand: Callable[[], float] = field(default=random.random)

    def root_problem(self, folder: FolderConfig) -> str | None:
        """Why deletions must not be mirrored for this folder now, or None."""
        row = self.ledger.store.folder_row(folder.key) or {}
        health = scanner.root_health(folder.path, expected_dev=row.get("dev"))
        if not health.ok:
            if row.get("approved") and health.reason and "device" in health.reason:
                return None
            return health.reason or "root unavailable"
        # One tracked file leaving an empty root is an ordinary last deletion; several
        # vanishing with the root left empty is what an unmounted drive looks like.
        if (
            not row.get("approved")
            and self.ledger.store.tracked_count(folder.key) > 1
            and scanner.is_empty(folder.path, self.rules[folder.key])
        ):
            return "root is empty where files were tracked (unmounted?)"
        return None


def api_retry(ctx: Context, job: Job, exc: ApiError) -> None:
    """Put a job back after an API failure, feeding the breaker; never drops it."""
    now = ctx.clock()
    if isinstance(exc, AuthError):
        ctx.breaker.auth_rejected(now, str(exc))
        ctx.ledger.retry_later(job, AUTH_RETRY_SECONDS, f"{KEY_PAUSE} ({exc})")
        return
    retry_after = getattr(exc, "retry_after", None)
    if isinstance(exc, (TransientError, RateLimited)):
        ctx.breaker.failure(now, str(exc), retry_after)
    delay = plan.retry_delay(job.attempt, retry_after, ctx.rand())
    if isinstance(exc, OutcomeUnknown):
        delay = min(delay, 2.0)
    ctx.ledger.retry_later(job, delay, f"{type(exc).__name__}: {exc}")
