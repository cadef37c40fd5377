"""The one retry policy for calls to the Assets API, composed from tenacity strategies.

It decides *when* to send a request again, never *whether* a request is safe to repeat:
that is settled by the error class (see :func:`is_retryable`). Clock, sleep and jitter are
injectable so tests advance a fake clock instead of waiting.
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC
from typing import TypeVar

import structlog
import tenacity

from syncd import plan
from syncd.errors import RateLimited, TransientError

log = structlog.get_logger(__name__)

_T = TypeVar("_T")


def is_retryable(error: BaseException, *, max_wait: float) -> bool:
    """Whether sending the same request again, soon, can help.

    Only errors that prove nothing happened qualify. ``OutcomeUnknown`` never does: the
    asset may exist and a second POST would duplicate it. A Retry-After longer than we are
    willing to wait goes back to the caller, whose queue can honour it without blocking.
    """
    if not isinstance(error, TransientError | RateLimited):
        return False
    return error.retry_after is None or error.retry_after <= max_wait


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date).

    ``now`` is wall-clock epoch seconds. A date in the past means "now" (0); anything
    unreadable means the server gave no usable hint (None).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - now
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call tries before its error goes back to the caller.

    The job queue tries again later on its own schedule, so these limits are small: they
    smooth over blips, they are not the long-term plan. ``clock`` is monotonic seconds.
    """

    max_attempts: int = 4
    initial_wait: float = 0.5
    max_wait: float = 30.0
    max_total: float = 120.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    #: Jitter only spreads clients apart; it has nothing to do with secrecy.
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def with_attempts(self, max_attempts: int) -> RetryPolicy:
        """The same policy with another attempt budget (1 = no retries)."""
        return dataclasses.replace(self, max_attempts=max_attempts)

    def backoff(self, attempt: int) -> float:
        """Capped exponential backoff with equal jitter: at least half the step, at most all."""
        return plan.backoff(
            attempt, base=self.initial_wait, cap=self.max_wait, jitter=self.rng.random()
        )

    def call(self, fn: Callable[[], _T], *, method: str, path: str) -> _T:
        """Run ``fn`` under this policy; the last error is re-raised as it is."""
        return self.retrying(method=method, path=path)(fn)

    def retrying(self, *, method: str, path: str) -> tenacity.Retrying:
        """A fresh tenacity controller for one call; its time budget starts now."""
        deadline = self.clock() + self.max_total
        return tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.max_attempts) | _StopAt(deadline, self.clock),
            wait=_WaitForServer(self),
            retry=tenacity.retry_if_exception(lambda e: is_retryable(e, max_wait=self.max_wait)),
            reraise=True,
            sleep=self.sleep,
            before_sleep=_log_retry(method, path),
        )


class _StopAt(tenacity.stop.stop_base):
    """Stop when the coming sleep would end past the call's deadline (injected clock)."""

    def __init__(self, deadline: float, clock: Callable[[], float]) -> None:
        self._deadline = deadline
        self._clock = clock

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return self._clock() + retry_state.upcoming_sleep >= self._deadline


class _WaitForServer(tenacity.wait.wait_base):
    """The larger of our backoff and the server's Retry-After, capped at ``max_wait``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        wait = self._policy.backoff(retry_state.attempt_number)
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        hint = getattr(error, "retry_after", None)
        if isinstance(hint, float | int):
            wait = max(wait, float(hint))
        return min(wait, self._policy.max_wait)


def _log_retry(method: str, path: str) -> Callable[[tenacity.RetryCallState], None]:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "api.retry",
            method=method,
            path=path,
            attempt=state.attempt_number,
            wait=round(state.upcoming_sleep, 3),
            error=type(error).__name__,
            status=getattr(error, "status", None),
        )

    return before_sleep
