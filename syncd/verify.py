"""Read the library back by the identity tag: index it for a new database, or verify it.

Every asset syncd uploads carries ``sha256:<32 hex>``; with it the library can be read
back and matched exactly against the store: what is missing remotely (deleted by hand in
the web app), what is there twice (a server that stored a POST long after syncd gave up
on it), and which of our assets the store does not know (a state database that was lost
or replaced). ``repair`` re-queues uploads for the missing ones and removes syncd's own
duplicates (never an asset without an identity tag).

The library is read by :func:`syncd.listing.read_library`, which overlaps pages and reads
again while the library moves. An upload that lands after the read is still not in it,
so an asset is called missing only once asking for it by id says 404; re-uploading one
that exists would put it in the library twice.

A new state database (a first start, or one that replaced a lost or corrupt one) first
indexes the library (:func:`index_library`), so files whose (content, tags) is already
there are linked to those assets instead of being uploaded a second time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from syncd.admin import Admin
from syncd.api import AssetsClient
from syncd.errors import NotFound
from syncd.ledger import Ledger
from syncd.listing import ReadFigures, read_library, remove_copies, remove_duplicates
from syncd.model import RemoteAsset, asset_key

IDENTITY_PREFIX = "sha256:"


@dataclass
class Verification:
    """What differs between the store and the library; empty lists mean they agree."""

    checked_remote: int = 0
    checked_local: int = 0
    missing: list[str] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)
    requeued: int = 0
    removed: int = 0

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.unknown)

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checked_remote": self.checked_remote,
            "checked_local": self.checked_local,
            "missing": self.missing,
            "duplicates": self.duplicates,
            "unknown": self.unknown,
            "requeued": self.requeued,
            "removed": self.removed,
        }


def remote_key(asset: RemoteAsset) -> str | None:
    """The store key of an asset syncd uploaded, rebuilt from its tags (None if not ours)."""
    identity = [t for t in asset.tags if t.startswith(IDENTITY_PREFIX)]
    if len(identity) != 1:
        return None
    folder_tags = tuple(t for t in asset.tags if not t.startswith(IDENTITY_PREFIX))
    return asset_key(identity[0][len(IDENTITY_PREFIX) :], folder_tags)


def short_key(row: Mapping[str, Any]) -> str:
    """An uploaded asset's key as :func:`remote_key` makes it from the library's tags:
    the hash cut to the identity tag's length, the tags, no name."""
    return asset_key(row["sha256"][:32], json.loads(row["tags"]))


def verify(
    ledger: Ledger, admin: Admin, client: AssetsClient, *, repair: bool = False
) -> Verification:
    """Read the whole library and the store's uploaded assets once each; compare.

    With ``repair``: missing assets are uploaded again, and of syncd's own duplicates (the
    same content, tags and name) the one the store records (else the oldest) is kept and
    the others deleted; an asset the store records is never deleted.
    """
    result = Verification()
    remote: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for asset in read_library(client):
        result.checked_remote += 1
        key = remote_key(asset)
        if key is not None:
            remote[key].append((asset.created_at, asset.asset_id, asset.name))
    local = {short_key(row): row for row in admin.uploaded_assets()}
    result.checked_local = len(local)
    for key, row in local.items():
        ids = [asset_id for _created, asset_id, _name in remote.get(key, [])]
        if row["asset_id"] in ids or not _gone(client, row["asset_id"]):
            continue
        result.missing.append(row["asset_id"])
        if repair and ids:
            # Another copy of ours is there: record it rather than upload a third.
            oldest = min(remote[key])[1]
            admin.relink(row["key"], oldest)
            local[key] = {**row, "asset_id": oldest}
        elif repair and admin.refcount(row["key"]):
            ledger.reupload(row["key"])
            result.requeued += 1
    for key, found in remote.items():
        keep = local[key]["asset_id"] if key in local else None
        for copies in _by_name(found):
            result.duplicates.setdefault(key, []).extend(i for _created, i in copies)
            if repair:
                result.removed += remove_duplicates(admin, client, copies, keep)
        if key not in local:
            result.unknown.extend(asset_id for _created, asset_id, _name in found)
    return result


def _by_name(found: list[tuple[str, str, str]]) -> Iterator[list[tuple[str, str]]]:
    """Groups of two or more (created_at, asset_id) of one name: syncd's own duplicates.

    Two names are two assets (a ``names = "follow"`` folder may hold both on purpose).
    """
    by_name: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for created, asset_id, name in sorted(found):
        by_name[name].append((created, asset_id))
    yield from (copies for copies in by_name.values() if len(copies) > 1)


def _gone(client: AssetsClient, asset_id: str) -> bool:
    """Whether the library really lacks an asset the listing did not show."""
    try:
        client.get(asset_id)
    except NotFound:
        return True
    return False


def _ours(assets: Iterable[RemoteAsset]) -> Iterator[tuple[str, tuple[str, ...], str, str]]:
    for asset in assets:
        identity = [t for t in asset.tags if t.startswith(IDENTITY_PREFIX)]
        tags = tuple(t for t in asset.tags if not t.startswith(IDENTITY_PREFIX))
        yield identity[0], tags, asset.asset_id, asset.created_at


def index_library(
    ledger: Ledger,
    admin: Admin,
    client: AssetsClient,
    *,
    batch: int = 1000,
    figures: ReadFigures | None = None,
) -> int:
    """Record every asset of the library that carries an identity tag; streamed, batched.

    Second copies of one (content, tags, name) are removed once the read is over
    (deleting during it would move the pages under the reader). When the library held
    any of ours, the rebuild's time is kept: a file older than it that found nothing in
    the index asks the library by its identity tag before uploading.
    """
    names: dict[str, str] = {}
    found = _ours(_named(read_library(client, wanted=_is_ours, figures=figures), names))
    total = 0
    pairs: list[tuple[str, str]] = []
    while chunk := list(islice(found, batch)):
        pairs.extend(ledger.remember_remote(chunk))
        _forget(names, pairs)
        total += len(chunk)
    copies = [pair for pair in pairs if _same_name(client, names, *pair)]
    removed = remove_copies(admin, client, copies)
    now = str(ledger.store.clock())
    if total:
        ledger.store.set_meta("library_rebuilt", now)
    ledger.store.set_meta("library_indexed", now)
    return total - removed


def _named(assets: Iterable[RemoteAsset], names: dict[str, str]) -> Iterator[RemoteAsset]:
    """Pass assets on, noting each one's name until its chunk is indexed."""
    for asset in assets:
        names[asset.asset_id] = asset.name
        yield asset


def _forget(names: dict[str, str], pairs: list[tuple[str, str]]) -> None:
    """Keep only the names of assets met as copies (bounded memory for a big library)."""
    wanted = {asset_id for pair in pairs for asset_id in pair}
    for asset_id in [i for i in names if i not in wanted]:
        del names[asset_id]


def _same_name(client: AssetsClient, names: dict[str, str], copy: str, kept: str) -> bool:
    """Whether a second copy bears the kept one's name (else it is an asset of its own)."""
    copy_name = _name_of(client, names, copy)
    return copy_name is not None and copy_name == _name_of(client, names, kept)


def _name_of(client: AssetsClient, names: dict[str, str], asset_id: str) -> str | None:
    """An indexed asset's name: noted while read, else asked for (None: gone meanwhile)."""
    if asset_id not in names:
        try:
            names[asset_id] = client.get(asset_id).name
        except NotFound:
            return None
    return names[asset_id]


def _is_ours(asset: RemoteAsset) -> bool:
    return remote_key(asset) is not None
