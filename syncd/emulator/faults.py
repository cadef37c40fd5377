"""Fault injection: the hostile network the daemon must survive, on demand and replayable.

Every ``/v1`` request draws the same three random numbers from one seeded generator,
whatever the settings, so a given seed and request order replay the same faults. With
several connections at once the order of requests is up to the scheduler; a test that
needs an exact replay sends its requests one at a time.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass
from typing import Any

SERVER_ERRORS = (500, 502, 503)
FAULT_KINDS = ("error", "rate_limit", "ambiguous", "latency", "down", "late", "churn")
#: The tag of the assets another client adds and deletes (``churn_*``); never syncd's.
OTHER_CLIENT_TAG = "other-client"


@dataclass(frozen=True)
class Faults:
    """What goes wrong, and how often; the defaults are a perfect network.

    ``error_rate``: chance of a 500, 502 or 503 before the request is handled (nothing
    is stored). ``rate_limit_rate``: chance of a 429 carrying ``Retry-After``
    (``retry_after`` seconds, rounded up to a whole number as RFC 9110 asks).
    ``latency``: seconds added to every request. ``ambiguous_rate``: chance that the
    request is handled in full (an upload is stored) and then the connection is closed
    with no answer at all. ``down``: every request answers 503. ``seed``: makes the
    draws replayable; ``None`` draws from the OS.

    ``late_rate``: chance that an upload is answered only after ``late_seconds``: the body
    is read at once, the asset stored at the end of the wait, then answered (usually to a
    client that gave up long before). ``churn_adds`` / ``churn_deletes``: after every list
    page, another client adds that many assets and deletes that many of its own (tagged
    ``other-client``), so a whole-library read sees the library move under it. These draw
    from a second generator, so a seed replays the same 5xx/429/drop faults as before.
    """

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    latency: float = 0.0
    ambiguous_rate: float = 0.0
    down: bool = False
    seed: int | None = None
    late_rate: float = 0.0
    late_seconds: float = 0.0
    churn_adds: int = 0
    churn_deletes: int = 0

    def __post_init__(self) -> None:
        for name in ("error_rate", "rate_limit_rate", "ambiguous_rate", "late_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, not {value!r}")
        for name in ("retry_after", "latency", "late_seconds", "churn_adds", "churn_deletes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")

    @classmethod
    def from_json(cls, data: Any) -> Faults:
        """Build from an inspection request body; unknown keys are a mistake, not noise.

        Raises ValueError or TypeError, with a message fit for the caller."""
        if not isinstance(data, dict):
            raise TypeError("fault settings must be a JSON object")
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """The fate of one request, drawn when it arrives."""

    down: bool = False
    latency: float = 0.0
    status: int | None = None  # 429 or a 5xx answered instead of handling the request
    retry_after: int | None = None
    drop_after: bool = False  # handle the request, then close the connection unanswered


class FaultInjector:
    """Holds the settings, the generator and the counts; safe to share between threads."""

    def __init__(self, faults: Faults | None = None) -> None:
        self._lock = threading.Lock()
        self._faults = Faults()
        self._rng = random.Random()  # noqa: S311 - fault draws, not secrets
        self._extra = random.Random()  # noqa: S311 - late answers and churn
        self._counts = dict.fromkeys(FAULT_KINDS, 0)
        self.configure(faults or Faults())

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def configure(self, faults: Faults) -> None:
        """Swap the settings; a new seed restarts the sequence of draws."""
        with self._lock:
            self._faults = faults
            self._rng = random.Random(faults.seed)  # noqa: S311 - fault draws, not secrets
            extra = None if faults.seed is None else f"extra-{faults.seed}"
            self._extra = random.Random(extra)  # noqa: S311 - late answers and churn

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def reset_counts(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(FAULT_KINDS, 0)

    def decide(self) -> Decision:
        with self._lock:
            f = self._faults
            roll, code_roll, drop_roll = (self._rng.random() for _ in range(3))
            if f.down:
                self._counts["down"] += 1
                return Decision(down=True)
            if f.latency > 0:
                self._counts["latency"] += 1
            if roll < f.rate_limit_rate:
                self._counts["rate_limit"] += 1
                return Decision(latency=f.latency, status=429, retry_after=_whole(f.retry_after))
            if roll < f.rate_limit_rate + f.error_rate:
                self._counts["error"] += 1
                status = SERVER_ERRORS[int(code_roll * len(SERVER_ERRORS))]
                return Decision(latency=f.latency, status=status)
            return Decision(latency=f.latency, drop_after=drop_roll < f.ambiguous_rate)

    def late(self) -> float:
        """Seconds an upload is held before it is stored and answered (0: at once)."""
        with self._lock:
            f = self._faults
            if f.late_rate <= 0 or f.late_seconds <= 0 or self._extra.random() >= f.late_rate:
                return 0.0
            self._counts["late"] += 1
            return f.late_seconds

    def churn(self) -> tuple[int, list[float]]:
        """After a list page: how many assets the other client adds, and which of its own
        it deletes (each a fraction in [0, 1) of its assets, picked by the seeded draws)."""
        with self._lock:
            f = self._faults
            if not (f.churn_adds or f.churn_deletes):
                return 0, []
            self._counts["churn"] += 1
            return f.churn_adds, [self._extra.random() for _ in range(f.churn_deletes)]

    def extra_seed(self) -> int:
        """A seed for the content the other client adds, from the same replayable draws."""
        with self._lock:
            return self._extra.randrange(2**31)

    def count_drop(self) -> None:
        """Counted when the drop happens, since an unauthorised request is never dropped."""
        with self._lock:
            self._counts["ambiguous"] += 1


def _whole(seconds: float) -> int:
    whole = int(seconds)
    return whole if whole == seconds else whole + 1
