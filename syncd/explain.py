"""``syncd explain PATH`` and ``syncd ls``: what syncd did with a file, and will do, in words.

Read-only: the state database is opened without a lock (a running daemon is not
disturbed) and the file is only stat'ed, never read. Every answer is a plain dict (the
``--json`` output) plus a list of sentences for people; the sentences are derived from
the dict here, in one place.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd import beacon
from syncd.config import Config, FolderConfig
from syncd.departures import SAID, last_departure
from syncd.store import Store
from syncd.tags import Rules, asset_name, folder_tags

#: How much of a path's job history is shown (newest first).
HISTORY = 20
LIVE = ("pending", "hashing", "uploading", "waiting", "held", "deleting", "failed")


def locate(config: Config, text: str) -> tuple[Path, FolderConfig | None, str | None]:
    """The absolute path, the configured folder holding it, and its relpath there."""
    # abspath, not resolve: a symlink in a hot folder is tracked under its own path.
    path = Path(os.path.abspath(Path(text).expanduser()))  # noqa: PTH100
    for folder in config.folders:
        root = folder.path
        if path == root or root in path.parents:
            return path, folder, path.relative_to(root).as_posix()
    return path, None, None


def explain(config: Config, store: Store, text: str, *, now: float) -> dict[str, Any]:
    """Everything syncd knows and decides about one path, as plain values."""
    path, folder, relpath = locate(config, text)
    out: dict[str, Any] = {"path": str(path), "folder": folder.key if folder else None}
    out["relpath"] = relpath
    out["exists"] = os.path.lexists(path)
    if folder is None or not relpath:
        out["verdict"] = "outside every hot folder" if folder is None else "a hot folder's root"
        return out
    rules = Rules(folder.include, folder.exclude)
    out["ignored"] = rules.why_ignored(relpath)
    out["link_outside"] = _link_outside(path, folder.path)
    out["tags"] = list(folder_tags(relpath, folder.tags))
    out["name"] = asset_name(relpath)
    row = _one(store, "SELECT * FROM files WHERE folder = ? AND relpath = ?", folder.key, relpath)
    out["tracked"] = row is not None
    out["sha256"] = row["sha256"] if row else None
    out["problem"] = row["problem"] if row else None
    departure = last_departure(store, folder.key, relpath)
    out["departure"] = _departure(departure)
    key = row["asset_key"] if row else None
    key = key or (departure["asset_key"] if departure else _last_asset(store, folder.key, relpath))
    asset = _one(store, "SELECT * FROM assets WHERE key = ?", key) if key else None
    out["asset"] = _asset(asset)
    out["jobs"] = _history(store, folder.key, relpath, key)
    out["folder_health"] = _health(store, folder.key)
    outage = beacon.read(store, beacon.OUTAGE)
    out["api_unreachable_since"] = iso(outage.get("since")) if outage else None
    out["waiting_for"] = _waiting(out, now)
    out["verdict"] = _verdict(out)
    return out


def _one(store: Store, sql: str, *params: Any) -> dict[str, Any] | None:
    rows = store.query(sql, params)
    return dict(rows[0]) if rows else None


def _last_asset(store: Store, folder: str, relpath: str) -> str | None:
    """The asset a file that is no longer tracked stood for, from its jobs."""
    row = _one(
        store,
        "SELECT asset_key FROM jobs WHERE folder = ? AND relpath = ? AND asset_key IS NOT NULL"
        " ORDER BY id DESC LIMIT 1",
        folder,
        relpath,
    )
    return row["asset_key"] if row else None


def _departure(row: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where the file went after its upload (``after_upload``), and when."""
    if row is None:
        return None
    return {
        "action": row["action"],
        "state": row["state"],
        "to": row["dest"] if row["action"] == "archive" else None,
        "began": iso(row["created_at"]),
        "at": iso(row["done_at"]),
        "reason": row["reason"],
    }


