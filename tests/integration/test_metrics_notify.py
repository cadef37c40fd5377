"""The Prometheus endpoint scraped over real HTTP, and the notify command run for real."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from syncd import log
from tests.running import Launcher
from tests.support import wait_until, write_image


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """GET /metrics and parse the text format: sample name -> [(labels, value)]."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert response.status_code == 200
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def value(
    samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    return next(v for lab, v in samples[name] if all(lab.get(k) == x for k, x in labels.items()))


def test_metrics_endpoint_serves_queue_uploads_and_health(
    start_daemon: Launcher, hot: Path
) -> None:
    """A scrape after two uploads and a bad file: counters, queue gauges, health, breaker."""
    log.configure("warning", "json")
    run = start_daemon(extra_api='\n[metrics]\nlisten = "127.0.0.1:0"\n')
    assert run.daemon.metrics is not None
    port = run.daemon.metrics.port
    write_image(hot / "a.jpg", 1)
    write_image(hot / "b.jpg", 2)
    (hot / "bad.jpg").write_text("not an image")
    run.wait_assets(2)
    wait_until(lambda: value(scrape(port), "syncd_failures_total", kind="file") == 1, 10)
    samples = scrape(port)
    assert value(samples, "syncd_uploads_total") == 2
    assert value(samples, "syncd_upload_bytes_total") > 0
    assert value(samples, "syncd_upload_duration_seconds_count") == 2
    assert value(samples, "syncd_failures_total", kind="file", reason="not an image") == 1
    assert value(samples, "syncd_queue_jobs", kind="file", state="failed") == 1
    assert value(samples, "syncd_queue_jobs", kind="upload", state="pending") == 0
    assert value(samples, "syncd_held_deletions") == 0
    assert value(samples, "syncd_folder_health", folder=str(hot), health="ok") == 1
    assert value(samples, "syncd_api_breaker_state") == 0
    assert value(samples, "syncd_last_upload_timestamp_seconds") > 1_700_000_000


def test_notify_command_gets_one_json_message_for_a_burst(
    start_daemon: Launcher, hot: Path, tmp_path: Path
) -> None:
    """Five files fail at once: the command runs once (no shell), JSON on stdin, all five."""
    out = tmp_path / "messages.jsonl"
    script = f"import sys; open({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')"
    command = json.dumps([sys.executable, "-c", script])
    log.configure("warning", "json")  # as the CLI does: events reach their observers
    run = start_daemon(extra_api=f"\n[notify]\ncommand = {command}\n")
    for i in range(5):
        (hot / f"bad{i}.jpg").write_text(f"not an image; $(touch {tmp_path}/pwned)")
    wait_until(lambda: out.exists() and out.read_text().strip(), 20, message="a message")
    wait_until(lambda: len(run.jobs("state = 'failed'")) == 5, 20, message="five failures")
    run.stop()  # flushes anything gathered since
    messages = [json.loads(line) for line in out.read_text().splitlines() if line]
    events = [e for m in messages for e in m["events"]]
    assert len(messages) == 1, messages
    assert messages[0]["counts"] == {"file_failed": 5}
    assert sorted(e["path"] for e in events) == [f"bad{i}.jpg" for i in range(5)]
    assert "5 file failed" in messages[0]["summary"]
    assert not (tmp_path / "pwned").exists()


def test_delete_done_names_the_file_and_lists_its_tags(start_daemon: Launcher, hot: Path) -> None:
    """`delete.done` carries the deleted file's path and its tags as a list, not a string."""
    log.configure("warning", "json")
    events: list[tuple[str, dict[str, object]]] = []
    stop = log.observe(lambda name, fields: events.append((name, dict(fields))))
    try:
        run = start_daemon()
        write_image(hot / "red" / "a.jpg", 5)
        run.wait_assets(1)
        (hot / "red" / "a.jpg").unlink()
        run.wait_assets(0)
    finally:
        stop()
    done = [fields for name, fields in events if name == "delete.done"]
    assert len(done) == 1
    assert done[0]["path"] == "red/a.jpg" and done[0]["tags"] == ["studio", "red"]
