"""What an image file becomes on the wire; the only module that imports Pillow.

The API takes JPEG, PNG and WebP up to ``MAX_UPLOAD_BYTES``. Everything is decided from
the content (its signature), never from the file name, and a file that cannot go up as
it is raises :class:`~syncd.errors.FileProblem` with a reason meant for people.

Choices worth knowing:

* An image the API takes, within the limit, is fully decoded once (a truncated upload
  would be accepted by the API and be useless later) and then sent byte for byte.
* Re-encoding (``oversize = "downscale"``, or a format listed in ``convert``) writes JPEG
  for opaque images, which is what a studio expects of a photo. An image whose alpha
  channel is really used keeps it: a converted cut-out goes out as lossless PNG, and a
  downscaled one as WebP, the one accepted format that is both lossy and transparent.
* Re-encoding applies the EXIF orientation, keeps the EXIF block (orientation reset) and
  an ICC profile that fits the pixels; CMYK goes to sRGB through its own profile.
* A converted file that is still over the limit follows the folder's ``oversize``.
* Memory is bounded: the whole prepare step (decode, convert, downscale, encode) runs
  in one slot (:func:`slot`, reentrant, held by the uploader from reading the source on),
  so at most one image is in memory at a time; and an image over ``MAX_PIXELS`` is not
  decoded at all (its size is read from the header first). Pillow's own bomb warning is
  switched off for that reason: its ``warnings`` filters are process-wide and not
  thread-safe, so the limit is checked here instead.
"""

from __future__ import annotations

import importlib
import io
import math
import struct
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any

from syncd.config import CONVERTIBLE
from syncd.errors import FileProblem
from syncd.hashing import MAX_UPLOAD_BYTES

if TYPE_CHECKING:
    from PIL import Image

HEAD_BYTES = 64  # how much of a file's start check_header needs to tell its format

ACCEPTED = ("jpeg", "png", "webp")

_CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
_SUFFIXES = {"jpeg": (".jpg", ".jpeg", ".jpe", ".jfif"), "png": (".png",), "webp": (".webp",)}
_PILLOW_NAMES = {fmt: fmt.upper() for fmt in ACCEPTED + CONVERTIBLE} | {"heic": "HEIF"}
_SIGNATURES = (
    (b"\xff\xd8\xff", "jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),  # BigTIFF
    (b"MM\x00+", "tiff"),
)
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_HEIF_GENERIC = {b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}
_MAX_SIDE = {"jpeg": 65_500, "webp": 16_383, "png": 1 << 31}
_CONVERT_QUALITY = 92
_QUALITIES = (90, 85, 80, 75)
_SHRINK = 0.85  # at most this much of the previous scale per resizing step
_MIN_SIDE = 320  # below this a product image is no longer worth sending
_JPEG_EXIF_MAX = 65_000  # the EXIF block must fit in one JPEG APP1 segment
MAX_SOURCE_BYTES = 256 * 1024 * 1024  # bounds the memory a re-encode may take
_HEIC_EXTRA = "pip install 'syncd[heic]'"
_ASK_DOWNSCALE = 'set oversize = "downscale" for this folder to send a smaller copy'
# What Pillow raises on damaged input; none of these is a bug of ours.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
#: The largest image decoded (Pillow's default bomb limit): 89.5 megapixels. An 88 MP
#: TIFF's conversion peaks near 650 MB (README, "Memory"), and only one runs at a time.
MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3
_slot = threading.RLock()


def _pillow() -> ModuleType:
    """Pillow's ``Image``, imported on first use: the daemon need not load it to start."""
    from PIL import Image  # noqa: PLC0415

    Image.MAX_IMAGE_PIXELS = None  # checked in _decoded, without the warnings module
    return Image


def slot() -> threading.RLock:
    """The one prepare slot: hold it from reading a source to having its upload bytes."""
    return _slot


#: Camera raw files: never "converted" from the small preview some of them embed.
RAW_SUFFIXES = (".dng", ".cr2", ".cr3", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf",
                ".orf", ".rw2", ".pef", ".raw")  # fmt: skip
CAMERA_RAW = "camera raw: export JPEG/PNG/WebP"
_RAW_SIGNATURES = (b"IIRO", b"IIRS", b"MMOR", b"IIU\x00", b"FUJIFILMCCD-RAW")


class CameraRaw(FileProblem):
    """A camera raw file: left alone, reported once per folder (not a failure per file)."""

    def __init__(self) -> None:
        super().__init__(CAMERA_RAW)


def is_camera_raw(head: bytes, filename: str) -> bool:
    """By name, or by a signature only raw formats use (CR2, CR3, ORF, RW2, RAF)."""
    if _suffix(filename) in RAW_SUFFIXES or head.startswith(_RAW_SIGNATURES):
        return True
    if head[:4] == b"II*\x00" and head[8:10] == b"CR":
        return True  # Canon CR2: TIFF-based, with "CR" after the header
    return head[4:8] == b"ftyp" and head[8:12] == b"crx "  # Canon CR3


@dataclass(frozen=True)
class Prepared:
    """The bytes to POST and how to describe them; ``adapted`` notes any change made."""

    data: bytes
    filename: str
    content_type: str
    format: str
    adapted: str | None = None


def check_header(
    head: bytes,
    size: int,
    filename: str,
    *,
    oversize: str = "fail",
    convert: Sequence[str] = (),
    limit: int = MAX_UPLOAD_BYTES,
) -> None:
    """Refuse early what the first ``HEAD_BYTES`` and the size already condemn.

    Spares the uploader reading a large file only to learn it cannot be sent. A format
    listed in ``convert`` is not judged on size here: its re-encoded size is unknown yet.
    """
    if size == 0:
        raise FileProblem("empty file")
    if is_camera_raw(head, filename):
        raise CameraRaw
    fmt = sniff(head)
    if fmt is None:
        raise FileProblem(_not_an_image(head, filename))
    if fmt not in ACCEPTED:
        _check_convertible(fmt, convert)
    elif size > limit and oversize == "fail":
        raise FileProblem(f"too large: {_mb(size)}, {_at_most(limit)}; {_ASK_DOWNSCALE}")
    if size > max(limit, MAX_SOURCE_BYTES):
        raise FileProblem(
            f"too large: {_mb(size)}; syncd makes smaller copies of files up to "
            f"{_mb(MAX_SOURCE_BYTES)}"
        )


def prepare(
    data: bytes,
    filename: str,
    *,
    oversize: str = "fail",
    convert: Sequence[str] = (),
    limit: int = MAX_UPLOAD_BYTES,
) -> Prepared:
    """Return what to upload for these file bytes, or raise FileProblem saying why not.

    Runs in the prepare slot (see :func:`slot`): one image in memory at a time.
    """
    with _slot:
        return _prepare(data, filename, oversize=oversize, convert=convert, limit=limit)


def _prepare(
    data: bytes, filename: str, *, oversize: str, convert: Sequence[str], limit: int
) -> Prepared:
    check_header(
        data[:HEAD_BYTES], len(data), filename, oversize=oversize, convert=convert, limit=limit
    )
    fmt = sniff(data[:HEAD_BYTES])
    assert fmt is not None  # check_header refused everything else
    if fmt in ACCEPTED and len(data) <= limit:
        with _decoded(data, fmt, reduce=True):
            pass  # decoding every pixel is the check: a cut file must not go up
        return Prepared(data, _named(filename, fmt), _CONTENT_TYPES[fmt], fmt)
    return _reencode(data, filename, fmt, oversize=oversize, limit=limit)


def sniff(head: bytes) -> str | None:
    """Name the format from the signature: jpeg, png, webp or a CONVERTIBLE one."""
    for magic, fmt in _SIGNATURES:
        if head.startswith(magic):
            return fmt
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _iso_image_brand(head)
    return None


def _iso_image_brand(head: bytes) -> str | None:
    """Tell HEIC and AVIF from other ISO media files (MP4, MOV) by their brands."""
    box_end = min(len(head), struct.unpack_from(">I", head, 0)[0])
    brands = {head[8:12]} | {head[i : i + 4] for i in range(16, box_end - 3, 4)}
    if brands & _AVIF_BRANDS:
        return "avif"
    if brands & _HEIC_BRANDS or head[8:12] in _HEIF_GENERIC:
        return "heic"
    return None


def _check_convertible(fmt: str, convert: Sequence[str]) -> None:
    """``convert`` comes checked from the config: a subset of CONVERTIBLE."""
    if fmt not in convert:
        hint = f'; add "{fmt}" to convert for this folder' if fmt in CONVERTIBLE else ""
        if fmt == "heic" and not _heif_ready():
            hint += f" and install the heic extra ({_HEIC_EXTRA})"
        raise FileProblem(f"unsupported format {fmt}: the API takes JPEG, PNG, WebP{hint}")
    if fmt == "heic" and not _heif_ready():
        raise FileProblem(f"cannot convert heic: the heic extra is not installed ({_HEIC_EXTRA})")


def _heif_ready() -> bool:
    """Import pillow-heif on first need; registering its opener is idempotent."""
    try:
        heif = importlib.import_module("pillow_heif")
    except ImportError:
        return False
    if _PILLOW_NAMES["heic"] not in _pillow().OPEN:
        heif.register_heif_opener()
    return True


def _not_an_image(head: bytes, filename: str) -> str:
    suffix = _suffix(filename)
    named = f"the file is named {suffix} but " if suffix else ""
    reason = f"not an image: {named}the content is not JPEG, PNG or WebP"
    looks = _looks_like(head)
    return f"{reason} ({looks})" if looks else reason


def _looks_like(head: bytes) -> str | None:
    """A hint for the usual suspects: a saved error page, a PDF, a video."""
    start = head.lstrip().lower()
    if start.startswith((b"<!doctype html", b"<html")):
        return "it looks like a web page"
    if start.startswith(b"%pdf"):
        return "it looks like a PDF"
    if head[4:8] == b"ftyp":
        return "it looks like a video"
    if head.isascii() and all(b >= 0x20 or b in b"\t\r\n" for b in head):
        return "it looks like text"
    return None


@contextmanager
def _decoded(data: bytes, fmt: str, *, reduce: bool = False) -> Iterator[Image.Image]:
    """The fully loaded image, closed on exit; ``reduce`` lets JPEG decode at 1/8 scale.

    A reduced JPEG decode still reads the whole entropy-coded stream, so truncation is
    found just the same with a fraction of the memory.
    """
    with _as_file_problem():
        image = _pillow().open(io.BytesIO(data), formats=[_PILLOW_NAMES[fmt]])
        try:
            _check_pixels(image)
            if reduce and fmt == "jpeg":
                image.draft(None, (1, 1))
            image.load()
        except BaseException:
            image.close()
            raise
    with image:
        yield image


def _check_pixels(image: Image.Image) -> None:
    """Refuse, from the header alone, an image too large to decode within the memory bound."""
    if image.width * image.height > MAX_PIXELS:
        raise FileProblem(
            f"image too large to decode safely ({image.width}x{image.height},"
            f" over {MAX_PIXELS:,} pixels)"
        )


@contextmanager
def _as_file_problem() -> Iterator[None]:
    """Pillow's complaints about the content, said as a FileProblem."""
    try:
        yield
    except _DECODE_ERRORS as exc:
        detail = str(exc).strip() or type(exc).__name__
        raise FileProblem(f"truncated or corrupt image: {detail}") from exc


# --- re-encoding -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Extras:
    """Metadata that travels with the pixels into the new file."""

    icc_profile: bytes | None
    exif: bytes | None


def _reencode(data: bytes, filename: str, fmt: str, *, oversize: str, limit: int) -> Prepared:
    with _decoded(data, fmt) as source:
        animated = bool(getattr(source, "is_animated", False)) and source.format != "MPO"
        image, extras = _normalised(source)
        try:
            out, target, notes = _sized(
                image, extras, fmt, len(data), oversize=oversize, limit=limit
            )
        finally:
            if image is not source:
                image.close()
    if animated:
        notes.append("first frame only")
    return Prepared(out, _named(filename, target), _CONTENT_TYPES[target], target, "; ".join(notes))


def _sized(
    image: Image.Image, extras: _Extras, fmt: str, size: int, *, oversize: str, limit: int
) -> tuple[bytes, str, list[str]]:
    """Encode for upload: a converted file as is if it fits, else down the ladder."""
    opaque = image.mode in ("RGB", "L")
    if fmt in ACCEPTED:
        target, notes = ("jpeg" if opaque else "webp"), []
    else:
        target, notes = ("jpeg" if opaque else "png"), [f"converted from {fmt}"]
        out = _encode(image, target, _CONVERT_QUALITY, extras)
        if len(out) <= limit:
            return out, target, notes
        if oversize == "fail":
            raise FileProblem(
                f"too large after converting from {fmt}: {_mb(len(out))} as "
                f"{target.upper()}, {_at_most(limit)}; {_ASK_DOWNSCALE}"
            )
        target, size = ("jpeg" if opaque else "webp"), len(out)
    out, how = _fit(image, target, extras, limit)
    notes.append(f"downscaled from {_mb(size)} ({how})")
    return out, target, notes


def _normalised(source: Image.Image) -> tuple[Image.Image, _Extras]:
    """Upright pixels in a mode JPEG (RGB, L) or an alpha format (RGBA) can carry."""
    from PIL import ImageOps  # noqa: PLC0415  (only a re-encode needs it)

    icc = source.info.get("icc_profile") or None
    try:
        ImageOps.exif_transpose(source, in_place=True)
        exif = source.getexif()
        exif_bytes = exif.tobytes() if len(exif) else None
    except _DECODE_ERRORS:
        exif_bytes = None  # damaged EXIF: send the pixels without it
    with _as_file_problem():
        image, icc = _to_output_mode(source, icc)
    if icc is not None and _icc_space(icc) != ("GRAY" if image.mode == "L" else "RGB"):
        icc = None  # a profile that does not describe these pixels would mislead
    return image, _Extras(icc, exif_bytes)


def _to_output_mode(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    mode = image.mode
    if mode == "CMYK":
        return _cmyk_to_rgb(image, icc)
    if mode.startswith("I") or mode == "F":
        return _to_eight_bit(image), icc
    if mode in ("RGB", "L"):
        return image, icc
    if mode == "1":
        return image.convert("L"), icc
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        if rgba.getchannel("A").getextrema() != (255, 255):
            return rgba, icc
        rgba.close()
    return image.convert("L" if mode in ("LA", "La") else "RGB"), icc


def _cmyk_to_rgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Use the file's own CMYK profile when it has one; a plain formula otherwise."""
    from PIL import ImageCms  # noqa: PLC0415  (only a CMYK conversion needs it)

    if icc is not None and _icc_space(icc) == "CMYK":
        try:
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            rgb = ImageCms.profileToProfile(image, source, srgb, outputMode="RGB")
        except (ImageCms.PyCMSError, *_DECODE_ERRORS):
            rgb = None
        if rgb is not None:
            return rgb, srgb.tobytes()
    return image.convert("RGB"), None


def _to_eight_bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit samples down; Pillow's own conversion clips everything over 255."""
    if image.mode == "F":
        return image.convert("L")
    with image.convert("I") as wide:
        high = wide.getextrema()[1]
        assert isinstance(high, int | float)
        if not image.mode.startswith("I;16") and high <= 255:
            return wide.convert("L")
        with wide.point(lambda value: value * (1 / 256)) as scaled:
            return scaled.convert("L")


def _icc_space(icc: bytes) -> str:
    """The colour space an ICC profile declares (header bytes 16-19)."""
    return icc[16:20].decode("ascii", "replace").strip()


def _fit(image: Image.Image, fmt: str, extras: _Extras, limit: int) -> tuple[bytes, str]:
    """Step quality down, then size, until the encoded image fits under the limit."""
    scale = min(1.0, _MAX_SIDE[fmt] / max(image.size))  # WebP stops at 16383 pixels
    qualities = list(_QUALITIES if scale == 1.0 else _QUALITIES[-1:])
    while True:
        size = (max(1, int(image.width * scale)), max(1, int(image.height * scale)))
        if max(size) < _MIN_SIDE:
            raise FileProblem(
                f"too large: could not bring the image under {_mb(limit)} "
                f"without shrinking it below {_MIN_SIDE} pixels"
            )
        out = _encode(image, fmt, qualities[0], extras, size)
        if len(out) <= limit:
            resized = "" if size == image.size else f", resized to {size[0]}x{size[1]}"
            return out, f"quality {qualities[0]}{resized}"
        if len(qualities) > 1:
            qualities.pop(0)
        else:  # encoded size follows the pixel count, so aim straight for the limit
            scale *= min(_SHRINK, 0.95 * math.sqrt(limit / len(out)))


def _encode(
    image: Image.Image, fmt: str, quality: int, extras: _Extras, size: tuple[int, int] | None = None
) -> bytes:
    if size is not None and size != image.size:
        with image.resize(size, _pillow().Resampling.LANCZOS, reducing_gap=3.0) as smaller:
            return _encode(smaller, fmt, quality, extras)
    options: dict[str, Any] = {} if fmt == "png" else {"quality": quality}
    if fmt == "jpeg":
        options["optimize"] = True
    if extras.icc_profile is not None:
        options["icc_profile"] = extras.icc_profile
    if extras.exif is not None and (fmt != "jpeg" or len(extras.exif) <= _JPEG_EXIF_MAX):
        options["exif"] = extras.exif
    buffer = io.BytesIO()
    image.save(buffer, format=_PILLOW_NAMES[fmt], **options)
    return buffer.getvalue()


# --- names and sizes ---------------------------------------------------------------------


def _named(filename: str, fmt: str) -> str:
    """Keep the name; make its extension say what is really sent."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if _suffix(name) in _SUFFIXES[fmt]:
        return name
    stem, dot, _ = name.rpartition(".")
    return f"{stem if dot and stem else name}{_SUFFIXES[fmt][0]}"


def _suffix(filename: str) -> str:
    stem, dot, ext = filename.rpartition(".")
    return f".{ext.lower()}" if dot and stem and "/" not in ext else ""


def _at_most(limit: int) -> str:
    return f"the API takes at most {_mb(limit)}"


def _mb(size: int) -> str:
    """Sizes in the API's megabytes (2**20 bytes): "10 MB", "14.2 MB"."""
    value = size / (1024 * 1024)
    return f"{value:.0f} MB" if value == int(value) else f"{value:.1f} MB"
