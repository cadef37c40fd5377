"""Logging: JSON lines, console lines, stdlib routing, and secrets that never get out."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from syncd import log

SECRET = "sk-test-9c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f"


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test starts and ends with logging as it was."""
    root = logging.getLogger()
    level = root.level
    yield
    log.reset()
    root.setLevel(level)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def configured(fmt: str = "json", level: str = "info", **kw: Any) -> io.StringIO:
    stream = io.StringIO()
    log.configure(level=level, fmt=fmt, stream=stream, env={}, **kw)
    return stream


def fail_with_secret(key: str) -> None:
    local_marker = "LOCAL-VALUE-7f3e"  # must not be rendered: locals are left out
    raise RuntimeError(f"server refused key {key} ({len(local_marker)})")


def test_json_output_is_one_object_per_line() -> None:
    """Each event is one JSON object per line with event, level, logger and a UTC timestamp."""
    stream = configured()
    logger = structlog.get_logger("syncd.test")
    logger.info("upload.done", path=Path("/srv/a.jpg"), asset_id="a1")
    logger.warning("upload.slow", seconds=3.5)
    first, second = json_lines(stream)
    assert first["event"] == "upload.done"
    assert (first["level"], first["logger"]) == ("info", "syncd.test")
    assert (first["path"], first["asset_id"]) == ("/srv/a.jpg", "a1")
    assert datetime.fromisoformat(first["timestamp"]).utcoffset() is not None
    assert first["timestamp"].endswith("Z")
    assert (second["level"], second["seconds"]) == ("warning", 3.5)


def test_level_filters_events() -> None:
    """Events below the configured level are not written."""
    stream = configured(level="warning")
    logger = structlog.get_logger("syncd.test")
    logger.info("quiet")
    logger.error("loud")
    assert [line["event"] for line in json_lines(stream)] == ["loud"]


def test_secret_is_redacted_in_values_and_nested_values() -> None:
    """A registered secret is masked in the event, in values and deep in containers."""
    stream = configured(secrets=[SECRET])
    structlog.get_logger("syncd.test").info(
        f"sent {SECRET}",
        header=f"Bearer {SECRET}",
        nested={"list": [1, f"x{SECRET}x", {"deeper": (SECRET,)}]},
        obj=ValueError(SECRET),
    )
    output = stream.getvalue()
    assert SECRET not in output
    (line,) = json_lines(stream)
    assert line["event"] == "sent ***"
    assert line["header"] == "Bearer ***"
    assert line["nested"] == {"list": [1, "x***x", {"deeper": ["***"]}]}


def test_sensitive_key_names_are_masked_whatever_the_value() -> None:
    """Keys named like api_key, authorization, token or password are always masked."""
    stream = configured()
    structlog.get_logger("syncd.test").info(
        "request",
        api_key="unregistered-1",
        headers={"Authorization": "Bearer unregistered-2", "Accept": "image/*"},
        refresh_token="unregistered-3",
        password="unregistered-4",
        api_key_file="/etc/syncd/api_key",
    )
    (line,) = json_lines(stream)
    assert "unregistered" not in stream.getvalue()
    assert line["api_key"] == "***"
    assert line["headers"] == {"Authorization": "***", "Accept": "image/*"}
    assert line["api_key_file"] == "/etc/syncd/api_key"


def test_rotated_secret_from_a_provider_stays_masked() -> None:
    """A provider's current value is masked, and so are the values it returned before."""
    current = {"key": "rotating-key-aaaa"}
    stream = configured()
    log.add_secret(lambda: current["key"])
    logger = structlog.get_logger("syncd.test")
    logger.info("one", value="rotating-key-aaaa")
    current["key"] = "rotating-key-bbbb"
    logger.info("two", old="rotating-key-aaaa", new="rotating-key-bbbb")
    assert "rotating-key" not in stream.getvalue()


def test_failing_provider_does_not_break_logging() -> None:
    """A provider that raises (a key file gone) does not stop the event being written."""

    def broken() -> str:
        raise OSError("gone")

    stream = configured(secrets=[broken])
    structlog.get_logger("syncd.test").info("still.here")
    assert json_lines(stream)[0]["event"] == "still.here"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_exception_is_redacted_and_has_no_locals(fmt: str) -> None:
    """A traceback never shows the secret nor local variables, in JSON or console form."""
    stream = configured(fmt=fmt, secrets=[SECRET])
    key = SECRET
    try:
        fail_with_secret(key)
    except RuntimeError:
        structlog.get_logger("syncd.test").exception("upload.crashed")
    output = stream.getvalue()
    assert "upload.crashed" in output
    assert "fail_with_secret" in output
    assert "server refused key ***" in output
    assert SECRET not in output
    assert "LOCAL-VALUE-7f3e" not in output
    if fmt == "json":
        (line,) = json_lines(stream)
        frames = line["exception"][0]["frames"]
        assert all(not frame.get("locals") for frame in frames)


