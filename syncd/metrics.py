"""The opt-in Prometheus endpoint (``[metrics] listen = "127.0.0.1:9464"``).

Two sources, one registry of our own (never the library's global one):

* what the state database says, read at scrape time by a collector: the queue by kind
  and state, held deletions, folder health, the last successful upload, the breaker;
* what happened, counted from the daemon's own events (see :func:`syncd.log.observe`):
  uploads, deletes and failures by reason, bytes sent, upload latency.

Counting from events keeps the workflows free of metrics calls; reading gauges at
scrape time costs nothing between scrapes. A failure to serve is logged, never fatal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from syncd import log as logs
from syncd.breaker import Breaker
from syncd.store import Store

log = structlog.get_logger(__name__)

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
QUEUE_STATES = ("pending", "hashing", "uploading", "waiting", "held", "deleting", "failed")
HEALTHS = ("ok", "unavailable", "guarded", "unknown")


def reason_class(reason: str) -> str:
    """A failure reason as a label: its first clause, short (no paths, no counts)."""
    head = reason.split(":", 1)[0].strip().lower()
    return head[:40] or "unknown"


class StateCollector(Collector):
    """Gauges read from the state database and the breaker at each scrape."""

    def __init__(self, store: Store, breaker: Breaker, folders: list[str]) -> None:
        self.store = store
        self.breaker = breaker
        self.folders = folders

    def collect(self) -> Iterator[GaugeMetricFamily]:
        yield self._queue()
        held = GaugeMetricFamily("syncd_held_deletions", "Deletions held for a person.")
        held.add_metric([], self._count("SELECT count(*) AS n FROM jobs WHERE state = 'held'"))
        yield held
        yield self._health()
        last = GaugeMetricFamily(
            "syncd_last_upload_timestamp_seconds", "When the last upload finished (Unix time)."
        )
        value = self.store.get_meta("last_upload")
        last.add_metric([], float(value) if value else 0.0)
        yield last
        yield self._breaker()

    def _count(self, sql: str) -> float:
        return float(self.store.query(sql)[0]["n"])

    def _queue(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "syncd_queue_jobs", "Unfinished jobs by kind and state.", labels=["kind", "state"]
        )
        rows = self.store.query(
            "SELECT kind, state, count(*) AS n FROM jobs WHERE state IN"
            " ('pending', 'hashing', 'uploading', 'waiting', 'held', 'deleting', 'failed')"
            " GROUP BY kind, state"
        )
        seen = {(r["kind"], r["state"]): r["n"] for r in rows}
        for kind in ("file", "upload", "delete"):
            for state in QUEUE_STATES:
                family.add_metric([kind, state], float(seen.get((kind, state), 0)))
        return family

    def _health(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "syncd_folder_health",
            "1 for each folder's current health.",
            labels=["folder", "health"],
        )
        for key in self.folders:
            row = self.store.folder_row(key) or {}
            now = row.get("health") or "unknown"
            for health in HEALTHS:
                family.add_metric([key, health], 1.0 if health == now else 0.0)
        return family

    def _breaker(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(
            "syncd_api_breaker_state", "0 closed, 1 open (API unreachable), 2 key rejected."
        )
        state = self.breaker.state
        value = (
            2.0 if state.auth_rejected_since is not None else float(state.open_since is not None)
        )
        family.add_metric([], value)
        return family


class EventCounters:
    """Counters fed by the daemon's events."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.uploads = Counter("syncd_uploads", "Assets uploaded.", registry=registry)
        self.deletes = Counter("syncd_deletes", "Assets deleted remotely.", registry=registry)
        self.failures = Counter(
            "syncd_failures", "Jobs that failed, by reason.", ["kind", "reason"], registry=registry
        )
        self.bytes_sent = Counter("syncd_upload_bytes", "Bytes uploaded.", registry=registry)
        self.latency = Histogram(
            "syncd_upload_duration_seconds",
            "Time an upload took, request to answer.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def __call__(self, event: str, fields: Mapping[str, Any]) -> None:
        if event == "upload.done":
            self.uploads.inc()
            self.bytes_sent.inc(float(fields.get("bytes") or 0))
            self.latency.observe(float(fields.get("duration") or 0.0))
        elif event == "delete.done":
            self.deletes.inc()
        elif event in ("file.failed", "upload.failed", "delete.failed"):
            reason = reason_class(str(fields.get("reason", "")))
            self.failures.labels(event.partition(".")[0], reason).inc()


class Metrics:
    """The endpoint: ``start()`` serves it on a thread of the library's; ``stop()`` ends it."""

    def __init__(self, listen: str, store: Store, breaker: Breaker, folders: list[str]) -> None:
        host, _, port = listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.registry = CollectorRegistry()
        self.registry.register(StateCollector(store, breaker, folders))
        self.counters = EventCounters(self.registry)
        self._stop: Callable[[], None] | None = None
        self._server: Any = None

    def start(self) -> None:
        self._stop = logs.observe(self.counters)
        try:
            self._server, _thread = start_http_server(
                self.port, addr=self.host, registry=self.registry
            )
        except OSError as exc:
            log.warning("metrics.unavailable", listen=f"{self.host}:{self.port}", error=str(exc))
            return
        self.port = self._server.server_address[1]
        log.info("metrics.listening", listen=f"{self.host}:{self.port}")

    def stop(self) -> None:
        if self._stop is not None:
            self._stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
