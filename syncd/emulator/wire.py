"""What goes over the wire: answers, and errors shaped as the Assets API shapes them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """One answer: ``payload`` goes out as JSON, ``content`` as is; neither, an empty body."""

    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content: bytes | None = None
    content_type: str = "application/json"

    def body(self) -> bytes:
        if self.content is not None:
            return self.content
        if self.payload is None:
            return b""
        return json.dumps(self.payload, separators=(",", ":")).encode()


class ApiError(Exception):
    """Raised anywhere in a handler; becomes ``{"error": {"code", "message"}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    def reply(self) -> Reply:
        return error_reply(self.status, self.code, self.message, self.headers)


def error_reply(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}}, dict(headers or {}))


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)
