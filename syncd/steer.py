"""What an operator points at, and what they may do to held deletions.

Folders are named as the config names them: by their path (absolute, or relative to the
config file exactly as written in it, or relative to the current directory) or by their
last path component when that is unique. Held deletions are selected by folder, by a
glob on the file's path in its folder, and by tag; ``approve`` lets the selection go,
``reject`` cancels it: the remote asset stays in the library and the local file, already
gone, is forgotten. Selections that match nothing are reported by the caller as errors.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.config import Config, FolderConfig
from syncd.model import JobState
from syncd.store import Store

REJECTED = "rejected by the operator: the asset stays in the library"


def resolve_folder(config: Config, text: str, *, cwd: Path | None = None) -> FolderConfig | None:
    """The configured folder ``text`` names, or None when none (or several) match."""
    base = config.source.parent if config.source else Path.cwd()
    here = cwd or Path.cwd()
    raw = Path(text).expanduser()
    candidates = {raw} if raw.is_absolute() else {base / raw, here / raw}
    wanted = {str(p.resolve()) for p in candidates}
    by_path = [f for f in config.folders if f.key in wanted]
    if by_path:
        return by_path[0]
    by_name = [f for f in config.folders if f.path.name == text.rstrip("/")]
    return by_name[0] if len(by_name) == 1 else None


def folder_names(config: Config) -> str:
    """The configured folders, for an error message that says what would have matched."""
    return ", ".join(f.key for f in config.folders) or "(none)"


@dataclass(frozen=True)
class Selection:
    """Which held deletions: all by default; each given filter narrows it."""

    folder: str | None = None
    path_glob: str | None = None
    tag: str | None = None

    @property
    def narrow(self) -> bool:
        """Filters beyond a folder: guarded roots are then not accepted (they have no path)."""
        return self.path_glob is not None or self.tag is not None

    def matches(self, item: dict[str, Any]) -> bool:
        if self.folder is not None and item["folder"] != self.folder:
            return False
        path = item["path"] or ""
        if self.path_glob is not None and not (
            fnmatch.fnmatchcase(path, self.path_glob)
            or fnmatch.fnmatchcase(f"{item['folder']}/{path}", self.path_glob)
        ):
            return False
        return self.tag is None or self.tag in item["tags"]


def held(store: Store, selection: Selection = Selection()) -> Iterator[dict[str, Any]]:
    """Every held deletion in the selection, oldest first, streamed (there may be many)."""
    rows = store.stream(
        "SELECT j.id, j.folder, j.relpath, j.reason, j.updated_at, a.asset_id, a.name, a.tags"
        " FROM jobs j LEFT JOIN assets a ON a.key = j.asset_key"
        " WHERE j.kind = 'delete' AND j.state = 'held' ORDER BY j.id"
    )
    for row in rows:
        item = {
            "id": row["id"],
            "folder": row["folder"],
            "path": row["relpath"],
            "name": row["name"],
            "tags": _tags(row["tags"]),
            "asset_id": row["asset_id"],
            "reason": row["reason"],
            "since": row["updated_at"],
        }
        if selection.matches(item):
            yield item


def release(store: Store, ids: Sequence[int], *, reject: bool) -> int:
    """Approve (back to waiting, due now) or reject (cancelled) these held deletions."""
    to = JobState.CANCELLED if reject else JobState.WAITING
    done = 0
    now = store.clock()
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        marks = ",".join("?" * len(chunk))
        with store.write() as conn:
            jobs = store.jobs_where(conn, f"state = 'held' AND id IN ({marks})", chunk)
            for job in jobs:
                if reject:
                    store.move(conn, job, to, reason=REJECTED)
                else:
                    store.move(conn, job, to, not_before=now, reason="approved")
            done += len(jobs)
    return done


def _tags(text: str | None) -> list[str]:
    try:
        tags = json.loads(text or "[]")
    except ValueError:
        return []
    return [str(t) for t in tags] if isinstance(tags, list) else []
