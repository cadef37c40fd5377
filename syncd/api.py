"""The Assets API client: the only place that speaks HTTP and the only importer of httpx.

Every answer, and every way of getting no answer, is translated here into the
:mod:`syncd.errors` tree, so the workflows decide on our classes and never see httpx.
The distinction that matters most is between a request that surely did nothing
(``TransientError``: safe to send again) and a POST that may have created an asset
(``OutcomeUnknown``: never re-sent here; the caller reconciles with the library first).

Retries follow one composed policy (:class:`syncd.retry.RetryPolicy`) whose clock and sleep
are injectable, so tests advance time instead of waiting. The API key is read from its provider
for every request, so a replaced key file takes effect without a restart; it is only ever
put into the ``Authorization`` header and is scrubbed from every message we build.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar, runtime_checkable
from urllib.parse import quote

import httpx
import structlog

from syncd import __version__
from syncd.config import insecure_host
from syncd.errors import (
    ApiError,
    AuthError,
    ConfigError,
    NotFound,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    SyncdError,
    TransientError,
)
from syncd.model import AssetPage, RemoteAsset
from syncd.retry import RetryPolicy, parse_retry_after

log = structlog.get_logger(__name__)

UPLOAD_PATH = "/v1/training-asset"
LIST_PATH = "/v1/my-uploaded-assets"
ASSET_PATH = "/v1/assets/"
PAGE_SIZE = 100
#: Connecting should be quick even when a 10 MB upload may take the whole ``timeout``.
CONNECT_TIMEOUT = 10.0
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
#: Transport failures that happen before any byte of the request reaches the server.
_NOT_SENT: tuple[type[httpx.HTTPError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ProxyError,
    httpx.UnsupportedProtocol,
    httpx.LocalProtocolError,
)
_MAX_DETAIL = 200
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")
_T = TypeVar("_T")


@runtime_checkable
class KeySource(Protocol):
    """Anything that hands out the current API key (``syncd.apikey.ApiKey`` does)."""

    def reveal(self) -> str: ...


KeyProvider = Callable[[], str] | KeySource


# --- translating answers --------------------------------------------------------------


_BY_STATUS: dict[int, type[ApiError]] = {
    401: AuthError,
    403: AuthError,
    404: NotFound,
    408: TransientError,
    429: RateLimited,
    503: TransientError,
}


def error_class(status: int, method: str) -> type[ApiError]:
    """The class of error a non-2xx status stands for.

    For a POST, a 5xx other than 503 may come from a gateway whose backend did finish the
    work (the spec's "502 from a proxy"), so it is an unknown outcome, not a retry. 503
    and 429 say the request was turned away, which is safe to send again.
    """
    known = _BY_STATUS.get(status)
    if known is not None:
        return known
    if status >= 500:
        return TransientError if method in _IDEMPOTENT else OutcomeUnknown
    # Other 4xx, and 1xx/3xx (we follow no redirects): sending it again will not help.
    return PermanentError


def error_for_status(
    status: int,
    method: str,
    *,
    message: str,
    code: str | None = None,
    retry_after: float | None = None,
) -> ApiError | None:
    """The error for an answer, or None for success."""
    if 200 <= status < 300:
        return None
    kind = error_class(status, method)
    if status < 400:
        message += " (unexpected answer: is api.base_url right?)"
    if kind is RateLimited or kind is TransientError:
        return kind(message, status=status, code=code, retry_after=retry_after)
    if kind is OutcomeUnknown:
        return OutcomeUnknown(message, status=status, code=code, late=status == 504)
    return kind(message, status=status, code=code)


def error_for_transport(error: httpx.HTTPError, method: str, message: str) -> ApiError:
    """The error for a request that got no usable answer.

    Once bytes may have reached the server, a POST may have taken effect; GET and DELETE
    may simply be sent again (a repeated DELETE meets 404, which counts as done).
    """
    if isinstance(error, _NOT_SENT) or method in _IDEMPOTENT:
        return TransientError(message)
    return OutcomeUnknown(message, late=isinstance(error, httpx.TimeoutException))


def _error_detail(response: httpx.Response) -> tuple[str | None, str]:
    """The server's (code, message), from a JSON error body when there is one."""
    try:
        body = response.json()
    except ValueError:
        return None, _page_text(response)
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return (str(code)[:_MAX_DETAIL] if code else None), str(message or "")[:_MAX_DETAIL]
    if isinstance(body, dict) and body.get("detail"):
        return None, str(body["detail"])[:_MAX_DETAIL]
    return None, (str(error)[:_MAX_DETAIL] if error else "")


def _page_text(response: httpx.Response) -> str:
    """A proxy's error page said in a line: its title, or its text without the markup."""
    text = response.text
    if "html" in response.headers.get("Content-Type", "").lower():
        title = _HTML_TITLE.search(text)
        text = title.group(1) if title else _HTML_TAG.sub(" ", text)
    return " ".join(text.split())[:_MAX_DETAIL]


# --- parsing records ------------------------------------------------------------------


def _opt_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_asset(raw: object) -> RemoteAsset:
    """One asset record; only ``asset_id`` is required, anything odd becomes None."""
    if not isinstance(raw, dict) or not isinstance(raw.get("asset_id"), str | int):
        raise TypeError("an asset record without an asset_id")
    tags = raw.get("tags")
    return RemoteAsset(
        asset_id=str(raw["asset_id"]),
        name=_opt_str(raw.get("name")) or "",
        status=_opt_str(raw.get("status")) or "",
        tags=tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else (),
        created_at=_opt_str(raw.get("created_at")) or "",
        url=_opt_str(raw.get("url")),
        thumbnail_url=_opt_str(raw.get("thumbnail_url")),
        width=_opt_int(raw.get("width")),
        height=_opt_int(raw.get("height")),
        file_size=_opt_int(raw.get("file_size")),
        format=_opt_str(raw.get("format")),
        updated_at=_opt_str(raw.get("updated_at")),
        failure_reason=_failure_reason(raw),
    )


def _failure_reason(raw: dict[str, Any]) -> str | None:
    """The server's word on a failed processing: a string, or an error object's message."""
    for name in ("failure_reason", "error_message", "error"):
        value = raw.get(name)
        if isinstance(value, dict):
            value = value.get("message") or value.get("code")
        if isinstance(value, str) and value.strip():
            return value.strip()[:_MAX_DETAIL]
    return None


def parse_page(raw: object, *, limit: int, offset: int) -> AssetPage:
    """One list page. A missing ``assets`` array is an error, never an empty page: a page
    read as empty by mistake would make reconciliation upload a duplicate."""
    if not isinstance(raw, dict) or not isinstance(raw.get("assets"), list):
        raise TypeError("a list answer without an assets array")
    assets = tuple(parse_asset(item) for item in raw["assets"])
    total = _opt_int(raw.get("total"))
    has_more = raw.get("has_more")
    if not isinstance(has_more, bool):
        has_more = offset + len(assets) < total if total is not None else len(assets) >= limit
    return AssetPage(
        assets=assets,
        total=total if total is not None else offset + len(assets),
        limit=_opt_int(raw.get("limit")) or limit,
        offset=_opt_int(raw.get("offset")) or offset,
        has_more=has_more,
    )


# --- the client -----------------------------------------------------------------------


def _key_function(api_key: KeyProvider) -> Callable[[], str]:
    if isinstance(api_key, KeySource):
        return api_key.reveal
    if callable(api_key):
        return api_key
    raise TypeError("api_key must be a zero-argument callable or have reveal()")


class _BearerAuth(httpx.Auth):
    """Reads the key for each request, so a replaced key file is picked up at once."""

    def __init__(self, key: Callable[[], str]) -> None:
        self._key = key

    def current(self) -> str:
        try:
            key = self._key().strip()
        except (SyncdError, OSError) as exc:
            raise AuthError(f"the API key cannot be read: {type(exc).__name__}") from None
        if not key or not key.isascii() or not key.isprintable() or " " in key:
            raise AuthError("the API key is empty or has characters a header cannot carry")
        return key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self.current()}"
        yield request


