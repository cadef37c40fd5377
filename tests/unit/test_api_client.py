"""The Assets API client against an in-memory transport: mapping, retries, secrecy."""

from __future__ import annotations

import email.utils
import json
import random
import traceback
from collections.abc import Callable
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as email_policy

import httpx
import pytest
from structlog.testing import capture_logs

import syncd
from syncd.api import AssetsClient, error_class, parse_asset, parse_page
from syncd.errors import (
    ApiError,
    AuthError,
    ConfigError,
    NotFound,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
)
from syncd.retry import RetryPolicy, is_retryable, parse_retry_after
from tests.support import FakeClock

KEY = "sk-test-0123456789abcdef"
BASE = "https://api.example.test"
Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that answers from a script and keeps every request."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if callable(answer):
            return answer(request)
        return answer


def asset_json(asset_id: str = "a1", **extra: object) -> dict[str, object]:
    record: dict[str, object] = {
        "asset_id": asset_id,
        "name": "shoe.jpg",
        "status": "processing",
        "url": f"https://cdn.example.test/{asset_id}.jpg",
        "thumbnail_url": None,
        "width": 10,
        "height": 20,
        "file_size": 1234,
        "format": "jpeg",
        "tags": ["shoes", "red"],
        "created_at": "2024-01-01T00:00:00Z",
    }
    record.update(extra)
    return record


def error_json(status: int, code: str = "oops", message: str = "it went wrong") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


def make_client(
    recorder: Recorder,
    *,
    clock: FakeClock | None = None,
    key: Callable[[], str] = lambda: KEY,
    **policy: object,
) -> AssetsClient:
    clock = clock or FakeClock()
    retry = RetryPolicy(sleep=clock.sleep, clock=clock.time, rng=random.Random(7), **policy)  # type: ignore[arg-type]
    return AssetsClient(
        BASE, key, transport=httpx.MockTransport(recorder), retry=retry, clock=clock.time
    )


def upload(client: AssetsClient) -> object:
    return client.upload(
        b"\xff\xd8jpeg", filename="shoe.jpg", content_type="image/jpeg", name="shoe", tags=["a"]
    )


# --- status and transport mapping --------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, PermanentError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFound),
        (409, PermanentError),
        (413, PermanentError),
        (415, PermanentError),
        (422, PermanentError),
        (429, RateLimited),
        (500, TransientError),
        (502, TransientError),
        (503, TransientError),
        (504, TransientError),
        (301, PermanentError),
    ],
)
def test_get_status_maps_to_error_class(status: int, expected: type[ApiError]) -> None:
    """Each status class of a GET answer raises the matching syncd error with the status."""
    rec = Recorder(error_json(status))
    with make_client(rec, max_attempts=1) as client, pytest.raises(expected) as info:
        client.get("a1")
    assert type(info.value) is expected
    assert info.value.status == status


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, PermanentError),
        (413, PermanentError),
        (415, PermanentError),
        (422, PermanentError),
        (401, AuthError),
        (500, OutcomeUnknown),
        (502, OutcomeUnknown),
        (504, OutcomeUnknown),
    ],
)
def test_upload_status_maps_to_error_class(status: int, expected: type[ApiError]) -> None:
    """A POST answered 4xx fails for good; a 5xx (but 503) may hide a created asset."""
    rec = Recorder(error_json(status))
    with make_client(rec) as client, pytest.raises(expected):
        upload(client)
    assert len(rec.requests) == 1


def test_error_class_is_a_pure_table() -> None:
    """The status table distinguishes POST from idempotent methods only for 5xx but 503."""
    assert error_class(502, "GET") is TransientError
    assert error_class(502, "DELETE") is TransientError
    assert error_class(502, "POST") is OutcomeUnknown
    assert error_class(503, "POST") is TransientError
    assert error_class(429, "POST") is RateLimited
    assert error_class(408, "POST") is TransientError
    assert error_class(418, "GET") is PermanentError


