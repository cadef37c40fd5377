"""The gate in front of the API: a circuit breaker for outages and a pause for a bad key.

A dead API is probed, not hammered. After ``threshold`` transient failures in a row the
circuit opens: workers stop sending, and one probe at a time (a single cheap request,
taken by whichever worker asks first) checks whether the API answers again, on a short
schedule that doubles from ``base_probe`` up to ``max_probe`` seconds. The schedule is
capped low on purpose: an outage of any length must end for syncd within seconds of the
API answering, and a probe every few seconds costs nothing. A Retry-After from the
server stretches the wait (up to ``max_retry_after``). Failures reported by requests
already in flight while the circuit is open only update the last error: they never push
the next probe further away.

A rejected key closes the gate until a probe with the (possibly replaced) key succeeds.
Pure: time is passed in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class BreakerState:
    """A snapshot, for status and metrics; ``open_since`` is None while closed."""

    failures: int = 0
    open_since: float | None = None
    next_probe: float = 0.0
    interval: float = 0.0
    probing: bool = False
    auth_rejected_since: float | None = None
    last_error: str | None = None


class Breaker:
    """Thread-safe; every method takes ``now`` so tests drive time by hand."""

    def __init__(
        self,
        *,
        threshold: int = 5,
        base_probe: float = 1.0,
        max_probe: float = 5.0,
        max_retry_after: float = 60.0,
    ) -> None:
        self.threshold = threshold
        self.base_probe = base_probe
        self.max_probe = max_probe
        self.max_retry_after = max_retry_after
        self._state = BreakerState()
        self._lock = threading.Lock()

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state

    def allow(self, now: float) -> bool:
        """May an ordinary request go out now? Not while open or while the key is refused."""
        with self._lock:
            s = self._state
            return s.auth_rejected_since is None and s.open_since is None

    def take_probe(self, now: float) -> bool:
        """Claim the one probe of an open circuit, if it is due and nobody holds it."""
        with self._lock:
            s = self._state
            if s.open_since is None or s.probing or now < s.next_probe:
                return False
            self._state = replace(s, probing=True)
            return True

    def success(self) -> float | None:
        """The API answered: close. Returns when the outage began if it was open."""
        with self._lock:
            since = self._state.open_since
            self._state = BreakerState(auth_rejected_since=self._state.auth_rejected_since)
            return since

    def failure(self, now: float, error: str, retry_after: float | None = None) -> None:
        """A transient failure (5xx, 429, network) of an ordinary request."""
        with self._lock:
            s = self._state
            if s.open_since is not None:
                self._state = replace(s, last_error=error)
                return
            failures = s.failures + 1
            if failures < self.threshold:
                self._state = replace(s, failures=failures, last_error=error)
                return
            wait = self._wait(self.base_probe, retry_after)
            self._state = replace(
                s,
                failures=failures,
                open_since=now,
                interval=self.base_probe,
                next_probe=now + wait,
                last_error=error,
            )

    def probe_failed(self, now: float, error: str, retry_after: float | None = None) -> None:
        """The probe found the API still down: the next one comes a little later."""
        with self._lock:
            s = self._state
            interval = min(self.max_probe, max(self.base_probe, s.interval * 2))
            self._state = replace(
                s,
                probing=False,
                open_since=s.open_since if s.open_since is not None else now,
                interval=interval,
                next_probe=now + self._wait(interval, retry_after),
                last_error=error,
            )

    def _wait(self, interval: float, retry_after: float | None) -> float:
        return max(interval, min(self.max_retry_after, retry_after or 0.0))

    def auth_rejected(self, now: float, error: str) -> None:
        with self._lock:
            s = self._state
            since = s.auth_rejected_since if s.auth_rejected_since is not None else now
            self._state = replace(s, auth_rejected_since=since, last_error=error)

    def auth_accepted(self) -> None:
        with self._lock:
            self._state = replace(self._state, auth_rejected_since=None)

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._state.open_since is not None

    @property
    def auth_rejected_since(self) -> float | None:
        with self._lock:
            return self._state.auth_rejected_since

    def wait_hint(self, now: float) -> float:
        """How long until a request or the probe may go out (0 when it may now)."""
        with self._lock:
            s = self._state
            if s.open_since is None:
                return 0.0
            return max(0.0, s.next_probe - now)