def test_console_mode_renders_readable_lines() -> None:
    """Console mode writes key=value lines, not JSON, with the secret masked."""
    stream = configured(fmt="console", secrets=[SECRET])
    structlog.get_logger("syncd.test").info("upload.done", asset_id="a1", key=SECRET)
    output = stream.getvalue()
    assert "upload.done" in output
    assert "asset_id=a1" in output
    assert "key=***" in output
    assert not output.lstrip().startswith("{")


def test_stdlib_records_share_the_pipeline() -> None:
    """stdlib loggers come out as the same JSON lines, redacted, with their logger name."""
    stream = configured(secrets=[SECRET])
    logging.getLogger("someapp").warning("token was %s", SECRET)
    (line,) = json_lines(stream)
    assert (line["event"], line["level"], line["logger"]) == ("token was ***", "warning", "someapp")
    assert "timestamp" in line


def test_noisy_libraries_are_kept_at_warning() -> None:
    """httpx and watchdog info/debug records are dropped even at debug level."""
    stream = configured(level="debug")
    logging.getLogger("httpx").info("HTTP Request: POST /v1/assets")
    logging.getLogger("httpcore.http11").debug("send_request_headers.started")
    logging.getLogger("watchdog.observers").debug("event")
    logging.getLogger("httpx").warning("kept")
    assert [line["event"] for line in json_lines(stream)] == ["kept"]


def test_default_stream_is_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a stream, lines go to sys.stderr as it is when they are written."""
    log.configure(fmt="json", env={})
    swapped = io.StringIO()
    monkeypatch.setattr("sys.stderr", swapped)
    structlog.get_logger("syncd.test").info("to.current")
    assert json_lines(swapped)[0]["event"] == "to.current"


def test_configure_twice_writes_each_event_once() -> None:
    """configure() is idempotent: a second call replaces the first, with no duplicates."""
    configured()
    stream = configured()
    structlog.get_logger("syncd.test").info("once")
    logging.getLogger("someapp").warning("also.once")
    assert [line["event"] for line in json_lines(stream)] == ["once", "also.once"]


def test_capture_logs_still_works_after_configure() -> None:
    """structlog's capture_logs sees event dicts, every level, and nothing reaches the stream."""
    stream = configured(level="warning")
    logger = structlog.get_logger("syncd.test")
    with capture_logs() as logs:
        logger.debug("file.seen", path="a.jpg")
        logger.info("upload.done", asset_id="a1")
    assert logs == [
        {"event": "file.seen", "path": "a.jpg", "log_level": "debug"},
        {"event": "upload.done", "asset_id": "a1", "log_level": "info"},
    ]
    assert stream.getvalue() == ""
    logger.error("after")
    assert [line["event"] for line in json_lines(stream)] == ["after"]


@pytest.mark.parametrize(
    ("fmt", "stream", "env", "expected"),
    [
        ("auto", Terminal(), {}, "console"),
        ("auto", io.StringIO(), {}, "json"),
        ("auto", Terminal(), {"JOURNAL_STREAM": "8:1234"}, "json"),
        ("auto", Terminal(), {"INVOCATION_ID": "abc"}, "json"),
        ("json", Terminal(), {}, "json"),
        ("console", io.StringIO(), {}, "console"),
    ],
)
def test_auto_format_follows_terminal_and_systemd(
    fmt: str, stream: io.StringIO, env: dict[str, str], expected: str
) -> None:
    """auto means JSON under systemd or off a terminal, console on a terminal; forced wins."""
    assert log.resolve_format(fmt, stream, env) == expected


def test_unknown_level_or_format_is_refused() -> None:
    """A level or format outside the known ones is a ValueError, not a silent default."""
    with pytest.raises(ValueError, match="level"):
        log.configure(level="loud", stream=io.StringIO())
    with pytest.raises(ValueError, match="format"):
        log.configure(fmt="xml", stream=io.StringIO())


def test_console_lines_show_control_characters_escaped() -> None:
    """An ESC (or any C0/C1 control) in a file name or a server message is printed escaped."""
    stream = configured(fmt="console")
    structlog.get_logger("syncd.test").warning(
        "file.failed", path="red\x1b[31m.jpg", reason="server said \x9b2J\x07 no"
    )
    output = stream.getvalue()
    assert "\x1b" not in output and "\x9b" not in output and "\x07" not in output
    assert "\\x1b[31m" in output and "x9b2J" in output and "x07 no" in output


def test_the_redactor_does_not_look_at_the_key_file_per_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Log lines are masked from the key as last read: no stat (or lock) of its file each line."""
    from syncd.apikey import ApiKey

    key_file = tmp_path / "api_key"
    key_file.write_text(SECRET)
    key_file.chmod(0o600)
    key = ApiKey(origin="api.api_key_file", file=key_file)
    stream = configured(fmt="json", secrets=[key.known])
    looked: list[Path] = []
    real_stat = Path.stat

    def counting_stat(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == key_file:
            looked.append(self)
        return real_stat(self, *args, **kwargs)

    structlog.get_logger("syncd.test").info("first", detail=f"key {SECRET}")
    monkeypatch.setattr(Path, "stat", counting_stat)
    for _ in range(50):
        structlog.get_logger("syncd.test").info("again", detail=f"key {SECRET}")
    assert looked == []
    assert SECRET not in stream.getvalue()