def _check_base_url(base_url: str) -> None:
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL:
        raise ConfigError("not a URL", key="api.base_url") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError("must be an http(s) URL with a host", key="api.base_url")
    if (host := insecure_host(base_url)) is not None:
        # Only with api.allow_insecure_http (the config refuses it otherwise): every start.
        log.warning("api.insecure_http", host=host, hint="the API key travels unencrypted")


class AssetsClient:
    """One pooled connection to the Assets API, safe to share between worker threads.

    ``api_key`` is a zero-argument callable returning the key, or an object with
    ``reveal()``; it is called for every request. ``clock`` is wall-clock epoch seconds,
    used to read Retry-After dates. TLS certificates are always verified.
    """

    def __init__(
        self,
        base_url: str,
        api_key: KeyProvider,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        _check_base_url(base_url)
        self._auth = _BearerAuth(_key_function(api_key))
        self._retry = retry or RetryPolicy()
        self._clock = clock
        self._base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            auth=self._auth,
            headers={"User-Agent": f"syncd/{__version__}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            follow_redirects=False,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"AssetsClient(base_url={self._base_url!r})"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- endpoints ---

    def upload(
        self, data: bytes, *, filename: str, content_type: str, name: str, tags: Sequence[str]
    ) -> RemoteAsset:
        """POST the bytes as one new asset. Never re-sent once it may have arrived."""
        form: dict[str, Any] = {"tags[]": list(tags)}
        if name:
            form["name"] = name
        files = {"file": (filename, data, content_type)}
        # httpx encodes the form; sent as one body it leaves in one write, not in a piece
        # per part (~23 socket writes and h11 events a POST, the most of a burst's CPU).
        form_request = httpx.Request("POST", UPLOAD_PATH, files=files, data=form)
        body = form_request.read()
        headers = {"Content-Type": form_request.headers["Content-Type"]}
        response = self._call("POST", UPLOAD_PATH, content=body, headers=headers)
        try:
            return parse_asset(response.json())
        except (ValueError, TypeError):
            # The server said yes but we cannot tell to what: the asset may well exist.
            raise OutcomeUnknown(
                f"POST {UPLOAD_PATH}: HTTP {response.status_code} with an unreadable answer",
                status=response.status_code,
            ) from None

    def list_page(
        self,
        *,
        limit: int = PAGE_SIZE,
        offset: int = 0,
        status: str | None = None,
        tag: str | None = None,
    ) -> AssetPage:
        """One page of the caller's assets, filtered server-side by at most one tag."""
        if not 1 <= limit <= PAGE_SIZE or offset < 0:
            raise ValueError(f"limit must be 1..{PAGE_SIZE} and offset >= 0")
        if tag is not None and "," in tag:
            raise ValueError("a tag with a comma would be read as several tags")
        params: dict[str, str | int] = {"limit": limit, "offset": offset}
        if status:
            params["status"] = status
        if tag:
            params["tags"] = tag
        response = self._call("GET", LIST_PATH, params=params)
        return self._parsed(response, lambda raw: parse_page(raw, limit=limit, offset=offset))

    def iter_assets(
        self, *, status: str | None = None, tag: str | None = None
    ) -> Iterator[RemoteAsset]:
        """Every asset matching ``status`` and ``tag``, page by page, checked client-side too.

        A tag with a comma cannot be sent as a filter, so it is matched here alone. A page
        that is empty while the server says there is more is an error, not the end: a
        listing cut short would make reconciliation upload duplicates.
        """
        server_tag = tag if tag is not None and "," not in tag else None
        offset = 0
        while True:
            page = self.list_page(limit=PAGE_SIZE, offset=offset, status=status, tag=server_tag)
            for asset in page.assets:
                if (status is None or asset.status == status) and (
                    tag is None or tag in asset.tags
                ):
                    yield asset
            if not page.has_more:
                return
            if not page.assets:
                raise TransientError(f"GET {LIST_PATH}: has_more with an empty page at {offset}")
            offset += len(page.assets)

    def get(self, asset_id: str) -> RemoteAsset:
        """The full record of one asset (with ``file_size`` and ``updated_at``)."""
        response = self._call("GET", _asset_path(asset_id))
        return self._parsed(response, parse_asset)

    def delete(self, asset_id: str) -> None:
        """Delete one asset; raises NotFound on 404, which callers treat as done."""
        self._call("DELETE", _asset_path(asset_id))

    def check_auth(self) -> None:
        """One cheap request, not retried, to learn whether the key is accepted now.

        Raises AuthError, TransientError (also for 429), or another ApiError when the
        endpoint itself is wrong.
        """
        try:
            self._call("GET", LIST_PATH, params={"limit": 1}, attempts=1)
        except RateLimited as exc:
            raise TransientError(str(exc), status=429, retry_after=exc.retry_after) from None

    # --- plumbing ---

    def _parsed(self, response: httpx.Response, parse: Callable[[object], _T]) -> _T:
        try:
            return parse(response.json())
        except (ValueError, TypeError) as exc:
            path = response.request.url.path
            raise TransientError(
                f"{response.request.method} {path}: malformed answer ({exc})",
                status=response.status_code,
            ) from None

    def _call(
        self, method: str, path: str, *, attempts: int | None = None, **kwargs: Any
    ) -> httpx.Response:
        policy = self._retry if attempts is None else self._retry.with_attempts(attempts)
        return policy.call(
            lambda: self._send_once(method, path, **kwargs), method=method, path=path
        )

    def _send_once(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            message = self._scrub(f"{method} {path}: {type(exc).__name__}: {exc}")
            raise error_for_transport(exc, method, message) from None
        error = self._answer_error(response, method, path)
        if error is not None:
            raise error
        return response

    def _answer_error(self, response: httpx.Response, method: str, path: str) -> ApiError | None:
        status = response.status_code
        if 200 <= status < 300:
            return None
        code, detail = _error_detail(response)
        code = code and self._scrub(code)
        said = ": ".join(part for part in (code, detail) if part)
        message = self._scrub(f"{method} {path}: HTTP {status}" + (f" {said}" if said else ""))
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=self._clock())
        log.debug("api.error", method=method, path=path, status=status, code=code)
        return error_for_status(status, method, message=message, code=code, retry_after=retry_after)

    def _scrub(self, text: str) -> str:
        """Remove the key from text the server or a library produced (some echo it back)."""
        try:
            key = self._auth.current()
        except AuthError:
            return text
        return text.replace(key, "********")


def _asset_path(asset_id: str) -> str:
    if not asset_id:
        raise ValueError("an empty asset_id")
    return ASSET_PATH + quote(asset_id, safe="")
