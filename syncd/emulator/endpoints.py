"""The endpoints: the Assets API under ``/v1``, files, and the inspection API.

Each takes the shared :class:`State` and one :class:`Request` and returns a
:class:`~.wire.Reply` or raises :class:`~.wire.ApiError`. Authentication and faults are
applied around them (``app``), so here is only what the service does when all goes well.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import PurePosixPath
from typing import Any

from .faults import OTHER_CLIENT_TAG, FaultInjector, Faults
from .forms import MAX_JSON_BYTES, Body, read_upload
from .images import UndecodableImage, decode, sniff_format, tiny_png
from .storage import Library
from .wire import ApiError, Reply, bad_request

STATUSES = ("processing", "ready", "failed")
LIST_FIELDS = (
    "asset_id", "name", "status", "url", "thumbnail_url", "width", "height", "tags",
    "created_at", "failure_reason",
)  # fmt: skip
UPLOAD_FIELDS = (*LIST_FIELDS, "file_size", "format")
GET_FIELDS = (*UPLOAD_FIELDS, "updated_at", "failure_reason")
MAX_LIMIT = 100


class State:
    """What every request shares: the library, the faults, the key, the counts."""

    def __init__(self, library: Library, faults: FaultInjector, api_key: str) -> None:
        self.library = library
        self.faults = faults
        self.stopping = threading.Event()
        self.address = ""  # host:port once listening
        self._lock = threading.Lock()
        self._api_key = api_key
        self._requests: Counter[str] = Counter()
        self._tag_lookups = 0

    def set_api_key(self, api_key: str) -> None:
        with self._lock:
            self._api_key = api_key

    def accepts(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            expected = self._api_key
        given = token.strip().encode("utf-8", "surrogateescape")
        return scheme.lower() == "bearer" and hmac.compare_digest(given, expected.encode())

    def count(self, route: str) -> None:
        with self._lock:
            self._requests[route] += 1

    def requests(self) -> dict[str, int]:
        with self._lock:
            return dict(self._requests)

    def count_tag_lookup(self) -> None:
        """A listing filtered by a tag: how a client asks whether an asset exists."""
        with self._lock:
            self._tag_lookups += 1

    def tag_lookups(self) -> int:
        with self._lock:
            return self._tag_lookups

    def reset_counts(self) -> None:
        with self._lock:
            self._requests.clear()
            self._tag_lookups = 0
        self.faults.reset_counts()


@dataclass
class Request:
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: Message
    body: Body
    origin: str  # scheme://host:port as the client reached us, for the URLs we hand out


Endpoint = Callable[[State, Request], Reply]


def upload(state: State, req: Request) -> Reply:
    form = read_upload(req.body, req.headers.get("Content-Type"))
    if (form.file is None) == (form.url is None):
        raise bad_request("send exactly one of a file or a url")
    if form.file is None:
        raise ApiError(400, "cannot_fetch", "the url cannot be fetched: upload the file itself")
    if not form.file:
        raise bad_request("the file is empty")
    fmt = sniff_format(form.file)
    if fmt is None:
        raise ApiError(415, "unsupported_format", "only JPEG, PNG and WebP images are accepted")
    try:
        image = decode(form.file, fmt)
    except UndecodableImage as exc:
        raise ApiError(422, "invalid_image", str(exc)) from exc
    name = form.name or PurePosixPath(form.filename or "untitled").stem
    tags = list(dict.fromkeys(form.tags))
    record = state.library.add(name, tags, fmt, form.file, image)
    return Reply(201, _shape(record, UPLOAD_FIELDS, req.origin))


def list_assets(state: State, req: Request) -> Reply:
    limit = _int_param(req.query, "limit", 20, low=1, high=MAX_LIMIT)
    offset = _int_param(req.query, "offset", 0, low=0, high=None)
    status = _one(req.query, "status")
    if status is not None and status not in STATUSES:
        raise bad_request(f"status must be one of {', '.join(STATUSES)}")
    tags = [tag for value in req.query.get("tags", []) for tag in value.split(",") if tag]
    if tags:
        state.count_tag_lookup()
    records, total = state.library.page(limit=limit, offset=offset, status=status, tags=tags)
    other_client_churn(state)
    return Reply(
        200,
        {
            "assets": [_shape(r, LIST_FIELDS, req.origin) for r in records],
            "total": total,
            "limit": limit,
            "offset": offset,
            "has_more": offset + len(records) < total,
        },
    )


def other_client_churn(state: State) -> None:
    """Between two list pages, another client adds assets and deletes some of its own.

    Its assets carry ``other-client`` and never an identity tag; what it deletes sits
    anywhere in the listing order, so an offset reader sees later pages shift.
    """
    adds, picks = state.faults.churn()
    if not (adds or picks):
        return
    library = state.library
    for _ in range(adds):
        data = tiny_png(state.faults.extra_seed())
        library.add("other", [OTHER_CLIENT_TAG], "png", data, decode(data, "png"))
    _, mine = library.page(limit=1, offset=0, status=None, tags=[OTHER_CLIENT_TAG])
    for pick in picks:
        if mine <= 0:
            return
        found, _ = library.page(
            limit=1, offset=int(pick * mine), status=None, tags=[OTHER_CLIENT_TAG]
        )
        if found and library.delete(found[0]["asset_id"]):
            mine -= 1


def get_asset(state: State, req: Request) -> Reply:
    record = state.library.get(req.params["id"])
    if record is None:
        raise _unknown(req.params["id"])
    return Reply(200, _shape(record, GET_FIELDS, req.origin))


def delete_asset(state: State, req: Request) -> Reply:
    if not state.library.delete(req.params["id"]):
        raise _unknown(req.params["id"])
    return Reply(204)


def get_file(state: State, req: Request) -> Reply:
    asset_id, _, ext = req.params["id"].partition(".")
    record = state.library.get(asset_id)
    if record is None or record["format"] != ext:
        raise _unknown(req.params["id"])
    path = state.library.file_path(asset_id, ext)
    return Reply(200, content=path.read_bytes(), content_type=f"image/{ext}")


def get_thumbnail(state: State, req: Request) -> Reply:
    asset_id = req.params["id"].removesuffix(".png")
    if state.library.get(asset_id) is None:
        raise _unknown(req.params["id"])
    path = state.library.thumbnail_path(asset_id)
    return Reply(200, content=path.read_bytes(), content_type="image/png")


def inspect_state(state: State, req: Request) -> Reply:
    assets = [{**r, **_urls(r, req.origin)} for r in state.library.all()]
    return Reply(
        200,
        {
            "assets": assets,
            "requests": state.requests(),
            "tag_lookups": state.tag_lookups(),
            "faults": state.faults.counts(),
            "fault_settings": state.faults.faults.to_json(),
            "processing_seconds": state.library.processing_seconds,
            "processing": state.library.processing.settings(),
        },
    )


def set_faults(state: State, req: Request) -> Reply:
    try:
        faults = Faults.from_json(_json_body(req.body))
    except (ValueError, TypeError) as exc:
        raise bad_request(str(exc)) from exc
    state.faults.configure(faults)
    return Reply(200, {"fault_settings": faults.to_json()})


def get_faults(state: State, req: Request) -> Reply:
    return Reply(200, {"fault_settings": state.faults.faults.to_json()})


def set_api_key(state: State, req: Request) -> Reply:
    key = _json_body(req.body).get("api_key")
    if not isinstance(key, str) or not key:
        raise bad_request('send {"api_key": "..."}')
    state.set_api_key(key)
    return Reply(204)


def reset(state: State, req: Request) -> Reply:
    state.library.reset()
    state.reset_counts()
    return Reply(204)


def _shape(record: dict[str, Any], fields: tuple[str, ...], origin: str) -> dict[str, Any]:
    full = {**record, **_urls(record, origin)}
    return {name: full[name] for name in fields}


def _urls(record: dict[str, Any], origin: str) -> dict[str, str]:
    asset_id = record["asset_id"]
    return {
        "url": f"{origin}/files/{asset_id}.{record['format']}",
        "thumbnail_url": f"{origin}/thumbnails/{asset_id}.png",
    }


def _unknown(asset_id: str) -> ApiError:
    return ApiError(404, "not_found", f"no asset {asset_id!r}")


def _one(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise bad_request(f"give {name} once")
    return values[0]


def _int_param(
    query: dict[str, list[str]], name: str, default: int, *, low: int, high: int | None
) -> int:
    """Out of range is a 400, not a clamp: a client that asks for too much has a bug."""
    raw = _one(query, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(f"{name} must be an integer") from None
    if value < low or (high is not None and value > high):
        allowed = f"between {low} and {high}" if high is not None else f"{low} or more"
        raise bad_request(f"{name} must be {allowed}")
    return value


def _json_body(body: Body) -> dict[str, Any]:
    raw = body.read_all(MAX_JSON_BYTES)
    try:
        data = json.loads(raw or b"{}")
    except ValueError as exc:
        raise bad_request("the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    return data