def test_error_message_carries_status_and_server_code() -> None:
    """The message names the status, the server's code and its message."""
    rec = Recorder(error_json(415, "unsupported_media_type", "only jpeg, png, webp"))
    with make_client(rec) as client, pytest.raises(PermanentError) as info:
        upload(client)
    text = str(info.value)
    assert "415" in text
    assert "unsupported_media_type" in text
    assert "only jpeg, png, webp" in text
    assert info.value.code == "unsupported_media_type"


def test_error_without_json_body_still_maps() -> None:
    """A non-JSON error body (a proxy page) still maps by status and quotes a snippet."""
    rec = Recorder(httpx.Response(403, text="<html>\n Forbidden by proxy </html>"))
    with make_client(rec) as client, pytest.raises(AuthError) as info:
        client.get("a1")
    assert "Forbidden by proxy" in str(info.value)
    assert info.value.code is None


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("connection reset"),
        httpx.WriteError("broken pipe"),
        httpx.WriteTimeout("timed out"),
    ],
)
def test_post_without_answer_is_outcome_unknown_after_one_request(error: Exception) -> None:
    """A POST whose body may have arrived is never re-sent: OutcomeUnknown at once."""
    clock = FakeClock()
    rec = Recorder(error, httpx.Response(201, json=asset_json()))
    with make_client(rec, clock=clock) as client, pytest.raises(OutcomeUnknown):
        upload(client)
    assert len(rec.requests) == 1
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("answer", "late"),
    [
        (httpx.ReadTimeout("timed out"), True),
        (httpx.WriteTimeout("timed out"), True),
        (httpx.Response(504, text="gateway timeout"), True),
        (httpx.RemoteProtocolError("Server disconnected without sending a response."), False),
        (httpx.ReadError("connection reset"), False),
        (httpx.Response(502, text="bad gateway"), False),
        (httpx.Response(500, text="boom"), False),
    ],
)
def test_an_unknown_outcome_says_whether_the_server_may_still_be_working(
    answer: httpx.Response | Exception, late: bool
) -> None:
    """Timeouts and 504 may land later (look after a wait); a closed connection or 500 not."""
    rec = Recorder(answer)
    with make_client(rec) as client, pytest.raises(OutcomeUnknown) as raised:
        upload(client)
    assert raised.value.late is late


def test_the_late_answer_wait_covers_the_timeout_and_grows_with_the_body() -> None:
    """At least the timeout (or the configured floor), plus seconds per MB of body."""
    from syncd.plan import LateAnswers

    assert LateAnswers(timeout=30, per_mb=5).wait(9_500_000) == pytest.approx(77.5)
    assert LateAnswers(timeout=30, per_mb=5).wait(0) == 30
    assert LateAnswers(timeout=1, floor=4, per_mb=0).wait(10_000_000) == 4


@pytest.mark.parametrize(
    "error",
    [httpx.ConnectError("refused"), httpx.ConnectTimeout("slow"), httpx.PoolTimeout("busy")],
)
def test_post_not_sent_is_retried(error: Exception) -> None:
    """A POST that never left (connect failure, pool timeout) is safe to send again."""
    rec = Recorder(error, httpx.Response(201, json=asset_json("new")))
    with make_client(rec) as client:
        asset = upload(client)
    assert len(rec.requests) == 2
    assert getattr(asset, "asset_id", None) == "new"


@pytest.mark.parametrize(
    "error",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("eof"),
        httpx.ConnectError("refused"),
    ],
)
def test_get_without_answer_is_retried(error: Exception) -> None:
    """For an idempotent GET, any missing answer is transient and retried."""
    rec = Recorder(error, httpx.Response(200, json=asset_json()))
    with make_client(rec) as client:
        assert client.get("a1").asset_id == "a1"
    assert len(rec.requests) == 2


def test_get_without_answer_exhausted_is_transient() -> None:
    """When the GET never gets an answer, the caller sees TransientError, not httpx."""
    rec = Recorder(httpx.ReadTimeout("timed out"))
    with make_client(rec, max_attempts=2) as client, pytest.raises(TransientError) as info:
        client.get("a1")
    assert "ReadTimeout" in str(info.value)
    assert info.value.__suppress_context__
    assert len(rec.requests) == 2


