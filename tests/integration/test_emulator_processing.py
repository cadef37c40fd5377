"""The emulator's processing model: delay, failure rate and reasons, replayable by seed."""

from __future__ import annotations

from pathlib import Path

from syncd.emulator import EmulatorServer
from tests.integration.test_emulator import http, image_bytes, uploaded


def outcomes(tmp_path: Path, api_key: str, seed: int) -> list[tuple[str, str | None]]:
    """Upload ten images with half failing; the (status, reason) of each, once settled."""
    with (
        EmulatorServer(
            tmp_path, api_key=api_key, processing_seconds=0, failure_rate=0.5,
            failure_reasons=("blurred", "blank"), processing_seed=seed,
        ) as srv,
        http(srv.base_url, api_key) as c,
    ):  # fmt: skip
        ids = [uploaded(c, image_bytes(seed=i))["asset_id"] for i in range(10)]
        records = [c.get(f"/v1/assets/{asset_id}").json() for asset_id in ids]
        listed = c.get("/v1/my-uploaded-assets", params={"status": "failed"}).json()
    failed = {a["asset_id"]: a["failure_reason"] for a in listed["assets"]}
    assert failed == {
        r["asset_id"]: r["failure_reason"] for r in records if r["status"] == "failed"
    }
    return [(r["status"], r["failure_reason"]) for r in records]


def test_a_seed_replays_the_same_failures_with_reasons(tmp_path: Path, api_key: str) -> None:
    """Same seed, same outcomes; failed assets carry one of the reasons, ready ones none."""
    first = outcomes(tmp_path / "a", api_key, seed=7)
    assert first == outcomes(tmp_path / "b", api_key, seed=7)
    assert {s for s, _ in first} == {"ready", "failed"}
    assert all((r in ("blurred", "blank")) == (s == "failed") for s, r in first)
