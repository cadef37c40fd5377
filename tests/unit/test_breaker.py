"""The breaker: one probe at a time on a short, capped schedule; in-flight failures never
push the next probe away; an answer closes it."""

from __future__ import annotations

from syncd.breaker import Breaker

T0 = 1000.0


def opened(**kwargs: float) -> Breaker:
    breaker = Breaker(threshold=3, **kwargs)
    for _ in range(3):
        breaker.failure(T0, "HTTP 503")
    return breaker


def test_threshold_failures_open_it_and_stop_ordinary_requests() -> None:
    """Below the threshold requests go; at it, none do, and the first probe is 1 s away."""
    breaker = Breaker(threshold=3)
    breaker.failure(T0, "x")
    breaker.failure(T0, "x")
    assert breaker.allow(T0) and not breaker.is_open
    breaker.failure(T0, "HTTP 503")
    assert breaker.is_open and not breaker.allow(T0 + 100)
    assert breaker.state.open_since == T0 and breaker.wait_hint(T0) == 1.0


def test_only_one_probe_is_handed_out_at_a_time() -> None:
    """Four workers asking at once: one gets the probe; the rest wait for its outcome."""
    breaker = opened()
    takers = [breaker.take_probe(T0 + 1) for _ in range(4)]
    assert takers == [True, False, False, False]
    breaker.probe_failed(T0 + 1, "HTTP 503")
    assert not breaker.take_probe(T0 + 1.5)
    assert breaker.take_probe(T0 + 3)


def test_probe_schedule_doubles_to_a_low_cap_however_long_the_outage() -> None:
    """1, 2, 4, 5, 5, ... s: after an hour down the next probe is still 5 s away."""
    breaker = opened()
    now, gaps = T0 + 1, []
    for _ in range(720):
        assert breaker.take_probe(now)
        breaker.probe_failed(now, "HTTP 503")
        gaps.append(breaker.state.next_probe - now)
        now = breaker.state.next_probe
    assert gaps[:4] == [2.0, 4.0, 5.0, 5.0] and max(gaps) == 5.0


def test_failures_of_requests_in_flight_do_not_push_the_probe_away() -> None:
    """Dozens of late failures while open: the next probe time stays, the error updates."""
    breaker = opened()
    due = breaker.state.next_probe
    for _ in range(40):
        breaker.failure(T0 + 0.5, "connection refused")
    assert breaker.state.next_probe == due and breaker.state.last_error == "connection refused"


def test_retry_after_stretches_the_wait_up_to_its_cap() -> None:
    """A Retry-After of 30 s is honoured; one of an hour is capped at 60 s."""
    breaker = opened()
    assert breaker.take_probe(T0 + 1)
    breaker.probe_failed(T0 + 1, "429", retry_after=30)
    assert breaker.state.next_probe == T0 + 31
    assert breaker.take_probe(T0 + 31)
    breaker.probe_failed(T0 + 31, "429", retry_after=3600)
    assert breaker.state.next_probe == T0 + 91


def test_an_answer_closes_it_and_says_since_when_it_was_open() -> None:
    """success() returns the outage's start and lets requests go again."""
    breaker = opened()
    assert breaker.success() == T0
    assert breaker.allow(T0 + 1) and not breaker.is_open and breaker.success() is None


def test_a_rejected_key_is_kept_across_an_outage_ending() -> None:
    """Closing the circuit does not forget that the key was refused."""
    breaker = opened()
    breaker.auth_rejected(T0, "401")
    breaker.success()
    assert breaker.auth_rejected_since == T0 and not breaker.allow(T0)
