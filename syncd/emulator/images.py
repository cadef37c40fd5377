"""Images as the service sees them: format by signature, real size, a thumbnail.

The format comes from the first bytes, never from the file name or the declared content
type, so a text file called ``x.jpg`` is refused (415) like the real service refuses it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image

THUMBNAIL_BOX = (256, 256)
_PILLOW_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}


class UndecodableImage(Exception):
    """The bytes carry an accepted signature but do not decode (truncated or corrupt)."""


@dataclass(frozen=True)
class Decoded:
    width: int
    height: int
    thumbnail_png: bytes


def sniff_format(data: bytes) -> str | None:
    """Name the format from its magic bytes: ``jpeg``, ``png``, ``webp``, or ``None``."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode(data: bytes, fmt: str) -> Decoded:
    """Decode in full (a header alone proves little) and render a PNG thumbnail."""
    try:
        with Image.open(io.BytesIO(data), formats=[_PILLOW_NAMES[fmt]]) as image:
            width, height = image.size
            if fmt == "jpeg":
                image.draft("RGB", THUMBNAIL_BOX)  # decode at a reduced scale: faster
            image.load()
            return Decoded(width, height, _thumbnail(image))
    except Exception as exc:  # Pillow raises many types on hostile bytes
        raise UndecodableImage(f"the {fmt} data cannot be decoded: {exc}") from exc


def _thumbnail(image: Image.Image) -> bytes:
    image.thumbnail(THUMBNAIL_BOX)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA")
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def tiny_png(seed: int) -> bytes:
    """A small PNG whose bytes differ per seed: what another client uploads (churn)."""
    image = Image.new("RGB", (8, 8), (seed & 255, (seed >> 8) & 255, (seed >> 16) & 255))
    image.putpixel((seed % 8, (seed >> 3) % 8), (255 - (seed & 255), 0, 0))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()