def test_delete_retried_after_timeout_meets_404_as_not_found() -> None:
    """A DELETE whose first try timed out is re-sent; the 404 it then meets is NotFound."""
    rec = Recorder(httpx.ReadTimeout("timed out"), error_json(404, "not_found"))
    with make_client(rec) as client, pytest.raises(NotFound):
        client.delete("a1")
    assert [r.method for r in rec.requests] == ["DELETE", "DELETE"]


def test_delete_204_returns_none_and_quotes_the_id() -> None:
    """DELETE succeeds on 204 and the opaque id is sent as one path segment."""
    rec = Recorder(httpx.Response(204))
    with make_client(rec) as client:
        assert client.delete("a/b c") is None
    assert rec.requests[0].url.raw_path == b"/v1/assets/a%2Fb%20c"


# --- Retry-After and the retry policy ------------------------------------------------


def test_retry_after_seconds_and_dates_are_parsed() -> None:
    """Retry-After is read as delta seconds or as an HTTP date relative to ``now``."""
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 42, usegmt=True)
    assert parse_retry_after("7", now=now) == 7.0
    assert parse_retry_after(" 2.5 ", now=now) == 2.5
    assert parse_retry_after(date, now=now) == pytest.approx(42.0)
    assert parse_retry_after(email.utils.formatdate(now - 60, usegmt=True), now=now) == 0.0
    assert parse_retry_after("-3", now=now) == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "inf", "Mon, 99 Foo 2024"])
def test_unreadable_retry_after_is_none(value: str | None) -> None:
    """A missing or unreadable Retry-After gives no hint instead of failing."""
    assert parse_retry_after(value, now=0.0) is None


def test_429_then_200_waits_at_least_retry_after() -> None:
    """A 429 is retried after at least the server's Retry-After (seconds form)."""
    clock = FakeClock()
    limited = httpx.Response(429, headers={"Retry-After": "7"}, json={})
    rec = Recorder(limited, httpx.Response(200, json=asset_json()))
    with make_client(rec, clock=clock) as client:
        client.get("a1")
    assert len(rec.requests) == 2
    assert len(clock.sleeps) == 1
    assert clock.sleeps[0] >= 7.0


def test_429_with_http_date_waits_until_that_date() -> None:
    """A Retry-After HTTP date is turned into seconds from the injected clock and honoured."""
    clock = FakeClock(start=1_700_000_000.0)
    when = email.utils.formatdate(clock.now + 12, usegmt=True)
    limited = httpx.Response(429, headers={"Retry-After": when})
    rec = Recorder(limited, httpx.Response(200, json=asset_json()))
    with make_client(rec, clock=clock) as client:
        client.get("a1")
    assert clock.sleeps[0] >= 12.0


def test_rate_limited_error_carries_retry_after() -> None:
    """When retries run out on 429 the error keeps the parsed Retry-After."""
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "3"}))
    with make_client(rec, max_attempts=1) as client, pytest.raises(RateLimited) as info:
        client.get("a1")
    assert info.value.retry_after == 3.0


def test_retry_after_beyond_max_wait_goes_back_to_caller() -> None:
    """A Retry-After longer than max_wait is not slept on here: the queue schedules it."""
    clock = FakeClock()
    rec = Recorder(httpx.Response(429, headers={"Retry-After": "600"}))
    client = make_client(rec, clock=clock, max_wait=30.0)
    with client, pytest.raises(RateLimited) as info:
        client.get("a1")
    assert info.value.retry_after == 600.0
    assert len(rec.requests) == 1
    assert clock.sleeps == []


def test_503_several_times_then_success() -> None:
    """503s are retried with growing, capped, jittered waits until the answer comes."""
    clock = FakeClock()
    rec = Recorder(*[error_json(503)] * 3, httpx.Response(200, json=asset_json()))
    with make_client(rec, clock=clock, initial_wait=0.5, max_wait=30.0) as client:
        assert client.get("a1").asset_id == "a1"
    assert len(rec.requests) == 4
    assert len(clock.sleeps) == 3
    for attempt, wait in enumerate(clock.sleeps, start=1):
        step = 0.5 * 2 ** (attempt - 1)
        assert step / 2 <= wait <= step


