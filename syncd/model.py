"""The words syncd speaks: job kinds and states, the state machine, and plain records.

The job state machine lives here and only here; ``store.transition`` refuses any move
that is not in :data:`TRANSITIONS`.

Four kinds of job:

* ``file``: look at one path (folder, relpath): hash it if its size, mtime or inode
  changed, and link it to the asset of its (content, tags).
* ``upload``: put one asset (content, tags) into the library, exactly once.
* ``delete``: remove one asset from the library once no tracked file uses it.
* ``dedupe``: after an upload whose earlier POST timed out, look once more, later, for a
  late copy of it in the library and remove it.

::

    file    pending ─claim─▶ hashing ─▶ done        linked, adopted, unchanged or gone
                             hashing ─▶ failed      not an image, too large, unreadable
                             hashing ─▶ cancelled   the path became excluded
                             hashing ─▶ pending     settling, changed while read, root held
            failed ─▶ pending (retry)     failed ─▶ cancelled (a newer change)

    upload  pending ─claim, intent committed─▶ uploading ─▶ done       asset_id recorded
                                               uploading ─▶ failed     400/413/415/422
                                               uploading ─▶ cancelled  no file needs it
                                               uploading ─▶ pending    5xx, 429, auth,
                                                   outcome unknown (reconcile first)
            pending, failed ─▶ cancelled (no file needs it)     failed ─▶ pending (retry)

    delete  waiting ─grace over, claim─▶ deleting ─▶ done       204, or 404
                                         deleting ─▶ failed     refused by the API
                                         deleting ─▶ cancelled  in use again, folder gone,
                                                                mirroring switched off
                                         deleting ─▶ waiting    5xx, 429, auth, root guard
            waiting ─▶ held (max_deletes) ─approve─▶ waiting
            waiting, held, failed ─▶ cancelled (a file uses the asset again)
            failed ─▶ waiting (retry)

    dedupe  pending ─late-answer wait over, claim─▶ checking ─▶ done   copies removed
                                                    checking ─▶ pending  5xx, 429, auth

A job that is claimed gets ``attempt + 1``; an outcome is recorded only by the attempt
that is current, so a stale worker can never overwrite a newer decision. At start-up the
in-flight states fall back: hashing → pending, deleting → waiting, uploading → pending
(with its intent kept, so the next attempt reconciles with the library before any POST).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class JobKind(StrEnum):
    FILE = "file"
    UPLOAD = "upload"
    DELETE = "delete"
    DEDUPE = "dedupe"


class JobState(StrEnum):
    PENDING = "pending"
    HASHING = "hashing"
    UPLOADING = "uploading"
    WAITING = "waiting"
    HELD = "held"
    DELETING = "deleting"
    CHECKING = "checking"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


S = JobState

TRANSITIONS: dict[JobKind, frozenset[tuple[JobState, JobState]]] = {
    JobKind.FILE: frozenset(
        {
            (S.PENDING, S.HASHING),
            (S.HASHING, S.DONE),
            (S.HASHING, S.FAILED),
            (S.HASHING, S.PENDING),
            (S.HASHING, S.CANCELLED),
            (S.FAILED, S.PENDING),
            (S.FAILED, S.CANCELLED),
        }
    ),
    JobKind.UPLOAD: frozenset(
        {
            (S.PENDING, S.UPLOADING),
            (S.UPLOADING, S.DONE),
            (S.UPLOADING, S.FAILED),
            (S.UPLOADING, S.PENDING),
            (S.UPLOADING, S.CANCELLED),
            (S.PENDING, S.CANCELLED),
            (S.FAILED, S.PENDING),
            (S.FAILED, S.CANCELLED),
        }
    ),
    JobKind.DELETE: frozenset(
        {
            (S.WAITING, S.DELETING),
            (S.DELETING, S.DONE),
            (S.DELETING, S.WAITING),
            (S.DELETING, S.FAILED),
            (S.DELETING, S.CANCELLED),
            (S.WAITING, S.HELD),
            (S.HELD, S.WAITING),
            (S.WAITING, S.CANCELLED),
            (S.HELD, S.CANCELLED),
            (S.FAILED, S.WAITING),
            (S.FAILED, S.CANCELLED),
        }
    ),
    JobKind.DEDUPE: frozenset(
        {(S.PENDING, S.CHECKING), (S.CHECKING, S.DONE), (S.CHECKING, S.PENDING)}
    ),
}

INITIAL: dict[JobKind, JobState] = {
    JobKind.FILE: S.PENDING,
    JobKind.UPLOAD: S.PENDING,
    JobKind.DELETE: S.WAITING,
    JobKind.DEDUPE: S.PENDING,
}

#: States a worker may claim, per kind.
CLAIMABLE: dict[JobKind, JobState] = {
    JobKind.FILE: S.PENDING,
    JobKind.UPLOAD: S.PENDING,
    JobKind.DELETE: S.WAITING,
    JobKind.DEDUPE: S.PENDING,
}

#: The state a claim moves a job to, per kind.
IN_FLIGHT: dict[JobKind, JobState] = {
    JobKind.FILE: S.HASHING,
    JobKind.UPLOAD: S.UPLOADING,
    JobKind.DELETE: S.DELETING,
    JobKind.DEDUPE: S.CHECKING,
}

#: In-flight states and where they fall back to after a crash.
RECOVERY: dict[JobState, JobState] = {
    S.HASHING: S.PENDING,
    S.UPLOADING: S.PENDING,
    S.DELETING: S.WAITING,
    S.CHECKING: S.PENDING,
}

#: Marks (in a job's detail) an upload whose POST may still land later: it timed out, or
#: was cut off by a crash. Once uploaded, a ``dedupe`` job looks for that late copy.
LATE_POST = "late_post"

#: States that need no more work (``failed`` and ``held`` wait for a person or a change).
FINISHED: frozenset[JobState] = frozenset({S.DONE, S.CANCELLED})


def allowed(kind: JobKind, old: JobState, new: JobState) -> bool:
    """Whether the state machine lets a ``kind`` job move from ``old`` to ``new``."""
    return (old, new) in TRANSITIONS[kind]


def identity_tag(sha256: str) -> str:
    """The tag that names an asset's content in the library: ``sha256:<32 hex>``."""
    return f"sha256:{sha256[:32]}"