def _left(out: dict[str, Any]) -> str | None:
    """The verdict for a file that left the hot folder after its upload; None otherwise."""
    left = out["departure"]
    if left is None or out["tracked"]:
        return None
    asset = (out["asset"] or {}).get("asset_id")
    stays = f"; its asset {asset} stays in the library" if asset else ""
    said = SAID.get((left["action"], left["state"]))
    if said is None:  # cancelled: changed, or gone, before it could leave
        return None if out["exists"] else f"gone before it could leave: {left['reason']}{stays}"
    to = f" to {left['to']}" if left["to"] else ""
    if left["state"] == "moving":
        why = f" (last try: {left['reason']})" if left["reason"] else ""
        return f"{said}{to} since {left['began']}{why}{stays}"
    return f"{said}{to} at {left['at']} (after_upload = {left['action']}){stays}"


def _link_outside(path: Path, root: Path) -> bool:
    if not path.is_symlink():
        return False
    target = Path(os.path.realpath(path))
    return not (target == root or Path(os.path.realpath(root)) in target.parents)


def _asset(asset: dict[str, Any] | None) -> dict[str, Any] | None:
    if asset is None:
        return None
    return {
        "asset_id": asset["asset_id"],
        "name": asset["name"],
        "tags": json.loads(asset["tags"]),
        "remote_status": asset["remote_status"],
        "uploaded_at": iso(asset["uploaded_at"]),
    }


def _history(store: Store, folder: str, relpath: str, key: str | None) -> list[dict[str, Any]]:
    rows = store.query(
        "SELECT * FROM jobs WHERE folder = ? AND relpath = ?"
        " OR (? IS NOT NULL AND asset_key = ? AND kind != 'file')"
        " ORDER BY id DESC LIMIT ?",
        (folder, relpath, key, key, HISTORY),
    )
    return [
        {
            "kind": r["kind"],
            "state": r["state"],
            "attempt": r["attempt"],
            "reason": r["reason"],
            "created": iso(r["created_at"]),
            "updated": iso(r["updated_at"]),
            "not_before": iso(r["not_before"]) if r["not_before"] else None,
        }
        for r in rows
    ]


def _health(store: Store, key: str) -> dict[str, Any]:
    row = store.folder_row(key) or {}
    return {"health": row.get("health") or "unknown", "reason": row.get("reason")}


def _waiting(out: dict[str, Any], now: float) -> str | None:
    """What the path's unfinished job waits for, in words; None when nothing waits."""
    live = [j for j in out["jobs"] if j["state"] in LIVE]
    if not live:
        return None
    job = live[0]
    due = job["not_before"]
    at = f" (next try at {_clock(due)})" if due and _epoch(due) > now else ""
    reason = job["reason"] or ""
    outage = out["api_unreachable_since"]
    rules = (
        (
            job["state"] == "held",
            f"a person: the {job['kind']} is held ({reason.removeprefix('held: ')})",
        ),
        (
            job["state"] == "failed",
            f"a fix: the {job['kind']} failed: {reason}; change the file or `syncd retry`",
        ),
        (reason.startswith("settling"), f"the file to settle (still for settle_seconds){at}"),
        (reason.startswith("held:"), f"the folder's root guard: {reason[6:]}{at}"),
        (bool(outage), f"the API, unreachable since {_clock(outage or '')}{at}"),
        (bool(reason), f"a retry after: {reason}{at}"),
    )
    return next((text for hit, text in rules if hit), f"its turn ({job['kind']} {job['state']})")


def _verdict(out: dict[str, Any]) -> str:
    asset = out["asset"] or {}
    gone = not out["exists"] and asset.get("asset_id")
    left = _left(out)
    rules = (
        (out["ignored"], f"ignored: {out['ignored']}"),
        (
            out["link_outside"],
            "not uploaded: a symlink to a file outside the hot folder is never followed",
        ),
        (out["problem"], f"cannot be uploaded: {out['problem']}"),
        (left, left or ""),
        (
            gone and out["waiting_for"],
            f"gone from the folder; its asset {asset.get('asset_id')} is still in the library,"
            f" waiting for {out['waiting_for']}",
        ),
        (
            gone,
            f"gone from the folder; its asset {asset.get('asset_id')} is no longer used here",
        ),
        (
            asset.get("asset_id"),
            f"uploaded as {asset.get('asset_id')} ({asset.get('name')},"
            f" tags {', '.join(asset.get('tags', []))})",
        ),
        (out["waiting_for"], f"not uploaded yet: waiting for {out['waiting_for']}"),
        (not out["exists"], "not there, and not tracked"),
    )
    return next(
        (text for hit, text in rules if hit),
        "not tracked yet: the next scan or event picks it up",
    )


