"""The API misbehaving: 5xx bursts, 429, downtime, slow answers, lost answers, a revoked key
and a gateway that refuses a file the client thought fine.

Each case runs the real daemon in this process (real watcher, real SQLite, real HTTP over
loopback to the emulator). The daemon's client sends through a :class:`Gateway`: a real
HTTP transport that records every exchange (when, which asset, what came back) so a test
can measure waits and count requests, and that can play a reverse proxy with a body limit.
"""

from __future__ import annotations

import collections
import functools
import io
import itertools
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from syncd import log
from syncd.emulator import EmulatorServer, Faults
from tests.faults import conftest as shared
from tests.faults.conftest import (
    DELETES,
    POSTS,
    FaultReport,
    Pair,
    converge,
    disk_pairs,
    make_files,
    status_json,
    syncd,
)
from tests.running import Launcher, Running
from tests.support import noise_jpeg, wait_until

pytestmark = pytest.mark.faults

_IDENTITY = re.compile(rb"sha256:[0-9a-f]{32}")


# --- the gateway: real HTTP, recorded ------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request as the daemon's client saw it go out and come back."""

    started: float
    ended: float
    method: str
    path: str
    identity: str | None  # the identity tag the request is about (POST body or list filter)
    status: int | None  # None: no answer (timeout, connection dropped)


class Gateway(httpx.BaseTransport):
    """Forwards to the emulator over a real socket and records each exchange.

    ``body_limit`` makes it answer 413 itself for larger bodies, as a reverse proxy in front
    of the service does (nginx's ``client_max_body_size`` is 1 MiB unless raised).
    """

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()
        self.exchanges: list[Exchange] = []
        self.body_limit: int | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        identity = _identity_of(request)
        status: int | None = None
        try:
            limit = self.body_limit
            if limit is not None and len(request.content) > limit:
                response = httpx.Response(
                    413, html=_PROXY_413, headers={"Server": "nginx"}, request=request
                )
            else:
                response = self._inner.handle_request(request)
            status = response.status_code
            return response
        finally:
            with self._lock:
                self.exchanges.append(
                    Exchange(
                        started,
                        time.monotonic(),
                        request.method,
                        request.url.path,
                        identity,
                        status,
                    )
                )

    def close(self) -> None:
        self._inner.close()

    def snapshot(self) -> list[Exchange]:
        with self._lock:
            return list(self.exchanges)


_PROXY_413 = (
    "<html><head><title>413 Request Entity Too Large</title></head><body>"
    "<center><h1>413 Request Entity Too Large</h1></center><hr><center>nginx</center>"
    "</body></html>"
)


def _identity_of(request: httpx.Request) -> str | None:
    if request.method == "POST":
        found = _IDENTITY.search(request.read())
        return found.group().decode() if found else None
    tags = request.url.params.get("tags")
    return tags if tags and tags.startswith("sha256:") else None


# --- the daemon in process, its client through the gateway --------------------------------


@pytest.fixture
def gateway() -> Gateway:
    """The recording transport under the daemon's client: one per case."""
    return Gateway()


@pytest.fixture
def harness(start_daemon: Launcher, gateway: Gateway) -> Callable[..., Running]:
    """``start_daemon``, with the daemon's client sending through this case's gateway."""
    return functools.partial(start_daemon, transport=gateway)


def finish(run: Running, report: FaultReport, want: set[Pair], note: str) -> None:
    """The invariants every case ends on, its row in the figures table, no remote deletion."""
    shared.finish(run, report, want, note)
    deletes = run.emulator.stats()["requests"].get(DELETES, 0)
    assert deletes == 0, "nothing was deleted locally, so nothing may be deleted remotely"


# --- the cases -------------------------------------------------------------------------