def asset_key(sha256: str, tags: Sequence[str], name: str | None = None) -> str:
    """The store's key for one asset: its content and its tag *set*.

    In a folder with ``names = "follow"`` the name is part of the asset too (a third
    element), so a file renamed to a new stem stands for a new asset. The key is a digest
    of those parts (:func:`compact_key`); the parts themselves are in the asset's row.
    """
    parts: list[object] = [sha256, sorted(set(tags))]
    if name is not None:
        parts.append(name)
    return compact_key(json.dumps(parts, separators=(",", ":")))


def compact_key(parts: str) -> str:
    """22 characters for the JSON text of an asset's parts: 128 bits of its SHA-256.

    Stored in every file, job and asset row and three indexes, so its size is most of the
    state's; 128 bits keep two different assets apart even against someone who crafts
    files to collide (a birthday search of 2^64 hashes). The state database's migration
    to compact keys applies this to the keys it finds (which were that JSON text): it
    must never change.
    """
    digest = hashlib.sha256(parts.encode()).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class FileStat:
    """What ``os.stat`` says of a file, the part that tells whether it changed."""

    size: int
    mtime_ns: int
    inode: int
    dev: int = 0

    def same_content_as(self, other: FileStat) -> bool:
        """Same size, mtime and inode: the bytes are taken to be the same (no re-read)."""
        return (self.size, self.mtime_ns, self.inode) == (other.size, other.mtime_ns, other.inode)


@dataclass(frozen=True, slots=True)
class TrackedFile:
    """A file the store knows, with the content it had when last hashed."""

    folder: str
    relpath: str
    stat: FileStat
    sha256: str | None
    asset_key: str | None
    problem: str | None = None


class EventKind(StrEnum):
    CREATED = "created"
    MODIFIED = "modified"
    DELETED = "deleted"
    MOVED = "moved"
    #: Events may have been lost (overflow, dead observer): the folder needs a scan.
    RESCAN = "rescan"
    #: The root itself went away (unmount, share outage): hold, delete nothing.
    ROOT_GONE = "root_gone"


@dataclass(frozen=True, slots=True)
class FsEvent:
    """A filesystem hint from the watcher; relpaths use ``/`` and are relative to the root."""

    folder: str
    kind: EventKind
    relpath: str = ""
    dest_relpath: str | None = None
    is_dir: bool = False


@dataclass(frozen=True, slots=True)
class RemoteAsset:
    """An asset as the Assets API describes it."""

    asset_id: str
    name: str
    status: str
    tags: tuple[str, ...]
    created_at: str
    url: str | None = None
    thumbnail_url: str | None = None
    width: int | None = None
    height: int | None = None
    file_size: int | None = None
    format: str | None = None
    updated_at: str | None = None
    #: Why processing failed, when the server says (``failure_reason`` or ``error``).
    failure_reason: str | None = None


@dataclass(frozen=True, slots=True)
class AssetPage:
    """One page of ``GET /v1/my-uploaded-assets``."""

    assets: tuple[RemoteAsset, ...]
    total: int
    limit: int
    offset: int
    has_more: bool


@dataclass(frozen=True, slots=True)
class Job:
    """A row of the job queue as the workflows see it."""

    id: int
    kind: JobKind
    state: JobState
    attempt: int
    folder: str
    relpath: str | None = None
    asset_key: str | None = None
    not_before: float = 0.0
    reason: str | None = None
    #: When a POST for this job may have been sent (an upload intent); None before any.
    intent_at: float | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    detail: dict[str, object] = field(default_factory=dict)


class Workflow(Protocol):
    """Runs one claimed job of its kind to an outcome recorded in the store."""

    def run(self, job: Job) -> None: ...