def test_503_retry_after_is_honoured_too() -> None:
    """A Retry-After on a 503 makes the wait at least that long."""
    clock = FakeClock()
    rec = Recorder(
        httpx.Response(503, headers={"Retry-After": "4"}), httpx.Response(200, json=asset_json())
    )
    with make_client(rec, clock=clock) as client:
        client.get("a1")
    assert clock.sleeps[0] >= 4.0


def test_retries_stop_after_max_attempts_and_reraise_api_error() -> None:
    """After max_attempts the last ApiError itself is raised, never tenacity's RetryError."""
    clock = FakeClock()
    rec = Recorder(error_json(500))
    client = make_client(rec, clock=clock, max_attempts=3)
    with client, pytest.raises(TransientError) as info:
        client.list_page()
    assert len(rec.requests) == 3
    assert len(clock.sleeps) == 2
    assert info.value.status == 500


def test_retries_stop_when_total_time_is_spent() -> None:
    """No sleep starts that would end past max_total, whatever max_attempts allows."""
    clock = FakeClock()
    rec = Recorder(error_json(503))
    client = make_client(rec, clock=clock, max_attempts=50, max_wait=4.0, max_total=10.0)
    with client, pytest.raises(TransientError):
        client.get("a1")
    assert sum(clock.sleeps) < 10.0
    assert 2 <= len(rec.requests) < 50


def test_waits_are_capped_at_max_wait() -> None:
    """Exponential growth stops at max_wait."""
    policy = RetryPolicy(initial_wait=1.0, max_wait=5.0, rng=random.Random(1))
    assert all(policy.backoff(n) <= 5.0 for n in range(1, 30))
    assert policy.backoff(20) >= 2.5


@pytest.mark.parametrize(
    ("answer", "attempts"),
    [
        (error_json(400), 1),
        (error_json(401), 1),
        (error_json(403), 1),
        (error_json(404), 1),
        (error_json(422), 1),
    ],
)
def test_permanent_auth_and_not_found_are_never_retried(
    answer: httpx.Response, attempts: int
) -> None:
    """Errors that cannot improve by waiting are raised after the first request."""
    clock = FakeClock()
    rec = Recorder(answer)
    with make_client(rec, clock=clock) as client, pytest.raises(ApiError):
        client.get("a1")
    assert len(rec.requests) == attempts
    assert clock.sleeps == []


@pytest.mark.parametrize(
    ("error", "retry"),
    [
        (TransientError("x"), True),
        (TransientError("x", retry_after=5.0), True),
        (TransientError("x", retry_after=60.0), False),
        (RateLimited("x"), True),
        (RateLimited("x", retry_after=30.0), True),
        (RateLimited("x", retry_after=31.0), False),
        (OutcomeUnknown("x"), False),
        (PermanentError("x"), False),
        (AuthError("x"), False),
        (NotFound("x"), False),
        (ValueError("x"), False),
    ],
)
def test_retry_predicate(error: BaseException, retry: bool) -> None:
    """Only transient and rate-limit errors whose wait fits under max_wait are retried."""
    assert is_retryable(error, max_wait=30.0) is retry


def test_retry_is_logged_as_event_without_key() -> None:
    """Each retry logs an ``api.retry`` event with method, path, attempt, wait, error."""
    rec = Recorder(error_json(503), httpx.Response(200, json=asset_json()))
    with capture_logs() as logs, make_client(rec) as client:
        client.get("a1")
    retries = [e for e in logs if e["event"] == "api.retry"]
    assert len(retries) == 1
    event = retries[0]
    assert event["method"] == "GET"
    assert event["path"] == "/v1/assets/a1"
    assert event["attempt"] == 1
    assert event["error"] == "TransientError"
    assert event["wait"] > 0
    assert KEY not in repr(logs)


# --- request shape, auth and secrecy -------------------------------------------------


