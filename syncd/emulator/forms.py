"""Request bodies read with a bound: an upload form streams through, never buffered whole.

A body must announce its length (``Content-Length``); without one the answer is 411.
The file part is kept up to 10 MiB and merely counted past that, so a client that sends
megabytes of garbage costs the emulator a bounded buffer, and still gets its 413 as an
answer instead of a broken pipe: the rest of the body is read and thrown away (up to
:data:`DRAIN_LIMIT`; past that the connection is closed after the answer).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import parse_options_header

from .wire import ApiError, bad_request

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MAX_FILE_BYTES = 10 * 1024 * 1024
FORM_OVERHEAD = 1024 * 1024  # room for the other fields and part headers
MAX_FIELD_BYTES = 64 * 1024
MAX_PARTS = 1000
MAX_JSON_BYTES = 64 * 1024
DRAIN_LIMIT = 64 * 1024 * 1024
CHUNK = 64 * 1024


class ClientGone(Exception):
    """The client closed its side before the body was complete: nobody to answer."""


class Readable(Protocol):
    def read(self, size: int, /) -> bytes: ...


class Body:
    """The request body, read at most once, in chunks."""

    def __init__(self, rfile: Readable, length: int | None) -> None:
        self._rfile = rfile
        self.length = length
        self.remaining = length or 0

    def chunks(self) -> Iterator[bytes]:
        while self.remaining > 0:
            try:
                data = self._rfile.read(min(CHUNK, self.remaining))
            except OSError as exc:  # reset, or the socket timeout on a stalled client
                raise ClientGone(str(exc)) from exc
            if not data:
                raise ClientGone("the body ended early")
            self.remaining -= len(data)
            yield data

    def read_all(self, limit: int) -> bytes:
        if self.remaining > limit:
            raise ApiError(413, "payload_too_large", f"the body is limited to {limit} bytes")
        return b"".join(self.chunks())

    def drain(self) -> bool:
        """Read what is left so the connection can carry the next request; False if too much."""
        if self.remaining > DRAIN_LIMIT:
            return False
        for _ in self.chunks():
            pass
        return True


@dataclass
class UploadForm:
    file: bytes | None = None
    filename: str | None = None
    content_type: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)
    url: str | None = None


def read_upload(body: Body, content_type: str | None) -> UploadForm:
    if body.length is None:
        raise ApiError(411, "length_required", "send the body with a Content-Length")
    if body.length > MAX_FILE_BYTES + FORM_OVERHEAD:
        raise _too_large()
    kind, params = parse_options_header(content_type)
    if kind == b"application/json":
        return _json_form(body.read_all(MAX_JSON_BYTES))
    if kind == b"multipart/form-data" and params.get(b"boundary"):
        return _multipart_form(body, params[b"boundary"])
    raise bad_request("send multipart/form-data (a file) or application/json (a url)")


def _too_large() -> ApiError:
    return ApiError(413, "file_too_large", f"files are limited to {MAX_FILE_BYTES} bytes")


def _json_form(raw: bytes) -> UploadForm:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise bad_request("the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    url, name, tags = data.get("url"), data.get("name"), data.get("tags", [])
    if url is not None and not isinstance(url, str):
        raise bad_request("url must be a string")
    if name is not None and not isinstance(name, str):
        raise bad_request("name must be a string")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise bad_request("tags must be a list of strings")
    return UploadForm(url=url, name=name, tags=tags)


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    content_type: str | None = None
    data: bytearray = field(default_factory=bytearray)
    cap: int = MAX_FIELD_BYTES
    overflow: bool = False

    def resolve(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition"))
        self.name = params.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" in params:
            self.filename = params[b"filename"].decode("utf-8", "replace")
        if b"content-type" in self.headers:
            self.content_type = self.headers[b"content-type"].decode("latin-1")
        self.cap = MAX_FILE_BYTES if self.name == "file" else MAX_FIELD_BYTES

    def add(self, chunk: bytes) -> None:
        if self.overflow or len(self.data) + len(chunk) > self.cap:
            self.overflow = True
            self.data.clear()
        else:
            self.data += chunk


class _Collector:
    """Callbacks for the streaming parser; keeps each part within its cap."""

    def __init__(self) -> None:
        self.parts: list[_Part] = []
        self._part = _Part()
        self._field = bytearray()
        self._value = bytearray()
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_done,
            "on_part_data": lambda d, s, e: self._part.add(d[s:e]),
            "on_part_end": lambda: self.parts.append(self._part),
            "on_end": self._end,
        }

    def _begin(self) -> None:
        if len(self.parts) >= MAX_PARTS:
            raise bad_request(f"a form has at most {MAX_PARTS} parts")
        self._part = _Part()

    def _headers_done(self) -> None:
        self._part.resolve()

    def _end(self) -> None:
        self.ended = True

    def _header_end(self) -> None:
        self._part.headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()


def _multipart_form(body: Body, boundary: bytes) -> UploadForm:
    collector = _Collector()
    try:
        parser = MultipartParser(boundary, collector.callbacks())
        for chunk in body.chunks():
            parser.write(chunk)
        parser.finalize()
    except (MultipartParseError, FormParserError) as exc:
        raise bad_request(f"the multipart body cannot be parsed: {exc}") from exc
    if not collector.ended:
        raise bad_request("the multipart body ends before its closing boundary")
    return _assemble(collector.parts)


def _assemble(parts: list[_Part]) -> UploadForm:
    files = [p for p in parts if p.name == "file"]
    if len(files) > 1:
        raise bad_request("send exactly one file part")
    form = UploadForm()
    if files:
        part = files[0]
        if part.overflow:
            raise _too_large()
        form.file, form.filename = bytes(part.data), part.filename
        form.content_type = part.content_type
    for part in parts:
        if part.name in ("name", "url", "tags[]", "tags"):
            _apply_field(form, part.name, _text(part))
    return form


def _apply_field(form: UploadForm, name: str, value: str) -> None:
    if name in ("tags[]", "tags"):
        form.tags.append(value)
    elif name == "name":
        form.name = value
    else:
        form.url = value


def _text(part: _Part) -> str:
    if part.overflow:
        raise bad_request(f"field {part.name!r} is longer than {MAX_FIELD_BYTES} bytes")
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise bad_request(f"field {part.name!r} is not UTF-8") from exc
