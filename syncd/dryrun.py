"""``syncd plan`` / ``syncd sync --dry-run``: what a sync would upload, link and delete.

Nothing is sent and nothing is written: the state database is opened read-only, each
folder is walked and compared with it as a scan would (``plan.diff``), new and
changed files are hashed (read, never written) to learn which asset they are, and each
difference is classified the way the ledger would: an upload when no asset of that
(content, tags) is known, a link when one is, a delete when the last file of an uploaded
asset is gone from a mirroring folder (held when more than ``max_deletes`` would go, or
when the root is guarded). Work already queued is listed as it stands.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from syncd import hashing, plan, scanner
from syncd.config import Config, FolderConfig
from syncd.errors import FileChanged, FileProblem
from syncd.model import asset_key, identity_tag
from syncd.safepath import Root
from syncd.scanner import RootState
from syncd.store import Store
from syncd.tags import Rules, asset_name, folder_tags


@dataclass
class Plan:
    """What would happen, one list per action; each item names the file."""

    upload: list[dict[str, Any]] = field(default_factory=list)
    link: list[dict[str, Any]] = field(default_factory=list)
    delete: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    queued: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "upload": self.upload,
            "link": self.link,
            "delete": self.delete,
            "held": self.held,
            "failed": self.failed,
            "skipped_folders": self.skipped,
            "already_queued": self.queued,
        }

    def lines(self) -> Iterator[str]:
        for action, items in (("upload", self.upload), ("link", self.link),
                              ("delete", self.delete), ("hold", self.held),
                              ("fail", self.failed)):  # fmt: skip
            for item in items:
                extra = f" ({item['why']})" if item.get("why") else ""
                tags = f" tags {', '.join(item['tags'])}" if item.get("tags") else ""
                yield f"would {action:<6} {item['folder']}/{item['path']}{tags}{extra}"
        for item in self.skipped:
            yield f"skipped {item['folder']}: {item['why']}"
        queued = ", ".join(f"{n} {k}" for k, n in sorted(self.queued.items())) or "nothing"
        yield (
            f"plan: {len(self.upload)} upload(s), {len(self.link)} link(s), "
            f"{len(self.delete)} delete(s), {len(self.held)} held, {len(self.failed)} failing; "
            f"already queued: {queued}. Nothing was sent or written."
        )


def make_plan(config: Config, store: Store) -> Plan:
    """The plan for every configured folder, from a read-only store."""
    result = Plan()
    new_keys: set[str] = set()
    for folder in config.folders:
        _folder(store, folder, result, new_keys)
    for row in store.query(
        "SELECT kind, state, count(*) AS n FROM jobs WHERE state IN"
        " ('pending', 'hashing', 'uploading', 'waiting', 'deleting') GROUP BY kind, state"
    ):
        result.queued[f"{row['kind']} {row['state']}"] = row["n"]
    return result


def _folder(store: Store, folder: FolderConfig, result: Plan, new_keys: set[str]) -> None:
    row = store.folder_row(folder.key) or {}
    health = scanner.root_health(
        folder.path, expected_dev=row.get("dev"), expected_ino=row.get("ino")
    )
    replaced = health.state is RootState.REPLACED and not row.get("approved")
    if health.absent or replaced:
        result.skipped.append({"folder": folder.key, "why": health.reason or "unavailable"})
        return
    rules = Rules(folder.include, folder.exclude)
    guarded = row.get("health") == "guarded" and not row.get("approved")
    gone: list[plan.Difference] = []
    with Root(folder.path) as root, store.tracked(folder.key) as tracked:
        walk = scanner.walk(root, rules, max_depth=folder.max_depth)
        for diff in plan.diff(walk.segments(), tracked):
            if diff.change is plan.Change.GONE:
                gone.append(diff)
            else:
                _arrival(store, folder, root, diff.relpath, result=result, new_keys=new_keys)
    _departures(store, folder, gone, result, guarded=guarded or _emptied(folder, rules, gone))


def _emptied(folder: FolderConfig, rules: Rules, gone: list[plan.Difference]) -> bool:
    return len(gone) >= 2 and scanner.is_empty(folder.path, rules)


def _arrival(
    store: Store,
    folder: FolderConfig,
    root: Root,
    relpath: str,
    *,
    result: Plan,
    new_keys: set[str],
) -> None:
    tags = folder_tags(relpath, folder.tags)
    item: dict[str, Any] = {"folder": folder.key, "path": relpath, "tags": list(tags),
                            "name": asset_name(relpath)}  # fmt: skip
    try:
        sha, _ = hashing.sha256_file(root, relpath)
    except FileChanged:
        result.failed.append(item | {"why": "changing while read (still being written?)"})
        return
    except (OSError, FileProblem) as exc:
        why = exc.reason if isinstance(exc, FileProblem) else f"unreadable: {exc}"
        result.failed.append(item | {"why": why})
        return
    key = asset_key(sha, tags)
    known = store.query("SELECT asset_id FROM assets WHERE key = ?", (key,))
    indexed = store.query(
        "SELECT asset_id FROM remote_index WHERE identity = ? AND tagset = ?",
        (identity_tag(sha), json.dumps(sorted(set(tags)))),
    )
    if (known and known[0]["asset_id"]) or indexed:
        result.link.append(item | {"why": "same content and tags already in the library"})
    elif key in new_keys or known:
        result.link.append(item | {"why": "same content and tags as another file being uploaded"})
    else:
        new_keys.add(key)
        result.upload.append(item)


def _departures(
    store: Store, folder: FolderConfig, gone: list[plan.Difference], result: Plan, *, guarded: bool
) -> None:
    """Gone files whose asset no other file uses: deletions (or held ones)."""
    losing: Counter[str] = Counter(
        d.tracked.asset_key for d in gone if d.tracked and d.tracked.asset_key
    )
    deletes = []
    for d in gone:
        key = d.tracked.asset_key if d.tracked else None
        if key is None:
            continue
        rows = store.query(
            "SELECT a.asset_id, a.name, a.tags, (SELECT count(*) FROM files f"
            " WHERE f.asset_key = a.key) AS users FROM assets a WHERE a.key = ?",
            (key,),
        )
        if rows and rows[0]["asset_id"] and rows[0]["users"] <= losing[key]:
            losing[key] = 0  # one delete per asset
            deletes.append({"folder": folder.key, "path": d.relpath,
                            "tags": json.loads(rows[0]["tags"]),
                            "asset_id": rows[0]["asset_id"]})  # fmt: skip
    if not folder.mirror_deletes:
        return
    if guarded:
        result.held += [d | {"why": "the folder's root guard holds deletions"} for d in deletes]
    elif plan.hold_deletes(0, len(deletes), folder.max_deletes):
        why = f"more than max_deletes={folder.max_deletes} at once"
        result.held += [d | {"why": why} for d in deletes]
    else:
        result.delete += deletes