def multipart_parts(request: httpx.Request) -> list[EmailMessage]:
    head = f"Content-Type: {request.headers['content-type']}\r\n\r\n".encode()
    message = BytesParser(policy=email_policy).parsebytes(head + request.content)
    assert isinstance(message, EmailMessage)
    return list(message.iter_parts())  # type: ignore[arg-type]


def test_upload_sends_multipart_with_file_name_and_repeated_tags() -> None:
    """The upload is multipart: a file part with filename and type, name, one tags[] per tag."""
    rec = Recorder(httpx.Response(201, json=asset_json("new", tags=["x", "y z", "sha256:ab"])))
    with make_client(rec) as client:
        asset = client.upload(
            b"\x89PNGbytes",
            filename="shoe 1.png",
            content_type="image/png",
            name="Shoe 1",
            tags=["x", "y z", "sha256:ab"],
        )
    request = rec.requests[0]
    assert (request.method, request.url.path) == ("POST", "/v1/training-asset")
    parts = {p.get_param("name", header="content-disposition"): p for p in multipart_parts(request)}
    fields = [
        (p.get_param("name", header="content-disposition"), p.get_content())
        for p in multipart_parts(request)
    ]
    assert [v for k, v in fields if k == "tags[]"] == ["x", "y z", "sha256:ab"]
    assert parts["name"].get_content() == "Shoe 1"
    file_part = parts["file"]
    assert file_part.get_filename() == "shoe 1.png"
    assert file_part.get_content_type() == "image/png"
    assert file_part.get_payload(decode=True) == b"\x89PNGbytes"
    assert asset.tags == ("x", "y z", "sha256:ab")


def test_every_request_carries_bearer_key_and_user_agent() -> None:
    """Authorization is ``Bearer <key>`` and the User-Agent names syncd and its version."""
    rec = Recorder(httpx.Response(200, json={"assets": [], "total": 0, "has_more": False}))
    with make_client(rec) as client:
        client.list_page()
    request = rec.requests[0]
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["user-agent"] == f"syncd/{syncd.__version__}"
    assert KEY not in str(request.url)


def test_key_provider_is_asked_for_every_request() -> None:
    """A key replaced between calls is used by the next request, without a new client."""
    keys = iter(["key-one", "key-two"])
    current = {"key": next(keys)}
    rec = Recorder(httpx.Response(200, json=asset_json()))
    with make_client(rec, key=lambda: current["key"]) as client:
        client.get("a1")
        current["key"] = next(keys)
        client.get("a1")
    assert [r.headers["authorization"] for r in rec.requests] == [
        "Bearer key-one",
        "Bearer key-two",
    ]


def test_key_source_with_reveal_is_accepted() -> None:
    """An object with ``reveal()`` (the config's ApiKey) works as the key provider."""

    class Source:
        def reveal(self) -> str:
            return "from-reveal\n"

    rec = Recorder(httpx.Response(200, json=asset_json()))
    client = AssetsClient(BASE, Source(), transport=httpx.MockTransport(rec))
    with client:
        client.get("a1")
    assert rec.requests[0].headers["authorization"] == "Bearer from-reveal"


@pytest.mark.parametrize("bad", ["", "   ", "two words", "caf\u00e9"])
def test_unusable_key_is_auth_error_before_sending(bad: str) -> None:
    """An empty or unsendable key raises AuthError and sends nothing."""
    rec = Recorder(httpx.Response(200, json=asset_json()))
    with make_client(rec, key=lambda: bad) as client, pytest.raises(AuthError):
        client.get("a1")
    assert rec.requests == []


def test_unreadable_key_is_auth_error() -> None:
    """A provider that cannot read its key file pauses like a rejected key (AuthError)."""

    def broken() -> str:
        raise PermissionError("/secret/api_key")

    rec = Recorder(httpx.Response(200, json=asset_json()))
    with make_client(rec, key=broken) as client, pytest.raises(AuthError):
        client.get("a1")
    assert rec.requests == []


