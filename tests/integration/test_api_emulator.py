"""The Assets API client against the emulator over a real loopback socket."""

from __future__ import annotations

import hashlib
import io
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image
from structlog.testing import capture_logs

from syncd.api import AssetsClient
from syncd.emulator import EmulatorServer, Faults
from syncd.errors import (
    AuthError,
    NotFound,
    OutcomeUnknown,
    PermanentError,
    RateLimited,
    TransientError,
)
from syncd.model import identity_tag
from syncd.retry import RetryPolicy

KEY = "test-key"
UPLOADS = "POST /v1/training-asset"
LISTS = "GET /v1/my-uploaded-assets"


def png(seed: int, size: tuple[int, int] = (8, 6)) -> bytes:
    """A small PNG whose pixels (and so whose hash) depend on ``seed``."""
    image = Image.new("RGB", size, (seed % 256, (seed // 256) % 256, 90))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def quick_policy(**overrides: float) -> RetryPolicy:
    """Few attempts and short waits, so fault tests take well under a second each."""
    settings: dict[str, float] = {
        "max_attempts": 3,
        "initial_wait": 0.01,
        "max_wait": 2.0,
        "max_total": 10.0,
    }
    settings.update(overrides)
    return RetryPolicy(**settings)  # type: ignore[arg-type]


@pytest.fixture
def client(emulator: EmulatorServer) -> Iterator[AssetsClient]:
    with AssetsClient(emulator.base_url, lambda: KEY, timeout=5.0, retry=quick_policy()) as c:
        yield c


def requests_to(emulator: EmulatorServer, route: str) -> int:
    return emulator.stats()["requests"].get(route, 0)


def put(client: AssetsClient, data: bytes, *tags: str, name: str = "shoe") -> str:
    asset = client.upload(
        data, filename=f"{name}.png", content_type="image/png", name=name, tags=list(tags)
    )
    return asset.asset_id


def test_round_trip_upload_get_list_delete(client: AssetsClient, emulator: EmulatorServer) -> None:
    """An upload can be read back, listed by its identity tag, deleted, and is then gone."""
    data = png(1, size=(30, 20))
    sha = hashlib.sha256(data).hexdigest()
    ident = identity_tag(sha)
    created = client.upload(
        data, filename="red shoe.png", content_type="image/png", name="red shoe",
        tags=["shoes", "red+blue", ident],
    )  # fmt: skip
    assert created.name == "red shoe"
    assert created.status in ("processing", "ready")
    assert set(created.tags) == {"shoes", "red+blue", ident}
    assert (created.width, created.height, created.file_size) == (30, 20, len(data))

    fetched = client.get(created.asset_id)
    assert fetched.file_size == len(data)
    assert fetched.format == "png"
    assert fetched.updated_at is not None

    listed = list(client.iter_assets(tag=ident))
    assert [a.asset_id for a in listed] == [created.asset_id]
    assert listed[0].file_size is None
    assert [a.asset_id for a in client.iter_assets(tag="red+blue")] == [created.asset_id]
    assert [a["sha256"] for a in emulator.assets()] == [sha]

    client.delete(created.asset_id)
    with pytest.raises(NotFound):
        client.get(created.asset_id)
    with pytest.raises(NotFound):
        client.delete(created.asset_id)
    assert emulator.assets() == []


def test_iter_assets_pages_over_more_than_a_hundred(
    client: AssetsClient, emulator: EmulatorServer
) -> None:
    """Listing 130 assets takes two pages of 100 and yields each asset exactly once."""
    with ThreadPoolExecutor(max_workers=4) as pool:  # one client, shared like the uploader's
        ids = list(pool.map(lambda i: put(client, png(i), "batch"), range(130)))
    put(client, png(999), "other")
    before = requests_to(emulator, LISTS)

    listed = [a.asset_id for a in client.iter_assets(tag="batch")]

    assert sorted(listed) == sorted(ids)
    assert len(set(listed)) == 130
    assert requests_to(emulator, LISTS) - before == 2
    assert len(list(client.iter_assets())) == 131
    page = client.list_page(limit=100, offset=100, tag="batch")
    assert (page.total, len(page.assets), page.has_more) == (130, 30, False)


def test_text_named_jpg_is_permanent_415(client: AssetsClient, emulator: EmulatorServer) -> None:
    """A text file sent as a JPEG is refused for good (415) after a single POST."""
    with pytest.raises(PermanentError) as info:
        client.upload(
            b"just some text\n", filename="x.jpg", content_type="image/jpeg", name="x", tags=[]
        )
    assert info.value.status == 415
    assert info.value.code == "unsupported_format"
    assert requests_to(emulator, UPLOADS) == 1


def test_eleven_megabyte_png_is_permanent_413(
    client: AssetsClient, emulator: EmulatorServer
) -> None:
    """An 11 MB PNG is refused for good (413) and nothing is stored."""
    big = b"\x89PNG\r\n\x1a\n" + bytes(11 * 1024 * 1024)
    with pytest.raises(PermanentError) as info:
        client.upload(big, filename="big.png", content_type="image/png", name="big", tags=[])
    assert info.value.status == 413
    assert requests_to(emulator, UPLOADS) == 1
    assert emulator.assets() == []


def test_wrong_key_is_auth_error_and_a_fixed_key_is_picked_up(emulator: EmulatorServer) -> None:
    """A refused key raises AuthError (never retried, never quoted); a new key works at once."""
    key = {"value": "wrong-key-123"}
    with AssetsClient(emulator.base_url, lambda: key["value"], retry=quick_policy()) as client:
        with pytest.raises(AuthError) as info:
            put(client, png(1))
        assert info.value.status == 401
        assert "wrong-key-123" not in str(info.value)
        assert requests_to(emulator, UPLOADS) == 1
        with pytest.raises(AuthError):
            client.check_auth()
        key["value"] = KEY
        assert client.check_auth() is None
        emulator.set_api_key("rotated-key")
        with pytest.raises(AuthError):
            client.check_auth()


def test_unknown_asset_is_not_found(client: AssetsClient) -> None:
    """GET and DELETE of an unknown id raise NotFound."""
    with pytest.raises(NotFound) as info:
        client.get("no-such-asset")
    assert info.value.status == 404
    with pytest.raises(NotFound):
        client.delete("no-such-asset")


def test_server_errors_are_retried_then_transient(
    client: AssetsClient, emulator: EmulatorServer
) -> None:
    """With every request failing 5xx, a GET is tried max_attempts times, then TransientError."""
    emulator.set_faults(Faults(error_rate=1.0, seed=1))
    with pytest.raises(TransientError) as info:
        client.list_page()
    assert info.value.status in (500, 502, 503)
    assert requests_to(emulator, LISTS) == 3


def test_server_errors_on_upload_store_nothing(
    client: AssetsClient, emulator: EmulatorServer
) -> None:
    """A POST is re-sent only after 503; a 500/502 stops it as OutcomeUnknown at once."""
    emulator.set_faults(Faults(error_rate=1.0, seed=2))
    with capture_logs() as logs, pytest.raises((TransientError, OutcomeUnknown)) as info:
        put(client, png(3))
    statuses = [e["status"] for e in logs if e["event"] == "api.retry"]
    assert statuses == [503] * len(statuses)
    assert requests_to(emulator, UPLOADS) == len(statuses) + 1
    expected = OutcomeUnknown if info.value.status in (500, 502) else TransientError
    assert type(info.value) is expected
    assert emulator.assets() == []


def test_rate_limit_waits_for_retry_after(emulator: EmulatorServer) -> None:
    """On 429 the client really waits at least Retry-After before the next try."""
    emulator.set_faults(Faults(rate_limit_rate=1.0, retry_after=1.0, seed=3))
    with AssetsClient(emulator.base_url, lambda: KEY, retry=quick_policy(max_attempts=2)) as c:
        started = time.monotonic()
        with pytest.raises(RateLimited) as info:
            c.get("anything")
        elapsed = time.monotonic() - started
    assert info.value.retry_after == 1.0
    assert requests_to(emulator, "GET /v1/assets/{id}") == 2
    assert elapsed >= 1.0


def test_service_down_is_transient(client: AssetsClient, emulator: EmulatorServer) -> None:
    """A service that answers 503 to everything gives TransientError, also to check_auth."""
    emulator.set_faults(Faults(down=True))
    with pytest.raises(TransientError) as info:
        client.get("a1")
    assert info.value.status == 503
    with pytest.raises(TransientError):
        client.check_auth()


def test_ambiguous_upload_is_outcome_unknown_and_not_resent(
    client: AssetsClient, emulator: EmulatorServer
) -> None:
    """A POST handled but unanswered raises OutcomeUnknown after one POST; the asset exists."""
    data = png(7)
    ident = identity_tag(hashlib.sha256(data).hexdigest())
    emulator.set_faults(Faults(ambiguous_rate=1.0, seed=4))
    with pytest.raises(OutcomeUnknown):
        put(client, data, "shoes", ident)
    assert requests_to(emulator, UPLOADS) == 1
    stored = emulator.assets()
    assert [a["sha256"] for a in stored] == [hashlib.sha256(data).hexdigest()]

    emulator.set_faults(Faults())
    found = list(client.iter_assets(tag=ident))
    assert [a.asset_id for a in found] == [stored[0]["asset_id"]]


def test_ambiguous_get_is_retried_as_transient(
    client: AssetsClient, emulator: EmulatorServer
) -> None:
    """A GET left unanswered is safe to repeat: it is retried and then TransientError."""
    emulator.set_faults(Faults(ambiguous_rate=1.0, seed=5))
    with pytest.raises(TransientError):
        client.list_page()
    assert requests_to(emulator, LISTS) == 3


def test_connection_refused_is_transient() -> None:
    """Nothing listening: uploads and reads alike fail as TransientError, never unknown."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with AssetsClient(url, lambda: KEY, timeout=2.0, retry=quick_policy()) as client:
        with pytest.raises(TransientError) as info:
            put(client, png(1))
        assert "ConnectError" in str(info.value)
        with pytest.raises(TransientError):
            client.check_auth()
