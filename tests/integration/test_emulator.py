"""The Assets API emulator, spoken to over real HTTP on loopback."""

from __future__ import annotations

import hashlib
import io
import os
import re
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from syncd.emulator import EmulatorServer, Faults

MIB = 1024 * 1024
TLS = ssl.create_default_context()  # built once: every client would otherwise load certifi


def http(
    base_url: str, api_key: str | None = None, headers: dict[str, Any] | None = None
) -> httpx.Client:
    """A client; the key, when given, goes in the Bearer header."""
    headers = dict(headers or {})
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    return httpx.Client(base_url=base_url, headers=headers, verify=TLS, timeout=10)


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (16, 12), seed: int = 0) -> bytes:
    """A small real image; ``seed`` varies the pixels so contents (and hashes) differ."""
    image = Image.new("RGB", size, (seed % 256, (seed // 256) % 256, 90))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


def padded_png(total: int) -> bytes:
    """A valid PNG of exactly ``total`` bytes: decoders stop at IEND, the rest is padding."""
    png = image_bytes("PNG")
    return png + b"\0" * (total - len(png))


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        threading.Event().wait(0.02)


@pytest.fixture
def client(emulator: EmulatorServer, api_key: str) -> Iterator[httpx.Client]:
    with http(emulator.base_url, api_key) as c:
        yield c


def post_image(
    client: httpx.Client,
    data: bytes,
    *,
    filename: str = "photo.png",
    name: str | None = None,
    tags: list[str] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    fields: dict[str, Any] = {"tags[]": tags or []}
    if name is not None:
        fields["name"] = name
    return client.post(
        "/v1/training-asset",
        files={"file": (filename, data, "image/png")},
        data=fields,
        **kwargs,
    )


def uploaded(client: httpx.Client, data: bytes, **kwargs: Any) -> dict[str, Any]:
    response = post_image(client, data, **kwargs)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


# --- the API as documented -------------------------------------------------------------


def test_upload_get_list_delete_round_trip(client: httpx.Client) -> None:
    """An upload with repeated tags[] comes back from get and list, and delete removes it."""
    data = image_bytes("PNG", size=(40, 30))
    created = uploaded(client, data, name="red shoe", tags=["studio-a", "shoes"])
    assert created["name"] == "red shoe"
    assert created["tags"] == ["studio-a", "shoes"]
    assert (created["width"], created["height"]) == (40, 30)
    assert created["file_size"] == len(data)
    assert created["format"] == "png"
    assert created["status"] == "processing"
    assert created["created_at"].endswith("Z")

    fetched = client.get(f"/v1/assets/{created['asset_id']}").json()
    assert fetched == {**created, "status": fetched["status"], "updated_at": fetched["updated_at"]}
    assert client.get(created["url"]).content == data
    thumbnail = client.get(created["thumbnail_url"])
    assert Image.open(io.BytesIO(thumbnail.content)).size == (40, 30)

    listed = client.get("/v1/my-uploaded-assets").json()
    assert [a["asset_id"] for a in listed["assets"]] == [created["asset_id"]]

    deleted = client.delete(f"/v1/assets/{created['asset_id']}")
    assert (deleted.status_code, deleted.content) == (204, b"")
    gone = client.get(f"/v1/assets/{created['asset_id']}")
    assert gone.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"
    assert client.delete(f"/v1/assets/{created['asset_id']}").status_code == 404


def test_list_pages_through_more_than_a_hundred_assets(client: httpx.Client) -> None:
    """Pages of at most 100 come in upload order, with total and has_more, and no file_size."""
    ids = [uploaded(client, image_bytes(seed=i))["asset_id"] for i in range(105)]
    first = client.get("/v1/my-uploaded-assets", params={"limit": 100}).json()
    second = client.get("/v1/my-uploaded-assets", params={"limit": 100, "offset": 100}).json()
    assert (first["total"], first["limit"], first["offset"], first["has_more"]) == (
        105,
        100,
        0,
        True,
    )
    assert (len(second["assets"]), second["has_more"]) == (5, False)
    assert [a["asset_id"] for a in first["assets"] + second["assets"]] == ids
    assert "file_size" not in first["assets"][0]
    default = client.get("/v1/my-uploaded-assets").json()
    assert (len(default["assets"]), default["limit"]) == (20, 20)


@pytest.mark.parametrize("params", [{"limit": 101}, {"limit": 0}, {"offset": -1}, {"limit": "x"}])
def test_list_refuses_out_of_range_paging(client: httpx.Client, params: dict[str, Any]) -> None:
    """limit outside 1..100, a negative offset or a non-number is a 400, not a silent clamp."""
    response = client.get("/v1/my-uploaded-assets", params=params)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_format_is_read_from_the_signature_not_the_name(client: httpx.Client, fmt: str) -> None:
    """Each accepted format is recognised by its bytes even under a misleading file name."""
    created = uploaded(client, image_bytes(fmt), filename="misleading.gif")
    assert created["format"] == fmt.lower()
    assert created["name"] == "misleading"


def test_text_file_named_jpg_is_415(client: httpx.Client) -> None:
    """A text file called .jpg is refused as an unsupported format and nothing is stored."""
    response = post_image(client, b"just some notes\n", filename="notes.jpg")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_format"
    assert client.get("/v1/my-uploaded-assets").json()["total"] == 0


def test_eleven_mib_png_is_413_and_the_connection_stays_usable(client: httpx.Client) -> None:
    """An 11 MiB PNG gets a 413 answer (not a broken pipe), and the next request works."""
    pixels = Image.new("RGB", (1920, 1920), (10, 20, 30))
    out = io.BytesIO()
    pixels.save(out, "PNG", compress_level=0)
    assert out.tell() > 11 * MIB - MIB // 2
    response = post_image(client, out.getvalue())
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert client.get("/v1/my-uploaded-assets").status_code == 200


def test_ten_mib_exactly_is_accepted_and_one_byte_more_is_413(client: httpx.Client) -> None:
    """The limit is 10 * 1024 * 1024 bytes of file, inclusive."""
    assert uploaded(client, padded_png(10 * MIB))["file_size"] == 10 * MIB
    assert post_image(client, padded_png(10 * MIB + 1)).status_code == 413


def test_truncated_image_is_422(client: httpx.Client) -> None:
    """A JPEG cut in half has the right signature but cannot be decoded: 422, nothing stored."""
    noise = Image.effect_noise((200, 200), 60).convert("RGB")
    out = io.BytesIO()
    noise.save(out, "JPEG")
    response = post_image(client, out.getvalue()[: out.tell() // 2], filename="cut.jpg")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_image"
    assert client.get("/v1/my-uploaded-assets").json()["total"] == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-key"},
        {"Authorization": "test-key"},
        {"Authorization": "Bearer clé".encode()},
    ],
    ids=["missing", "wrong", "no-scheme", "non-ascii"],
)
def test_missing_or_wrong_key_is_401(emulator: EmulatorServer, headers: dict[str, Any]) -> None:
    """No key, a wrong key or a key without the Bearer scheme: 401 with a JSON error."""
    with http(emulator.base_url, headers=headers) as anonymous:
        for response in (
            anonymous.get("/v1/my-uploaded-assets"),
            post_image(anonymous, image_bytes()),
        ):
            assert response.status_code == 401
            assert response.json()["error"]["code"] == "unauthorized"
    assert emulator.assets() == []


def test_key_can_be_revoked_while_running(emulator: EmulatorServer, client: httpx.Client) -> None:
    """After set_api_key the old key gets 401 and the new one works."""
    assert client.get("/v1/my-uploaded-assets").status_code == 200
    emulator.set_api_key("rotated-key")
    assert client.get("/v1/my-uploaded-assets").status_code == 401
    ok = client.get("/v1/my-uploaded-assets", headers={"Authorization": "Bearer rotated-key"})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"json": {"url": "https://example.com/a.jpg", "tags": ["x"]}},
        {"json": {"name": "no url"}},
        {"files": {"file": ("a.png", image_bytes(), "image/png")}, "data": {"url": "https://e/x"}},
        {"data": {"name": "nothing"}, "files": {"other": ("a.txt", b"x", "text/plain")}},
    ],
    ids=["url-form", "json-without-url", "file-and-url", "neither"],
)
def test_upload_needs_exactly_one_fetchable_file(
    client: httpx.Client, body: dict[str, Any]
) -> None:
    """The URL form cannot be fetched offline, and file/url must be exactly one: 400."""
    response = client.post("/v1/training-asset", **body)
    assert response.status_code == 400
    assert response.json()["error"]["code"] in {"bad_request", "cannot_fetch"}
    assert client.get("/v1/my-uploaded-assets").json()["total"] == 0


def test_malformed_multipart_is_400(client: httpx.Client) -> None:
    """A multipart body cut before its closing boundary is refused, not half-read."""
    body = (
        b"--XyZ\r\n"
        b'Content-Disposition: form-data; name="file"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + image_bytes()
    )
    response = client.post(
        "/v1/training-asset",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=XyZ"},
    )
    assert response.status_code == 400
    assert client.get("/v1/my-uploaded-assets").json()["total"] == 0


def test_processing_turns_ready_after_the_delay(tmp_path: Path, api_key: str) -> None:
    """A fresh upload is processing and reads as ready once processing_seconds have passed."""
    with (
        EmulatorServer(tmp_path, processing_seconds=0.3) as srv,
        http(srv.base_url, api_key) as c,
    ):
        started = time.monotonic()
        created = uploaded(c, image_bytes())
        assert created["status"] == "processing"

        def ready() -> bool:
            return bool(c.get(f"/v1/assets/{created['asset_id']}").json()["status"] == "ready")

        wait_for(ready)
        assert time.monotonic() - started >= 0.3
        record = c.get(f"/v1/assets/{created['asset_id']}").json()
        assert record["updated_at"] > record["created_at"]


def test_zero_processing_seconds_is_ready_at_once(tmp_path: Path, api_key: str) -> None:
    """processing_seconds=0 answers the upload already ready."""
    with (
        EmulatorServer(tmp_path, processing_seconds=0) as srv,
        http(srv.base_url, api_key) as c,
    ):
        assert uploaded(c, image_bytes())["status"] == "ready"


def test_identity_tag_works_as_tag_and_as_filter(client: httpx.Client) -> None:
    """A sha256:<hex> tag filters to exactly the asset that carries it."""
    contents = [image_bytes(seed=1), image_bytes(seed=2)]
    tags = [f"sha256:{hashlib.sha256(c).hexdigest()[:32]}" for c in contents]
    for content, tag in zip(contents, tags, strict=True):
        uploaded(client, content, tags=["shoes", tag])
    found = client.get("/v1/my-uploaded-assets", params={"tags": tags[1]}).json()
    assert found["total"] == 1
    assert found["assets"][0]["tags"] == ["shoes", tags[1]]
    both = client.get("/v1/my-uploaded-assets", params={"tags": f"shoes,{tags[0]}"}).json()
    assert [a["tags"][1] for a in both["assets"]] == [tags[0]]
    none = client.get("/v1/my-uploaded-assets", params={"tags": "sha256:0000"}).json()
    assert (none["total"], none["assets"], none["has_more"]) == (0, [], False)


def test_status_filter(tmp_path: Path, api_key: str) -> None:
    """status= selects by processing state; an unknown status is a 400."""
    with (
        EmulatorServer(tmp_path, processing_seconds=60) as srv,
        http(srv.base_url, api_key) as c,
    ):
        uploaded(c, image_bytes())
        listing = "/v1/my-uploaded-assets"
        assert c.get(listing, params={"status": "processing"}).json()["total"] == 1
        assert c.get(listing, params={"status": "ready"}).json()["total"] == 0
        assert c.get(listing, params={"status": "failed"}).json()["total"] == 0
        assert c.get(listing, params={"status": "bogus"}).status_code == 400


def test_library_survives_a_restart(tmp_path: Path, api_key: str) -> None:
    """A new server on the same data dir serves the same assets, bytes and hashes."""
    data = image_bytes("JPEG", seed=7)
    with EmulatorServer(tmp_path) as first, http(first.base_url, api_key) as c:
        created = uploaded(c, data, tags=["kept"])
    with EmulatorServer(tmp_path) as second, http(second.base_url, api_key) as c:
        again = c.get(f"/v1/assets/{created['asset_id']}").json()
        assert again["tags"] == ["kept"]
        assert c.get(again["url"]).content == data
        assert second.assets()[0]["sha256"] == hashlib.sha256(data).hexdigest()


def test_concurrent_uploads_are_all_stored(emulator: EmulatorServer, client: httpx.Client) -> None:
    """Eight threads uploading at once lose nothing and get distinct ids."""
    results: list[str] = []
    lock = threading.Lock()

    def work(worker: int) -> None:
        for i in range(5):
            asset_id = uploaded(client, image_bytes(seed=worker * 10 + i))["asset_id"]
            with lock:
                results.append(asset_id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 40
    assert {a["asset_id"] for a in emulator.assets()} == set(results)


def test_unknown_route_is_404_and_wrong_method_405(client: httpx.Client) -> None:
    """Routing errors are JSON errors too."""
    assert client.get("/v1/nothing-here").json()["error"]["code"] == "not_found"
    wrong = client.put("/v1/assets/abc")
    assert wrong.status_code == 405
    assert set(wrong.headers["Allow"].split(", ")) == {"GET", "DELETE"}


# --- faults ----------------------------------------------------------------------------


def test_error_rate_one_answers_5xx_and_stores_nothing(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """With error_rate=1 every API call gets a 500, 502 or 503 and nothing is stored."""
    emulator.set_faults(Faults(error_rate=1.0, seed=1))
    statuses = {post_image(client, image_bytes()).status_code for _ in range(12)}
    assert statuses <= {500, 502, 503}
    assert len(statuses) > 1
    assert emulator.assets() == []
    assert emulator.stats()["faults"]["error"] == 12


def test_rate_limit_answers_429_with_retry_after(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """A rate-limit fault is a 429 carrying Retry-After in whole seconds."""
    emulator.set_faults(Faults(rate_limit_rate=1.0, retry_after=2.5))
    response = client.get("/v1/my-uploaded-assets")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3"
    assert emulator.stats()["faults"]["rate_limit"] == 1


def test_ambiguous_failure_stores_the_upload_and_drops_the_connection(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """The asset is stored, yet the client sees a dropped connection and no status at all."""
    emulator.set_faults(Faults(ambiguous_rate=1.0))
    data = image_bytes(seed=3)
    with pytest.raises(httpx.RemoteProtocolError):
        post_image(client, data, tags=["sha256:abc"])
    assert [a["sha256"] for a in emulator.assets()] == [hashlib.sha256(data).hexdigest()]
    assert emulator.stats()["faults"]["ambiguous"] == 1
    emulator.set_faults(Faults())
    found = client.get("/v1/my-uploaded-assets", params={"tags": "sha256:abc"}).json()
    assert found["total"] == 1


def test_down_answers_503_to_the_api_but_not_to_inspection(
    emulator: EmulatorServer, client: httpx.Client
) -> None:
    """The down switch makes every /v1 call a 503, even unauthenticated; inspection still works."""
    emulator.set_faults(Faults(down=True))
    assert client.get("/v1/my-uploaded-assets").status_code == 503
    assert post_image(client, image_bytes()).status_code == 503
    assert httpx.get(f"{emulator.base_url}/v1/assets/x", verify=TLS).status_code == 503
    assert httpx.get(f"{emulator.base_url}/_emulator/state", verify=TLS).status_code == 200
    assert emulator.stats()["faults"]["down"] == 3
    emulator.set_faults(Faults())
    assert client.get("/v1/my-uploaded-assets").status_code == 200


def test_latency_delays_each_api_call(emulator: EmulatorServer, client: httpx.Client) -> None:
    """Added latency holds the answer back by at least that long."""
    emulator.set_faults(Faults(latency=0.2))
    started = time.monotonic()
    assert client.get("/v1/my-uploaded-assets").status_code == 200
    assert time.monotonic() - started >= 0.2
    assert emulator.stats()["faults"]["latency"] == 1


def test_same_seed_replays_the_same_faults(emulator: EmulatorServer, client: httpx.Client) -> None:
    """Two runs with one seed and one request order see the same sequence of answers."""

    def run() -> list[int]:
        emulator.set_faults(Faults(error_rate=0.3, rate_limit_rate=0.2, retry_after=0, seed=42))
        return [client.get("/v1/my-uploaded-assets").status_code for _ in range(30)]

    first, second = run(), run()
    assert first == second
    assert {200, 429} <= set(first)


def test_fault_settings_are_validated() -> None:
    """A rate outside 0..1 or a negative delay is refused when the settings are made."""
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="latency"):
        Faults(latency=-1)


# --- inspection and lifecycle ----------------------------------------------------------


def test_inspection_over_http(emulator: EmulatorServer, client: httpx.Client) -> None:
    """/_emulator/ shows assets with sha256 and counts, and changes faults, key and state."""
    data = image_bytes(seed=9)
    created = uploaded(client, data)
    inspect = http(f"{emulator.base_url}/_emulator")
    with inspect:
        state = inspect.get("/state").json()
        assert state["assets"][0]["asset_id"] == created["asset_id"]
        assert state["assets"][0]["sha256"] == hashlib.sha256(data).hexdigest()
        assert state["requests"]["POST /v1/training-asset"] == 1
        assert state["faults"] == dict.fromkeys(
            ["error", "rate_limit", "ambiguous", "latency", "down", "late", "churn"], 0
        )

        assert inspect.post("/faults", json={"down": True}).status_code == 200
        assert client.get("/v1/my-uploaded-assets").status_code == 503
        assert inspect.post("/faults", json={"error_rate": 7}).status_code == 400
        assert inspect.post("/faults", json={"typo": 1}).status_code == 400
        assert inspect.post("/faults", json={}).json()["fault_settings"]["down"] is False

        assert inspect.post("/api-key", json={"api_key": "other"}).status_code == 204
        assert client.get("/v1/my-uploaded-assets").status_code == 401
        client.headers["Authorization"] = "Bearer other"

        assert inspect.post("/reset").status_code == 204
        assert inspect.get("/state").json()["assets"] == []
        assert client.get("/v1/my-uploaded-assets").json()["total"] == 0
    assert emulator.stats()["requests"] == {"GET /v1/my-uploaded-assets": 1}


def test_stop_is_prompt_with_open_connections_and_leaks_no_thread(
    tmp_path: Path, api_key: str
) -> None:
    """stop() cuts idle keep-alive connections, joins every thread, and may be repeated."""
    before = set(threading.enumerate())
    srv = EmulatorServer(tmp_path)
    srv.start()
    with http(srv.base_url, api_key) as c:
        assert c.get("/v1/my-uploaded-assets").status_code == 200  # leaves a kept-alive socket
        started = time.monotonic()
        srv.stop()
        assert time.monotonic() - started < 2
        srv.stop()
        assert set(threading.enumerate()) <= before
        with pytest.raises(httpx.TransportError):
            c.get("/v1/my-uploaded-assets")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_command_line_serves_until_signalled(tmp_path: Path, sig: signal.Signals) -> None:
    """python -m syncd.emulator prints its URL (never the key), serves, and exits 0 on a signal."""
    env = {**os.environ, "SYNCD_EMULATOR_API_KEY": "cli-secret-key"}
    cmd = [sys.executable, "-m", "syncd.emulator", "--port", "0", "--data", str(tmp_path)]
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert url is not None, line
        auth = {"Authorization": "Bearer cli-secret-key"}
        assert (
            httpx.get(f"{url.group(0)}/v1/my-uploaded-assets", headers=auth, verify=TLS).status_code
            == 200
        )
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "cli-secret-key" not in line + out + err
    assert (tmp_path / "library.db").exists()


def _outward_address() -> str:
    """An address of this machine that is not loopback (the one a route outward uses)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("192.0.2.1", 9))  # no packet is sent: only the route is looked up
        return str(probe.getsockname()[0])


def test_control_endpoints_answer_loopback_clients_only(tmp_path: Path) -> None:
    """Bound to every address, /_emulator/* says 403 to a non-loopback peer, 200 to loopback."""
    import httpx

    from syncd.emulator import EmulatorServer

    server = EmulatorServer(tmp_path / "data", api_key="k", host="0.0.0.0")
    server.start()
    try:
        outward = _outward_address()
        assert not outward.startswith("127.")
        far = httpx.get(f"http://{outward}:{server.port}/_emulator/state", timeout=5)
        near = httpx.get(f"http://127.0.0.1:{server.port}/_emulator/state", timeout=5)
        api = httpx.get(
            f"http://{outward}:{server.port}/v1/my-uploaded-assets",
            headers={"Authorization": "Bearer k"},
            timeout=5,
        )
    finally:
        server.stop()
    assert far.status_code == 403 and near.status_code == 200 and api.status_code == 200