@pytest.mark.parametrize(
    "answer",
    [
        error_json(401, code=f"bad_key:{KEY}", message=f"the key {KEY} is not valid"),
        httpx.Response(500, text=f"Traceback ... Authorization: Bearer {KEY}"),
        httpx.RemoteProtocolError(f"junk after Bearer {KEY}"),
        httpx.ConnectError(f"proxy said {KEY}"),
    ],
)
def test_no_error_message_contains_the_key(answer: httpx.Response | Exception) -> None:
    """Even when the server or a library echoes the key, no message, repr or traceback has it."""
    rec = Recorder(answer)
    client = make_client(rec, max_attempts=1)
    with client, pytest.raises(ApiError) as info:
        upload(client)
    error = info.value
    shown = "".join(traceback.format_exception(error))
    for text in (str(error), repr(error), str(error.args), str(error.code), repr(client), shown):
        assert KEY not in text
    assert error.__cause__ is None


# --- records, pages and pagination ---------------------------------------------------


def test_parse_asset_is_defensive() -> None:
    """Missing optional fields become None; odd types are dropped, not trusted."""
    asset = parse_asset({"asset_id": 17, "tags": ["a", 3, None], "width": "wide", "height": True})
    assert asset.asset_id == "17"
    assert asset.tags == ("a",)
    assert (asset.width, asset.height, asset.file_size, asset.url) == (None, None, None, None)
    assert (asset.name, asset.status, asset.created_at) == ("", "", "")


def test_list_items_have_no_file_size() -> None:
    """List items parse without file_size, which stays None."""
    item = asset_json()
    del item["file_size"]
    page = parse_page({"assets": [item], "total": 1, "has_more": False}, limit=100, offset=0)
    assert page.assets[0].file_size is None
    assert page.assets[0].tags == ("shoes", "red")


def test_page_without_has_more_is_derived_from_total() -> None:
    """When has_more is missing, it is computed from total (or a full page)."""
    items = [asset_json(str(i)) for i in range(2)]
    assert parse_page({"assets": items, "total": 5}, limit=2, offset=0).has_more
    assert not parse_page({"assets": items, "total": 4}, limit=2, offset=2).has_more
    assert parse_page({"assets": items}, limit=2, offset=0).has_more


def test_list_answer_without_assets_is_an_error_not_empty() -> None:
    """A list answer with no assets array raises instead of reading as an empty library."""
    rec = Recorder(httpx.Response(200, json={"items": []}))
    with make_client(rec, max_attempts=1) as client, pytest.raises(TransientError):
        client.list_page()


def test_upload_success_with_unreadable_body_is_outcome_unknown() -> None:
    """A 201 whose body we cannot read may still have created the asset: OutcomeUnknown."""
    rec = Recorder(httpx.Response(201, text="<html>created</html>"))
    with make_client(rec) as client, pytest.raises(OutcomeUnknown):
        upload(client)
    assert len(rec.requests) == 1


def library(count: int, *, cap: int = 100) -> Handler:
    """A list endpoint over ``count`` assets that pages like the spec (limit capped)."""

    def answer(request: httpx.Request) -> httpx.Response:
        limit = min(int(request.url.params["limit"]), cap)
        offset = int(request.url.params["offset"])
        items = [asset_json(f"id{i}") for i in range(offset, min(offset + limit, count))]
        body = {
            "assets": items,
            "total": count,
            "limit": limit,
            "offset": offset,
            "has_more": offset + len(items) < count,
        }
        return httpx.Response(200, json=body)

    return answer


def test_iter_assets_walks_every_page() -> None:
    """iter_assets follows has_more/offset with pages of 100 and yields every asset once."""
    rec = Recorder(library(250))
    with make_client(rec) as client:
        ids = [a.asset_id for a in client.iter_assets()]
    assert ids == [f"id{i}" for i in range(250)]
    assert [r.url.params["offset"] for r in rec.requests] == ["0", "100", "200"]
    assert {r.url.params["limit"] for r in rec.requests} == {"100"}


