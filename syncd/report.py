"""What ``syncd status`` shows: gathered as a plain dict, then rendered for people.

The dict is also the ``--json`` output, so its keys are a contract (the README lists
them): add keys freely, never rename or drop one. It is gathered from a read-only view
of the state database, which works while a daemon holds the database's lock, and never
touches the API key.

Whether a daemon runs is read from its heartbeat (``meta.heartbeat`` = ``"<epoch> <pid>"``,
written every few seconds): it counts as running while the heartbeat is fresh and that
process is alive. A stale heartbeat with a live pid is a daemon that has hung.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from syncd import beacon
from syncd.admin import Admin
from syncd.config import Config, FolderConfig
from syncd.departures import Departures
from syncd.lifecycle import Lifecycle
from syncd.model import FINISHED, TRANSITIONS, Job, JobKind, JobState
from syncd.store import Store
from syncd.tags import for_people

#: How many held deletions and failures are listed by name (the counts are complete).
HELD_SHOWN = 5
FAILURES_SHOWN = 10
#: How many assets whose processing failed (or that were deleted remotely) are listed.
REMOTE_SHOWN = 100

Status = dict[str, Any]


@contextlib.contextmanager
def _readonly(path: Path) -> Iterator[Store]:
    store = Store.open_readonly(path)
    try:
        yield store
    finally:
        store.close()


def collect(config: Config, *, now: float, stale_after: float) -> Status:
    """Open the state database read-only (no lock) and gather the status."""
    with _readonly(config.state.path) as store:
        return gather(store, config.folders, now=now, stale_after=stale_after)


def gather(
    store: Store, folders: Sequence[FolderConfig], *, now: float, stale_after: float
) -> Status:
    """The status as plain JSON-able values; ``stale_after`` seconds make a heartbeat old."""
    admin = Admin(store)
    by_key = {f.key: f for f in folders}
    summary = admin.summary()
    counts = admin.counts()
    rejected = _epoch(store.get_meta("auth_rejected_since"))
    return {
        "state_path": str(store.path),
        "daemon": holder(store, now=now, stale_after=stale_after),
        "api": _api(beacon.read(store, beacon.OUTAGE), now),
        "jobs": {
            str(kind): {str(s): counts.get(str(kind), {}).get(str(s), 0) for s in live_states(kind)}
            for kind in JobKind
        },
        "tracked_files": summary["tracked_files"],
        "assets": summary["assets"],
        "problem_files": summary["problems"],
        "duplicates_removed": summary["duplicates_removed"],
        "held_deletions": {
            "count": counts.get(str(JobKind.DELETE), {}).get(str(JobState.HELD), 0),
            "items": [_held(admin, job) for job in admin.held(limit=HELD_SHOWN)],
        },
        "failures": {
            "count": sum(c.get(str(JobState.FAILED), 0) for c in counts.values()),
            "items": [_failure(admin, job) for job in admin.failures(limit=FAILURES_SHOWN)],
        },
        "last_upload": _iso(_epoch(store.get_meta("last_upload"))),
        "api_key": {"rejected": rejected is not None, "rejected_since": _iso(rejected)},
        "folders": [_folder(store, folder) for folder in folders],
        "remote": Lifecycle(store, by_key).summary(REMOTE_SHOWN),
        "after_upload": _after_upload(Departures(store, by_key), now),
    }


def _after_upload(departures: Departures, now: float) -> dict[str, int]:
    """Files that left their hot folder since local midnight, and those on their way."""
    midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    counts = departures.since(midnight.timestamp())
    return {
        "archived_today": counts["archived"],
        "removed_today": counts["removed"],
        "leaving": counts["moving"],
    }


def live_states(kind: JobKind) -> list[JobState]:
    """The states a job of ``kind`` can wait in, in the state machine's order."""
    seen = {state for pair in TRANSITIONS[kind] for state in pair}
    return [state for state in JobState if state in seen and state not in FINISHED]


# --- the parts ---------------------------------------------------------------------------


def holder(store: Store, *, now: float, stale_after: float) -> dict[str, Any]:
    """The process holding the database, if one runs: running, pid, role, progress."""
    return _daemon(store.get_meta("heartbeat"), now, stale_after) | _holder(
        beacon.read(store, beacon.HOLDER)
    )


def _daemon(heartbeat: str | None, now: float, stale_after: float) -> dict[str, Any]:
    beat, pid = _parse_heartbeat(heartbeat)
    age = None if beat is None else round(max(0.0, now - beat), 1)
    alive = pid is not None and pid_alive(pid)
    return {
        "running": bool(alive and age is not None and age <= stale_after),
        "pid": pid,
        "last_heartbeat": _iso(beat),
        "heartbeat_age_seconds": age,
        "process_alive": alive,
    }


def _holder(holder: dict[str, Any] | None) -> dict[str, Any]:
    """Which command holds the database (``run`` or ``sync``), since when, how far along."""
    holder = holder or {}
    return {
        "role": holder.get("role"),
        "started": _iso(holder.get("started")),
        "progress": holder.get("progress"),
    }


