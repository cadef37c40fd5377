"""Reading the whole library while it changes, and removing syncd's own duplicates.

The API pages by offset and documents no order. When another client deletes an asset
that sits before the reader's offset, every later asset moves one place back and the
next page starts one asset too late: that asset is never seen. A rebuild that misses an
asset uploads its file again; a verification calls it missing.

So each page overlaps the one before by :data:`OVERLAP` assets. If the overlap comes
back exactly as it was, and the total did not change, nothing moved between the two
reads; otherwise the pass is *unsettled* and another pass follows. Passes stop at the
first settled one, or at the first that finds nothing new that the caller wants (under
constant churn every pass is unsettled, but what stayed for the whole read has been
seen by then), or after :data:`MAX_PASSES`. Ids are deduplicated across pages and passes.

What this cannot promise (no client can, without an order from the server) is caught
one level up: a file that a rebuild did not find asks the library by its identity tag
before it uploads (one filtered GET, a single page, that cannot shift).

Cost, for N assets and pages of 100: ceil((N - 10) / 90) requests per pass; one pass
when the library holds still (10k assets: 112 requests instead of 100), two or three
while another client writes to it (figures: ``benchmarks/bench_listing.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import structlog

from syncd.admin import Admin
from syncd.api import LIST_PATH, PAGE_SIZE, AssetsClient
from syncd.errors import NotFound, TransientError
from syncd.model import RemoteAsset

log = structlog.get_logger(__name__)

#: Assets each page shares with the one before: moves up to this size lose nothing.
OVERLAP = 10
MAX_PASSES = 4


@dataclass
class ReadFigures:
    """What one whole-library read cost and found."""

    requests: int = 0
    passes: int = 0
    found: int = 0
    settled: bool = False


def read_library(
    client: AssetsClient,
    *,
    wanted: Callable[[RemoteAsset], bool] = lambda _asset: True,
    figures: ReadFigures | None = None,
) -> Iterator[RemoteAsset]:
    """Every ``wanted`` asset of the library, each once, streamed as it is found."""
    figures = figures if figures is not None else ReadFigures()
    seen: set[str] = set()
    while figures.passes < MAX_PASSES:
        figures.passes += 1
        reader = _Pass(client, figures)
        new = 0
        for asset in reader.assets():
            if asset.asset_id in seen or not wanted(asset):
                continue
            seen.add(asset.asset_id)
            new += 1
            yield asset
        figures.found = len(seen)
        if reader.settled or (figures.passes > 1 and not new):
            figures.settled = reader.settled
            return
    log.warning("library.read_unsettled", passes=figures.passes, found=figures.found)


class _Pass:
    """One pass over every page, noting whether anything moved between two pages."""

    def __init__(self, client: AssetsClient, figures: ReadFigures) -> None:
        self.client = client
        self.figures = figures
        self.settled = True

    def assets(self) -> Iterator[RemoteAsset]:
        offset, total = 0, None
        expected: tuple[str, ...] = ()
        while True:
            page = self.client.list_page(limit=PAGE_SIZE, offset=offset)
            self.figures.requests += 1
            ids = tuple(asset.asset_id for asset in page.assets)
            if ids[: len(expected)] != expected or total not in (None, page.total):
                self.settled = False
            total = page.total
            yield from page.assets
            if not page.has_more:
                return
            if not page.assets:
                raise TransientError(f"GET {LIST_PATH}: has_more with an empty page at {offset}")
            step = len(ids) - OVERLAP if len(ids) > OVERLAP else len(ids)
            expected = ids[step:]
            offset += step


def remove_duplicates(
    admin: Admin, client: AssetsClient, copies: Iterable[tuple[str, str]], keep: str | None
) -> int:
    """Delete all but one of syncd's own copies of one (content, tags, name); how many went.

    ``copies`` are (created_at, asset_id) of assets that carry the same identity tag, the
    same folder tags and the same name, so they are syncd's own and interchangeable (a
    re-send uses the asset's recorded name; two names are two assets in a ``names =
    "follow"`` folder). The one the state database records is kept (``keep``, else any it
    records), else the oldest. A copy already gone counts.
    """
    ids = [asset_id for _created, asset_id in sorted(copies)]
    kept = keep if keep in ids else next((i for i in ids if admin.records(i)), ids[0])
    return remove_copies(admin, client, [(i, kept) for i in ids if i != kept])


def remove_copies(admin: Admin, client: AssetsClient, pairs: Iterable[tuple[str, str]]) -> int:
    """Delete each (copy, kept) pair's copy, log it and count it; a copy already gone counts.

    A copy the state database records, under whatever key, is an asset of its own and is
    never deleted as a duplicate.
    """
    removed = 0
    for asset_id, kept in pairs:
        if admin.records(asset_id):
            log.info("library.duplicate_kept", asset_id=asset_id, kept=kept,
                     reason="the state database records it")  # fmt: skip
            continue
        with contextlib.suppress(NotFound):
            client.delete(asset_id)
        removed += 1
        log.warning("library.duplicate_removed", asset_id=asset_id, kept=kept)
    if removed:
        admin.duplicates_removed(removed)
    return removed