def test_iter_assets_advances_by_what_the_server_sent() -> None:
    """A server that caps pages below 100 is still walked without gaps."""
    rec = Recorder(library(45, cap=20))
    with make_client(rec) as client:
        ids = [a.asset_id for a in client.iter_assets()]
    assert ids == [f"id{i}" for i in range(45)]
    assert [r.url.params["offset"] for r in rec.requests] == ["0", "20", "40"]


def test_iter_assets_sends_one_tag_and_checks_it_client_side() -> None:
    """The tag filter is one ``tags`` value; items without that tag are dropped anyway."""
    body = {"assets": [asset_json("a", tags=["t"]), asset_json("b", tags=["u"])], "total": 2}
    rec = Recorder(httpx.Response(200, json=body))
    with make_client(rec) as client:
        ids = [a.asset_id for a in client.iter_assets(tag="t", status="processing")]
    assert ids == ["a"]
    params = rec.requests[0].url.params
    assert params.get_list("tags") == ["t"]
    assert params["status"] == "processing"


def test_tag_with_comma_is_never_sent_as_a_filter() -> None:
    """A tag containing a comma would read as two tags, so it is matched client-side only."""
    body = {"assets": [asset_json("a", tags=["red, blue"]), asset_json("b", tags=["red"])]}
    rec = Recorder(httpx.Response(200, json={**body, "has_more": False}))
    with make_client(rec) as client:
        ids = [a.asset_id for a in client.iter_assets(tag="red, blue")]
        with pytest.raises(ValueError, match="comma"):
            client.list_page(tag="a,b")
    assert ids == ["a"]
    assert "tags" not in rec.requests[0].url.params


def test_has_more_with_empty_page_is_an_error() -> None:
    """A page that is empty but claims more raises instead of looping or stopping short."""
    rec = Recorder(httpx.Response(200, json={"assets": [], "total": 9, "has_more": True}))
    with make_client(rec) as client, pytest.raises(TransientError):
        list(client.iter_assets())


# --- check_auth and construction -----------------------------------------------------


def test_check_auth_ok_is_one_cheap_request() -> None:
    """check_auth lists one item and returns None when the key is accepted."""
    rec = Recorder(httpx.Response(200, json={"assets": [], "total": 0, "has_more": False}))
    with make_client(rec) as client:
        assert client.check_auth() is None
    assert rec.requests[0].url.params["limit"] == "1"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (error_json(401), AuthError),
        (error_json(403), AuthError),
        (error_json(503), TransientError),
        (httpx.Response(429, headers={"Retry-After": "2"}), TransientError),
        (httpx.ConnectError("refused"), TransientError),
    ],
)
def test_check_auth_failures_are_not_retried(
    answer: httpx.Response | Exception, expected: type[ApiError]
) -> None:
    """check_auth tries once and says auth or transient, so a probe loop stays cheap."""
    rec = Recorder(answer)
    with make_client(rec) as client, pytest.raises(expected):
        client.check_auth()
    assert len(rec.requests) == 1


@pytest.mark.parametrize("url", ["ftp://example.test", "not a url", "https://", "file:///x"])
def test_bad_base_url_is_a_config_error(url: str) -> None:
    """A base URL that is not http(s) with a host is refused, naming the config key."""
    with pytest.raises(ConfigError, match=r"api\.base_url"):
        AssetsClient(url, lambda: KEY)


def test_client_repr_and_get_with_empty_id() -> None:
    """The client's repr shows only the base URL, and an empty id is refused locally."""
    rec = Recorder(httpx.Response(200, json=asset_json()))
    with make_client(rec) as client:
        assert repr(client) == f"AssetsClient(base_url={BASE!r})"
        with pytest.raises(ValueError, match="asset_id"):
            client.get("")
    assert rec.requests == []


def test_get_returns_full_record() -> None:
    """get parses the full record, including file_size and updated_at."""
    body = asset_json("a1", status="ready", updated_at="2024-01-02T00:00:00Z")
    rec = Recorder(httpx.Response(200, content=json.dumps(body).encode()))
    with make_client(rec) as client:
        asset = client.get("a1")
    assert (asset.status, asset.file_size, asset.updated_at) == (
        "ready",
        1234,
        "2024-01-02T00:00:00Z",
    )