def _api(outage: dict[str, Any] | None, now: float) -> dict[str, Any]:
    """The breaker as the holding process last published it."""
    if outage is None:
        return {"reachable": True, "unreachable_since": None, "next_probe_in_seconds": None,
                "last_error": None}  # fmt: skip
    return {
        "reachable": False,
        "unreachable_since": _iso(outage.get("since")),
        "next_probe_in_seconds": round(max(0.0, float(outage.get("next_probe", now)) - now), 1),
        "last_error": outage.get("last_error"),
    }


def _parse_heartbeat(value: str | None) -> tuple[float | None, int | None]:
    """``"<epoch> <pid>"``; anything else reads as no heartbeat at all."""
    try:
        beat, pid = (value or "").split()
        return float(beat), int(pid)
    except ValueError:
        return None, None


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (one of another user's counts too)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _asset_name(admin: Admin, job: Job) -> tuple[str | None, list[str]]:
    asset = admin.asset(job.asset_key) if job.asset_key else None
    if asset is None:
        return None, []
    return asset["name"], list(_tags(asset["tags"]))


def _tags(text: str) -> Sequence[str]:
    try:
        tags = json.loads(text)
    except ValueError:
        return []
    return [str(t) for t in tags] if isinstance(tags, list) else []


def _held(admin: Admin, job: Job) -> dict[str, Any]:
    name, tags = _asset_name(admin, job)
    return {
        "folder": job.folder,
        "name": name,
        "tags": tags,
        "reason": job.reason,
        "since": _iso(job.updated_at),
    }


def _failure(admin: Admin, job: Job) -> dict[str, Any]:
    """A failed job by the path people know; an asset job borrows a file of its asset."""
    name, _ = _asset_name(admin, job)
    path = job.relpath
    if path is None and job.asset_key:
        files = admin.files_for_asset(job.asset_key, limit=1)
        path = files[0]["relpath"] if files else None
    return {
        "kind": str(job.kind),
        "folder": job.folder,
        "path": path,
        "name": name,
        "reason": job.reason,
        "at": _iso(job.updated_at),
    }


def _folder(store: Store, folder: FolderConfig) -> dict[str, Any]:
    row = store.folder_row(folder.key) or {}
    return {
        "path": folder.key,
        "health": row.get("health") or "unknown",
        "reason": row.get("reason"),
        "last_scan": _iso(row.get("last_scan")),
        "polling": folder.polling,
        "watch_mode": row.get("watch_mode"),
        "watch_reason": row.get("watch_reason"),
    }


def _mode_note(folder: dict[str, Any]) -> str:
    """How the folder is watched and why: the setting, the filesystem, or the watch limit."""
    mode, why = folder.get("watch_mode"), folder.get("watch_reason")
    if mode is None:
        return " (polling)" if folder["polling"] is True else ""
    if mode == "polling" and folder["polling"] is not True and not why:
        why = "the inotify watch limit was reached"
    return f" ({mode}: {why})" if why else f" ({mode})"


def _epoch(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- rendering for people ----------------------------------------------------------------

#: Columns of the queue table: which state of each kind falls in which column.
_COLUMNS: dict[str, dict[str, str]] = {
    "queued": {"file": "pending", "upload": "pending", "delete": "waiting", "dedupe": "pending"},
    "working": {
        "file": "hashing",
        "upload": "uploading",
        "delete": "deleting",
        "dedupe": "checking",
    },
    "held": {"delete": "held"},
    "failed": {"file": "failed", "upload": "failed", "delete": "failed"},
}


def render(status: Status, console: Console, *, now: float) -> None:
    """The human table: the headline facts first, then what needs a person."""
    console.print(f"[bold]syncd status[/] (state: {_safe(status['state_path'])})")
    facts = Table.grid(padding=(0, 2))
    facts.add_row("daemon", _daemon_text(status["daemon"], now))
    facts.add_row("API key", _key_text(status["api_key"], now))
    facts.add_row("API", _api_text(status["api"], status["daemon"]))
    facts.add_row("last upload", _when(status["last_upload"], now) or "never")
    facts.add_row(
        "library",
        f"{status['tracked_files']} tracked files, {status['assets']} assets"
        + (
            f", {status['problem_files']} file(s) cannot be uploaded"
            if status["problem_files"]
            else ""
        )
        + (
            f", {status['duplicates_removed']} duplicate(s) removed"
            if status["duplicates_removed"]
            else ""
        ),
    )
    console.print(facts)
    console.print(_queue_table(status["jobs"]))
    console.print(_folders_table(status["folders"], now))
    _render_remote(status["remote"], console)
    _render_after_upload(status["after_upload"], console)
    _render_held(status["held_deletions"], console)
    _render_failures(status["failures"], console)


def _api_text(api: dict[str, Any], daemon: dict[str, Any]) -> str:
    if api["reachable"] or not daemon["running"]:
        return "reachable (as far as the daemon last knew)"
    since = _clock(api["unreachable_since"])
    return escape(
        f"unreachable since {since}, next probe in {api['next_probe_in_seconds']:.0f} s, "
        f"last error: {api['last_error'] or '?'}"
    )


def _clock(iso: str | None) -> str:
    """HH:MM:SS in local time."""
    if iso is None:
        return "?"
    moment = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return moment.astimezone().strftime("%H:%M:%S")


def _daemon_text(daemon: dict[str, Any], now: float) -> str:
    seen = _when(daemon["last_heartbeat"], now)
    if daemon["running"]:
        who = f"`syncd {daemon['role']}`" if daemon.get("role") else "running"
        progress = daemon.get("progress")
        done = f", {progress['done']}/{progress['total']} jobs done" if progress else ""
        return f"[green]{who}[/] (pid {daemon['pid']}{done}, heartbeat {seen})"
    if daemon["process_alive"]:
        return (
            f"[red]not answering[/] (pid {daemon['pid']} is alive, last heartbeat {seen}):"
            " it may hang; restart it"
        )
    return "[yellow]not running[/]" + (f" (last seen {seen})" if seen else "")


def _key_text(key: dict[str, Any], now: float) -> str:
    if not key["rejected"]:
        return "accepted (as far as the daemon last knew)"
    return (
        f"[red]REJECTED[/] since {_when(key['rejected_since'], now)}: uploads and deletions"
        " are paused, every job is kept; put a valid key in place (see `syncd check`)"
    )


def _queue_table(jobs: dict[str, dict[str, int]]) -> Table:
    table = Table(title="queue", title_justify="left")
    table.add_column("kind")
    for column in _COLUMNS:
        table.add_column(column, justify="right")
    for kind, states in jobs.items():
        cells = [
            str(states.get(_COLUMNS[c][kind], 0)) if kind in _COLUMNS[c] else "-" for c in _COLUMNS
        ]
        table.add_row(kind, *cells)
    return table


def _folders_table(folders: list[dict[str, Any]], now: float) -> Table:
    table = Table(title="folders", title_justify="left")
    for column in ("path", "health", "last scan", "reason"):
        table.add_column(column)
    colour = {"ok": "green", "unavailable": "red", "guarded": "yellow"}
    for folder in folders:
        health = folder["health"]
        table.add_row(
            _safe(folder["path"]) + _mode_note(folder),
            f"[{colour.get(health, 'white')}]{_safe(health)}[/]",
            _when(folder["last_scan"], now) or "never",
            _safe(folder["reason"] or ""),
        )
    return table


def _render_remote(remote: dict[str, Any], console: Console) -> None:
    """The library's side: how many assets are usable, and which could not be processed."""
    line = (
        f"remote processing: {remote['ready']} ready, {remote['processing']} processing,"
        f" {remote['failed']} failed"
    )
    if remote["deleted"]:
        line += f", {remote['deleted']} deleted by someone else"
    console.print(line)
    for item in remote["failed_files"] + remote["deleted_files"]:
        where = item["path"] or item["asset_id"]
        console.print(escape(f"  {where}: {item['reason']}"))


def _render_after_upload(moved: dict[str, int], console: Console) -> None:
    if not any(moved.values()):
        return
    line = (
        f"after upload today: {moved['archived_today']} archived, {moved['removed_today']} removed"
    )
    if moved["leaving"]:
        line += f", {moved['leaving']} on their way out (a restart completes them)"
    console.print(line)


def _render_held(held: dict[str, Any], console: Console) -> None:
    if not held["count"]:
        return
    console.print(
        f"[yellow]{held['count']} deletion(s) held[/]: check the folder, then"
        " `syncd approve-deletes` lets them go"
    )
    for item in held["items"]:
        line = f"  {item['folder']}: {item['name'] or '?'} - {item['reason']}"
        console.print(_safe(line))
    _more(held, console)


def _render_failures(failures: dict[str, Any], console: Console) -> None:
    if not failures["count"]:
        return
    console.print(
        f"[red]{failures['count']} failed job(s)[/]: fix the file (a change re-queues"
        " it) or `syncd retry [PATH ...]`"
    )
    for item in failures["items"]:
        where = item["path"] or item["name"] or "?"
        console.print(_safe(f"  {item['kind']} {item['folder']}/{where}: {item['reason']}"))
    _more(failures, console)


def _more(section: dict[str, Any], console: Console) -> None:
    if section["count"] > len(section["items"]):
        console.print(f"  ... and {section['count'] - len(section['items'])} more")


def _when(iso: str | None, now: float) -> str | None:
    """Local time and how long ago, for a UTC ISO timestamp from the status dict."""
    if iso is None:
        return None
    moment = datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    ago = max(0, int(now - moment.timestamp()))
    local = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    return f"{local} ({_ago(ago)} ago)"


def _ago(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _safe(text: str) -> str:
    """Untrusted text (file names, server messages) for rich: controls escaped, no markup."""
    return escape(for_people(text))
