"""Events for people: ``[notify] command = [...]`` is run with a JSON message on stdin.

What a person must act on: deletions held, a file that failed, a folder root that
became unavailable, the API key rejected. The command is an argv run without a shell
(``["systemd-cat", "-t", "syncd"]``, a mail command, ``curl`` to a webhook), so nothing
in a file name can become a shell command. A burst is one message: events are gathered
for a few seconds, and messages are at least ``min_interval_seconds`` apart; what came
meanwhile goes out together in the next one. A failing or slow command is logged and
never holds the daemon up (it runs on a thread of its own, with a timeout).
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from syncd import log as logs

log = structlog.get_logger(__name__)

#: Seconds to gather a burst before the first message goes out.
GATHER_SECONDS = 2.0
#: Events listed in full in one message (the counts are complete).
LISTED = 50
COMMAND_TIMEOUT = 30.0

#: Event names of the daemon's log, and what they mean to a person.
KINDS = {
    "file.failed": "file_failed",
    "upload.failed": "file_failed",
    "delete.failed": "delete_failed",
    "deletions.held": "deletions_held",
    "folder.unavailable": "root_unavailable",
    "watcher.root_unavailable": "root_unavailable",
    "scan.skipped": "root_unavailable",
    "api.key_rejected": "key_rejected",
    "sync.key_rejected": "key_rejected",
}
FIELDS = ("folder", "path", "reason", "count", "since", "error")


class Alerts:
    """Gathers events and runs the command; ``start()`` it, ``stop()`` flushes what is left."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        min_interval: float,
        gather: float = GATHER_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = list(argv)
        self.min_interval = min_interval
        self.gather = gather
        self.clock = clock
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        self._stopping = False
        self._last_sent = float("-inf")
        self._thread = threading.Thread(target=self._loop, name="syncd-notify", daemon=True)
        self._unobserve: Callable[[], None] | None = None
        self.sent = 0

    def start(self) -> None:
        self._unobserve = logs.observe(self.observe)
        self._thread.start()

    def stop(self) -> None:
        if self._unobserve is not None:
            self._unobserve()
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread.is_alive():
            self._thread.join(COMMAND_TIMEOUT + 1)

    def observe(self, event: str, fields: Mapping[str, Any]) -> None:
        """A log event; the ones a person must act on are queued for the next message."""
        kind = KINDS.get(event)
        if kind is None:
            return
        item = {"kind": kind, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        item |= {k: fields[k] for k in FIELDS if fields.get(k) is not None}
        with self._lock:
            self._pending.append(item)
            self._lock.notify_all()

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._stopping:
                    self._lock.wait()
                if not self._pending:
                    return
                if not self._stopping:
                    # A burst is gathered, and messages keep their distance.
                    due = max(self.clock() + self.gather, self._last_sent + self.min_interval)
                    while not self._stopping and self.clock() < due:
                        self._lock.wait(max(0.01, due - self.clock()))
                batch, self._pending = self._pending, []
            self._send(batch)

    def _send(self, batch: list[dict[str, Any]]) -> None:
        self._last_sent = self.clock()
        message = message_for(batch)
        try:
            done = subprocess.run(  # noqa: S603 - an argv from the config, no shell
                self.argv,
                input=json.dumps(message).encode(),
                capture_output=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("notify.failed", command=self.argv[0], error=str(exc))
            return
        self.sent += 1
        if done.returncode != 0:
            err = done.stderr.decode(errors="replace")[-300:]
            log.warning("notify.failed", command=self.argv[0], status=done.returncode, error=err)


def message_for(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """One JSON message: a summary line, counts by kind, the first events in full."""
    counts = Counter(item["kind"] for item in batch)
    summary = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(counts.items()))
    return {
        "source": "syncd",
        "host": socket.gethostname(),
        "summary": f"syncd on {socket.gethostname()}: {summary}",
        "counts": dict(counts),
        "events": batch[:LISTED],
        "more": max(0, len(batch) - LISTED),
    }
