"""The pure rules: settling, root guards, the max_deletes hold and backoff, each in one place."""

from __future__ import annotations

import random

from syncd import plan
from syncd.plan import RootFacts
from syncd.retry import RetryPolicy


def test_a_file_still_being_written_waits_out_its_settle_time() -> None:
    """A file changed 0.1 s ago with a 0.5 s settle waits the rest (plus a small margin)."""
    assert plan.settle_wait(0.1, 0.5, seen_unchanged=False) == 0.4 + plan.SETTLE_MARGIN
    assert plan.settle_wait(0.5, 0.5, seen_unchanged=False) is None


def test_a_future_mtime_must_look_the_same_twice() -> None:
    """An mtime in the future waits one settle, then passes once it was seen unchanged."""
    assert plan.settle_wait(-3600, 2.0, seen_unchanged=False) == 2.0
    assert plan.settle_wait(-3600, 2.0, seen_unchanged=True) is None


def test_root_guards_decide_from_facts_alone() -> None:
    """Missing is unavailable; another device or emptied is guarded until approved."""
    absent = RootFacts(absent=True, other_device=False, approved=True, reason="gone")
    assert plan.root_problem(absent) == ("gone", "unavailable")
    moved = RootFacts(absent=False, other_device=True, approved=False)
    assert plan.root_problem(moved) == ("root on another device", "guarded")
    emptied = RootFacts(absent=False, other_device=False, approved=False, emptied=True)
    assert plan.root_problem(emptied) is not None and plan.root_problem(emptied)[1] == "guarded"
    approved = RootFacts(absent=False, other_device=True, approved=True, emptied=True)
    assert plan.root_problem(approved) is None
    assert not plan.root_needs_listing(approved) and plan.root_needs_listing(
        RootFacts(absent=False, other_device=False, approved=False)
    )


def test_the_hold_rule_counts_waiting_and_new_deletions() -> None:
    """More than max_deletes at once are held; once held, later ones join the held."""
    assert not plan.hold_deletes(2, 1, 3)
    assert plan.hold_deletes(3, 1, 3)
    assert plan.hold_deletes(0, 4, 3)
    assert plan.hold_deletes(0, 1, 3, held=True)


def test_the_api_retry_backoff_is_the_plan_backoff() -> None:
    """RetryPolicy's backoff is plan.backoff with its own base and cap (one formula)."""
    policy = RetryPolicy(initial_wait=0.5, max_wait=5.0, rng=random.Random(3))
    jitters = random.Random(3)
    for attempt in range(1, 12):
        expected = plan.backoff(attempt, base=0.5, cap=5.0, jitter=jitters.random())
        assert policy.backoff(attempt) == expected
