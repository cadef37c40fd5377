"""Following remote processing to its end: every uploaded asset until ``ready`` or ``failed``.

One thread, one round at a time. A round looks at the assets whose next look is due:

* while a few assets (at most :data:`FEW`) are followed, each due one is asked for by id
  (``GET /v1/assets/{id}``), which also tells a deleted asset (404) apart;
* while more are followed, the library is listed instead
  (``GET /v1/my-uploaded-assets?status=processing``, paged), once for every followed
  asset, not once per asset. An asset that is no longer listed as processing is then
  ``failed`` when the failed list holds it (with the server's reason), else ``ready``.

Each asset backs off on its own, from a few seconds (``first``) doubling up to ``cap``;
every request waits its turn so the rate never exceeds ``rate`` a second, whatever is
pending. API trouble pauses the follow-up, never an upload: it is bookkeeping.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog

from syncd.api import PAGE_SIZE
from syncd.context import Context
from syncd.errors import ApiError, AuthError, NotFound, StoreError, TransientError
from syncd.lifecycle import Lifecycle
from syncd.model import RemoteAsset

log = structlog.get_logger(__name__)

#: Due assets asked for one by one; with more than this, the list is read instead.
FEW = 5
#: The longest a round waits when nothing is due (new uploads are noticed this soon).
IDLE = 2.0
#: After an API failure, the follow-up rests this long (the uploads have their own retries).
TROUBLE = 30.0
UNKNOWN_FAILURE = "processing failed (the server gave no reason)"


class Stopped(Exception):
    """The daemon stops: a round ends where it is (everything so far is recorded)."""


@dataclass
class Pace:
    """At most ``rate`` requests a second; ``wait(seconds)`` returns True when stopping."""

    rate: float
    wait: Callable[[float], bool]
    _next: float = 0.0

    def turn(self) -> None:
        now = time.monotonic()
        if self._next > now and self.wait(self._next - now):
            raise Stopped
        self._next = max(now, self._next) + 1.0 / self.rate


class ProcessingFollowUp:
    """Runs follow-up rounds; ``loop`` is the body of the daemon's processing thread."""

    def __init__(
        self,
        ctx: Context,
        lifecycle: Lifecycle,
        pace: Pace,
        *,
        first: float,
        cap: float,
    ) -> None:
        self.ctx = ctx
        self.lifecycle = lifecycle
        self.pace = pace
        self.first = first
        self.cap = cap
        #: Hooks run after each round (the archive workflow leans on the states set here).
        self.after_round: list[Callable[[], None]] = []

    def loop(self, stopping: Callable[[float], bool]) -> None:
        """Round after round until ``stopping(seconds)`` (a wait) says the daemon stops."""
        wait = 0.0
        while not stopping(wait):
            try:
                wait = self.round()
            except Stopped:
                return
            try:
                for hook in self.after_round:
                    self._run_hook(hook)
            except Stopped:
                return

    def _run_hook(self, hook: Callable[[], None]) -> None:
        """A hook's failure is logged and tried again next round, never fatal."""
        try:
            hook()
        except Stopped:
            raise
        except StoreError as exc:
            log.warning("processing.hook_not_recorded", error=str(exc))
        except Exception:
            log.exception("processing.hook_crashed")

    def round(self) -> float:
        """One round; the seconds until the next one is worth doing."""
        try:
            self._round()
        except AuthError as exc:
            self.ctx.breaker.auth_rejected(self.ctx.clock(), str(exc))
            return TROUBLE
        except ApiError as exc:
            log.warning("processing.check_failed", error=type(exc).__name__, detail=str(exc))
            return TROUBLE
        except StoreError as exc:
            log.warning("processing.not_recorded", error=str(exc))
            return IDLE
        upcoming = self.lifecycle.next_due(self.first)
        if upcoming is None:
            return IDLE
        return min(IDLE, max(0.05, upcoming - self.ctx.clock()))

    def _round(self) -> None:
        if not self.ctx.breaker.allow(self.ctx.clock()):
            return
        due = self.lifecycle.due(self.ctx.clock(), self.first, limit=FEW)
        if due and self.lifecycle.count_followed(FEW + 1) > FEW:
            self._batch()  # one listing answers for every followed asset, due or not yet
        else:
            for row in due:
                self._one(row["key"], row["asset_id"])
        self._delete_replaced()

    # -- one by one -----------------------------------------------------------------------

    def _one(self, key: str, asset_id: str) -> None:
        self.pace.turn()
        try:
            remote = self.ctx.client.get(asset_id)
        except NotFound:
            self.lifecycle.deleted(key, asset_id)
            log.warning("processing.deleted_remotely", asset_id=asset_id)
            return
        if remote.status == "ready":
            self.lifecycle.ready([key])
            log.info("processing.ready", asset_id=asset_id)
        elif remote.status == "failed":
            self._failed(key, asset_id, remote)
        else:
            self.lifecycle.still_processing([key], self.ctx.clock(), self.first, self.cap)

    def _failed(self, key: str, asset_id: str, remote: RemoteAsset | None) -> None:
        reason = (remote.failure_reason if remote else None) or UNKNOWN_FAILURE
        again = self.lifecycle.failed(key, asset_id, reason)
        log.warning("processing.failed", asset_id=asset_id, reason=reason, reupload=again)

    # -- batched ----------------------------------------------------------------------------

    def _batch(self) -> None:
        """One listing for every followed asset; only what changed is written."""
        started = self.ctx.clock()
        processing = {a.asset_id for a in self._listing("processing")}
        failures: dict[str, RemoteAsset] | None = None
        ready: list[str] = []
        still: list[str] = []
        for rows in self.lifecycle.followed(uploaded_before=started):
            for row in rows:
                if row["asset_id"] in processing:
                    still.append(row["key"])
                    continue
                if failures is None:
                    failures = {a.asset_id: a for a in self._listing("failed")}
                failure = failures.get(row["asset_id"])
                if failure is not None:
                    self._failed(row["key"], row["asset_id"], failure)
                else:
                    ready.append(row["key"])
        self.lifecycle.ready(ready)
        self.lifecycle.still_processing(still, self.ctx.clock(), self.first, self.cap)
        log.info("processing.checked", ready=len(ready), processing=len(still))

    def _listing(self, status: str) -> Iterator[RemoteAsset]:
        """Every asset in a state, page by page, each page waiting its turn."""
        offset = 0
        while True:
            self.pace.turn()
            page = self.ctx.client.list_page(limit=PAGE_SIZE, offset=offset, status=status)
            yield from (a for a in page.assets if a.status == status)
            if not page.has_more:
                return
            if not page.assets:
                raise TransientError("has_more with an empty page: the listing is cut short")
            offset += len(page.assets)

    # -- failed assets that were replaced ------------------------------------------------

    def _delete_replaced(self) -> None:
        """A failed asset goes only once its re-upload exists (a 404 counts as gone)."""
        for row in self.lifecycle.replaced():
            self.pace.turn()
            with contextlib.suppress(NotFound):
                self.ctx.client.delete(row["replaces"])
            self.lifecycle.forget_replaced(row["key"], row["replaces"])
            log.info("processing.failed_asset_deleted", asset_id=row["replaces"])