def test_5xx_bursts_upload_every_file_exactly_once(
    harness, gateway: Gateway, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Two bursts of 50% 500/502/503, with a calm between: every file goes up exactly once."""
    make_files(hot, 18, first_seed=100)
    want = disk_pairs(hot)
    emulator.set_faults(Faults(error_rate=0.5, seed=101))
    run = harness()
    wait_until(lambda: emulator.stats()["faults"]["error"] >= 8, 20, message="a 5xx burst")
    emulator.set_faults(Faults())
    wait_until(lambda: len(emulator.assets()) >= 6, 20, message="some progress between bursts")
    emulator.set_faults(Faults(error_rate=0.5, seed=102))
    wait_until(lambda: emulator.stats()["faults"]["error"] >= 16, 20, message="a second burst")
    emulator.set_faults(Faults())
    converge(run, want)
    stats = emulator.stats()
    unknown = [e for e in gateway.snapshot() if e.method == "POST" and e.status in (500, 502)]
    assert unknown, "some POSTs must have met a 5xx whose outcome is unknown"
    posts = stats["requests"].get(POSTS, 0)
    note = f"5xx={stats['faults']['error']} posts={posts} post_5xx={len(unknown)}"
    finish(run, fault_report, want, f"{note} files={len(want)}")


def test_429_retry_after_is_honoured_between_attempts(
    harness, gateway: Gateway, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """429 with Retry-After: 1: uploads complete and no attempt for an asset comes sooner."""
    make_files(hot, 6, first_seed=200)
    want = disk_pairs(hot)
    emulator.set_faults(Faults(rate_limit_rate=0.5, retry_after=1, seed=202))
    run = harness(concurrency=3)
    converge(run, want, timeout=60)
    emulator.set_faults(Faults())
    by_asset: dict[str, list[Exchange]] = collections.defaultdict(list)
    for exchange in gateway.snapshot():
        if exchange.identity:
            by_asset[exchange.identity].append(exchange)
    gaps = []
    for exchanges in by_asset.values():
        exchanges.sort(key=lambda e: e.started)
        gaps += [b.started - a.ended for a, b in itertools.pairwise(exchanges) if a.status == 429]
    limited = emulator.stats()["faults"]["rate_limit"]
    assert len(gaps) >= 3, f"too few 429s followed by another attempt to judge ({gaps})"
    # Clocks: the gateway reads monotonic time, the queue wall time; allow for the rounding.
    assert min(gaps) >= 1.0 - 0.02, f"an attempt came {min(gaps):.3f}s after a 429"
    note = f"429s={limited} retried={len(gaps)} min_wait={min(gaps):.2f}s (Retry-After 1s)"
    finish(run, fault_report, want, note)


def test_downtime_is_probed_not_hammered_and_drops_nothing(
    harness, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """A 4 s outage with 30 queued uploads: few requests (breaker), then all files go up."""
    run = harness()
    wait_until(run.daemon.indexed.is_set, 10, message="the library indexed")
    emulator.set_faults(Faults(down=True))
    make_files(hot, 30, first_seed=300)
    want = disk_pairs(hot)
    wait_until(
        lambda: len(run.jobs("kind = 'upload' AND state IN ('pending', 'uploading')")) == 30,
        15,
        message="30 uploads queued behind the outage",
    )
    before = sum(emulator.stats()["requests"].values())
    time.sleep(4.0)  # the outage persists: this is the span being measured
    during = sum(emulator.stats()["requests"].values()) - before
    assert run.daemon.ctx is not None
    breaker = "open" if run.daemon.ctx.breaker.is_open else "closed"
    emulator.set_faults(Faults())
    converge(run, want, timeout=60)
    # Two workers, four tries per call spaced 0.25-2 s apart, and the breaker opening after
    # five failed calls: at most a few dozen requests, whatever the queue holds.
    naive = 30 * 4
    bound = 2 * 4 * 3
    assert during <= bound, f"{during} requests during a 4 s outage (bound {bound})"
    note = f"requests in 4s outage={during} (bound {bound}, naive {naive}), breaker {breaker}"
    finish(run, fault_report, want, f"{note}, 503s={emulator.stats()['faults']['down']}")


def test_an_answer_that_never_came_is_reconciled_not_resent(
    harness, gateway: Gateway, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Answers slower than the timeout: the POST is an unknown outcome, adopted, never resent."""
    run = harness(timeout=1)
    wait_until(run.daemon.indexed.is_set, 10, message="the library indexed")
    emulator.set_faults(Faults(latency=1.6))
    make_files(hot, 4, first_seed=400)
    want = disk_pairs(hot)

    def timed_out_posts() -> list[Exchange]:
        return [e for e in gateway.snapshot() if e.method == "POST" and e.status is None]

    wait_until(lambda: len(timed_out_posts()) >= 2, 20, message="POSTs that timed out")
    wait_until(lambda: len(emulator.assets()) >= 2, 10, message="the late POSTs stored")
    emulator.set_faults(Faults())
    converge(run, want)
    lost = {e.identity for e in timed_out_posts()}
    posts = collections.Counter(e.identity for e in gateway.snapshot() if e.method == "POST")
    assert all(posts[identity] == 1 for identity in lost), "a timed-out POST was sent again"
    note = f"timed_out_posts={len(timed_out_posts())} adopted={len(lost)}"
    finish(run, fault_report, want, f"{note} posts={posts.total()} (timeout 1s, latency 1.6s)")


def test_ambiguous_failures_neither_duplicate_nor_lose(
    harness, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """Half the requests are done and then cut off unanswered: no duplicate, no loss."""
    make_files(hot, 15, first_seed=500)
    want = disk_pairs(hot)
    emulator.set_faults(Faults(ambiguous_rate=0.5, seed=505))
    run = harness()
    converge(run, want, timeout=60)
    stats = emulator.stats()
    emulator.set_faults(Faults())
    assert stats["faults"]["ambiguous"] >= 5
    posts = stats["requests"].get(POSTS, 0)
    finish(run, fault_report, want, f"dropped_answers={stats['faults']['ambiguous']} {posts=}")


def test_revoked_key_pauses_quietly_new_key_file_resumes(
    harness, hot: Path, tmp_path: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """401 after rotation: uploads pause (few probes), status says so; a new key file resumes."""
    old, new = "old-key-7f3c9a2e51", "new-key-b84d06f1c7"
    emulator.set_api_key(old)
    key_file = tmp_path / "api_key"
    key_file.write_text(old + "\n")
    key_file.chmod(0o600)
    # Everything the daemon logs, at debug level. No secret is registered with the log's
    # redactor: the key must not reach a log line at all, not merely be masked there.
    logs = io.StringIO()
    log.configure("debug", "json", stream=logs)
    run = harness(api_key_file=key_file)
    make_files(hot, 2, first_seed=600)
    converge(run, disk_pairs(hot))
    emulator.set_api_key(new)
    make_files(hot, 4, first_seed=610)
    assert run.daemon.store is not None
    wait_until(
        lambda: run.daemon.store.get_meta("auth_rejected_since"),  # type: ignore[union-attr]
        15,
        message="the daemon noticing the rejected key",
    )
    requests = emulator.stats()["requests"]
    time.sleep(2.0)  # the pause persists; the daemon must not spin meanwhile
    during = {k: v - requests.get(k, 0) for k, v in emulator.stats()["requests"].items()}
    assert status_json(run.config_path)["api_key"]["rejected"] is True
    queued = run.jobs("kind = 'upload' AND state = 'pending'")
    assert len(queued) == 4, f"every upload stays queued while paused: {queued}"
    key_file.write_text(new + "\n")  # in place, no restart
    converge(run, disk_pairs(hot), timeout=10)
    text = logs.getvalue()
    assert "api.key_rejected" in text or "AuthError" in text, "the pause must be logged"
    assert old not in text and new not in text, "the API key appeared in the log"
    assert during.get(POSTS, 0) == 0, during
    assert sum(during.values()) <= 2.0 / 0.3 + 2, f"spinning while paused: {during}"
    note = f"requests during 2s pause={sum(during.values())} posts={during.get(POSTS, 0)}"
    finish(run, fault_report, disk_pairs(hot), f"{note} (probe every 0.3s)")


def test_gateway_413_fails_visibly_and_retry_requeues(
    harness, gateway: Gateway, hot: Path, emulator: EmulatorServer, fault_report: FaultReport
) -> None:
    """413 from a proxy for a file syncd thought fine: failed with the reason; retry sends it."""
    make_files(hot, 3, first_seed=700)
    big = hot / "big.jpg"
    big.write_bytes(noise_jpeg(777))
    assert 64 * 1024 < big.stat().st_size < 10 * 1024 * 1024
    gateway.body_limit = 64 * 1024
    run = harness()
    wait_until(
        lambda: run.jobs("kind = 'upload' AND state = 'failed'") and run.idle(),
        20,
        message="the big file's upload failed",
    )
    (failed,) = status_json(run.config_path)["failures"]["items"]
    assert failed["path"] == "big.jpg", failed
    assert "HTTP 413 413 Request Entity Too Large" in failed["reason"], failed["reason"]
    assert len(emulator.assets()) == 3, "the daemon goes on with the other files"
    assert run.alive()
    gateway.body_limit = None  # the proxy's limit is raised
    result = syncd(run.config_path, "retry")
    assert result.returncode == 0, result.stderr
    assert "re-queued 1" in result.stdout
    converge(run, disk_pairs(hot))
    finish(run, fault_report, disk_pairs(hot), f"413 reason: {failed['reason'][:60]}")
