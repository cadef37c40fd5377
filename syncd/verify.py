"""Read the library back by the identity tag: index it for a new database, or verify it.

Every asset syncd uploads carries ``sha256:<32 hex>``; with it the library can be read
back and matched exactly against the store: what is missing remotely (deleted by hand in
the web app), what is there twice (should never happen), and which of our assets the store
does not know (a state database that was lost or replaced). ``repair`` re-queues uploads
for the missing ones; nothing is ever deleted by a verification.

The listing is only a first look: offset paging skips an asset when an earlier one is
deleted meanwhile, and an upload that lands after the listing is not in it. So an asset
is called missing only once asking for it by id says 404; re-uploading one that exists
would put it in the library twice.

A new state database (a first start, or one that replaced a lost or corrupt one) first
indexes the library (:func:`index_library`), so files whose (content, tags) is already
there are linked to those assets instead of being uploaded a second time.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice

from syncd.api import AssetsClient
from syncd.errors import NotFound
from syncd.ledger import Ledger
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
        }


def remote_key(asset: RemoteAsset) -> str | None:
    """The store key of an asset syncd uploaded, rebuilt from its tags (None if not ours)."""
    identity = [t for t in asset.tags if t.startswith(IDENTITY_PREFIX)]
    if len(identity) != 1:
        return None
    folder_tags = tuple(t for t in asset.tags if not t.startswith(IDENTITY_PREFIX))
    return asset_key(identity[0][len(IDENTITY_PREFIX) :], folder_tags)


def short_key(key: str) -> str:
    """A store key cut to the identity tag's length, to compare with the library's."""
    sha, tags = json.loads(key)[:2]
    return json.dumps([sha[:32], tags], separators=(",", ":"))


def verify(ledger: Ledger, client: AssetsClient, *, repair: bool = False) -> Verification:
    """Read the whole library once and the store's uploaded assets once; compare."""
    result = Verification()
    remote: dict[str, list[str]] = defaultdict(list)
    for asset in client.iter_assets():
        result.checked_remote += 1
        key = remote_key(asset)
        if key is not None:
            remote[key].append(asset.asset_id)
    local = {short_key(row["key"]): row for row in ledger.uploaded_assets()}
    result.checked_local = len(local)
    for key, row in local.items():
        if row["asset_id"] in remote.get(key, []) or not _gone(client, row["asset_id"]):
            continue
        result.missing.append(row["asset_id"])
        if repair and ledger.refcount(row["key"]):
            ledger.reupload(row["key"])
            result.requeued += 1
    for key, ids in remote.items():
        if len(ids) > 1:
            result.duplicates[key] = ids
        if key not in local:
            result.unknown.extend(ids)
    return result


def _gone(client: AssetsClient, asset_id: str) -> bool:
    """Whether the library really lacks an asset the listing did not show."""
    try:
        client.get(asset_id)
    except NotFound:
        return True
    return False


def _ours(client: AssetsClient) -> Iterator[tuple[str, tuple[str, ...], str]]:
    for asset in client.iter_assets():
        identity = [t for t in asset.tags if t.startswith(IDENTITY_PREFIX)]
        if len(identity) == 1:
            tags = tuple(t for t in asset.tags if not t.startswith(IDENTITY_PREFIX))
            yield identity[0], tags, asset.asset_id


def index_library(ledger: Ledger, client: AssetsClient, *, batch: int = 1000) -> int:
    """Record every asset of the library that carries an identity tag; streamed, batched."""
    found = _ours(client)
    total = 0
    while chunk := list(islice(found, batch)):
        total += ledger.remember_remote(chunk)
    ledger.store.set_meta("library_indexed", str(ledger.store.clock()))
    return total
