"""Scan requests: each waits once, and a folder's full scan covers its prefix scans."""

from __future__ import annotations

from syncd.intake import ScanRequests


def drain(requests: ScanRequests) -> list[tuple[str, str]]:
    out = []
    while (request := requests.get(timeout=0)) is not None:
        out.append(request)
    return out


def test_a_request_already_waiting_is_not_queued_again() -> None:
    """A burst of the same request queues one scan."""
    requests = ScanRequests()
    for _ in range(1000):
        requests.put("/hot", "a")
    assert len(requests) == 1
    assert drain(requests) == [("/hot", "a")]


def test_a_waiting_full_scan_covers_prefix_scans_of_its_folder_only() -> None:
    """Prefix requests behind a full scan are skipped; another folder's are kept."""
    requests = ScanRequests()
    requests.put("/hot")
    for prefix in ("a", "b", "a"):
        requests.put("/hot", prefix)
        requests.put("/other", prefix)
    assert drain(requests) == [("/hot", ""), ("/other", "a"), ("/other", "b")]


def test_prefix_scans_queued_before_a_full_scan_are_dropped_when_they_come_up() -> None:
    """The full scan asked for later makes the earlier prefix scans of its folder needless."""
    requests = ScanRequests()
    requests.put("/hot", "a")
    requests.put("/other", "a")
    requests.put("/hot")
    assert drain(requests) == [("/other", "a"), ("/hot", "")]


def test_a_request_is_taken_again_once_its_scan_has_started() -> None:
    """A change during a scan may ask for the same scan, and must get it."""
    requests = ScanRequests()
    requests.put("/hot")
    assert requests.get(timeout=0) == ("/hot", "")
    assert requests.put("/hot") is True
    assert drain(requests) == [("/hot", "")]