def render(out: dict[str, Any]) -> Iterator[str]:
    """The dict for people, one fact per line."""
    yield f"{out['path']}"
    yield f"  verdict:  {out['verdict']}"
    if out["folder"] is None or not out.get("relpath"):
        return
    yield f"  folder:   {out['folder']} ({out['folder_health']['health']})"
    yes = {True: "yes", False: "no"}
    yield f"  exists:   {yes[out['exists']]}; tracked: {yes[out['tracked']]}"
    if out["ignored"] is None:
        yield f"  name:     {out['name']}; tags: {', '.join(out['tags']) or '(none)'}"
    if out["sha256"]:
        yield f"  sha256:   {out['sha256']}"
    if asset := out["asset"]:
        yield (
            f"  asset:    {asset['asset_id'] or '(not uploaded)'}"
            f" remote status {asset['remote_status'] or '?'},"
            f" uploaded {asset['uploaded_at'] or '-'}"
        )
    if left := out["departure"]:
        yield (
            f"  left:     {left['action']} {left['state']}"
            f"{' to ' + left['to'] if left['to'] else ''}, {left['at'] or left['began']}"
            f"{': ' + left['reason'] if left['reason'] else ''}"
        )
    if out["waiting_for"]:
        yield f"  waiting:  {out['waiting_for']}"
    for job in out["jobs"]:
        yield (
            f"  history:  {job['updated']} {job['kind']} {job['state']}"
            f" (attempt {job['attempt']}){': ' + job['reason'] if job['reason'] else ''}"
        )


# --- ls --------------------------------------------------------------------------------


def listing(
    store: Store, folder: str | None, *, tag: str | None, state: str | None
) -> Iterator[dict[str, Any]]:
    """Tracked files with their assets, streamed in folder and path order."""
    rows = store.stream(
        "SELECT f.folder, f.relpath, f.size, f.problem, a.asset_id, a.name, a.tags"
        " FROM files f LEFT JOIN assets a ON a.key = f.asset_key"
        " WHERE (? IS NULL OR f.folder = ?) ORDER BY f.folder, f.relpath",
        (folder, folder),
    )
    for row in rows:
        tags = json.loads(row["tags"]) if row["tags"] else []
        item = {
            "folder": row["folder"],
            "path": row["relpath"],
            "size": row["size"],
            "state": _file_state(row),
            "asset_id": row["asset_id"],
            "name": row["name"],
            "tags": tags,
            "problem": row["problem"],
        }
        if (tag is None or tag in tags) and (state is None or item["state"] == state):
            yield item


FILE_STATES = ("uploaded", "queued", "failed")


def _file_state(row: dict[str, Any]) -> str:
    if row["problem"]:
        return "failed"
    return "uploaded" if row["asset_id"] else "queued"


def ignored(folder: FolderConfig) -> Iterator[dict[str, Any]]:
    """Files and folders a folder's rules leave alone, with the rule (ignored folders once)."""
    rules = Rules(folder.include, folder.exclude)
    for top, dirs, files in os.walk(folder.path):
        rel_top = Path(top).relative_to(folder.path).as_posix()
        prefix = "" if rel_top == "." else rel_top + "/"
        for name in sorted(dirs):
            if rules.ignores_dir(prefix + name, parents_checked=True):
                rule = rules.why_ignored(prefix + name + "/x") or "ignored folder"
                yield {"folder": folder.key, "path": prefix + name + "/", "rule": rule}
        dirs[:] = sorted(d for d in dirs if not rules.ignores_dir(prefix + d, parents_checked=True))
        for name in sorted(files):
            if why := rules.why_ignored(prefix + name):
                yield {"folder": folder.key, "path": prefix + name, "rule": why}


# --- times -----------------------------------------------------------------------------


def iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _epoch(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def _clock(iso: str) -> str:
    """HH:MM:SS local time; "?" for an unknown time (rules are built before one is picked)."""
    if not iso:
        return "?"
    return datetime.fromtimestamp(_epoch(iso)).strftime("%H:%M:%S")
