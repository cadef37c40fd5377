"""The gate in front of the API: a circuit breaker for outages and a pause for a bad key.

A dead API is probed, not hammered: after ``threshold`` transient failures in a row the
circuit opens for a cool-down (doubling up to ``max_cooldown``, or longer when the server
sent Retry-After); then the next requests go through as probes, and one more failure
opens it again for longer. A rejected key closes the
gate until a probe with the (possibly replaced) key succeeds. Pure: time is passed in.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class BreakerState:
    failures: int = 0
    open_until: float = 0.0
    cooldown: float = 0.0
    auth_rejected_since: float | None = None
    last_error: str | None = None


class Breaker:
    """Thread-safe; every method takes ``now`` so tests drive time by hand."""

    def __init__(
        self, *, threshold: int = 5, base_cooldown: float = 5.0, max_cooldown: float = 300.0
    ) -> None:
        self.threshold = threshold
        self.base_cooldown = base_cooldown
        self.max_cooldown = max_cooldown
        self.state = BreakerState()
        self._lock = threading.Lock()

    def allow(self, now: float) -> bool:
        """May a request go out now? After the cool-down, the next requests are probes."""
        with self._lock:
            s = self.state
            if s.auth_rejected_since is not None:
                return False
            return s.failures < self.threshold or now >= s.open_until

    def success(self) -> None:
        with self._lock:
            self.state = BreakerState()

    def failure(self, now: float, error: str, retry_after: float | None = None) -> None:
        """A transient failure (5xx, 429, network); opens the circuit past the threshold."""
        with self._lock:
            s = self.state
            s.failures += 1
            s.last_error = error
            if s.failures >= self.threshold:
                s.cooldown = min(self.max_cooldown, max(self.base_cooldown, s.cooldown * 2))
                s.open_until = now + max(s.cooldown, retry_after or 0.0)

    def auth_rejected(self, now: float, error: str) -> None:
        with self._lock:
            if self.state.auth_rejected_since is None:
                self.state.auth_rejected_since = now
            self.state.last_error = error

    def auth_accepted(self) -> None:
        with self._lock:
            self.state.auth_rejected_since = None

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self.state.failures >= self.threshold

    @property
    def auth_rejected_since(self) -> float | None:
        with self._lock:
            return self.state.auth_rejected_since

    def wait_hint(self, now: float) -> float:
        """How long until a request may go out again (0 when it may now)."""
        with self._lock:
            if self.state.failures < self.threshold:
                return 0.0
            return max(0.0, self.state.open_until - now)
