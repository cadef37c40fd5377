"""imaging: what a file's bytes become on the wire, or why they cannot go up."""

from __future__ import annotations

import io
import itertools
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image, ImageCms, ImageFile

from syncd import imaging
from syncd.errors import FileProblem

MB = 1024 * 1024


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """Random pixels: the worst case for every codec, so files come out big."""
    bands = len(mode)
    return Image.frombytes(mode, (width, height), os.urandom(width * height * bands))


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def centre(image: Image.Image) -> tuple[int, ...]:
    pixel = image.getpixel((image.width // 2, image.height // 2))
    assert isinstance(pixel, tuple)
    return tuple(int(band) for band in pixel)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds no pixels: enough to trip the bomb guard."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body)
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def fixed(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def grey_cmyk_profile() -> bytes:
    """A tiny valid CMYK ICC profile that maps every ink to grey (so its use is visible).

    Lightness falls by a quarter for each of C, M, Y and to zero with K; colour stays 0.
    """
    clut = b""
    for cyan, magenta, yellow, black in itertools.product((0, 1), repeat=4):
        lightness = (1 - black) * (1 - 0.25 * (cyan + magenta + yellow))
        clut += struct.pack(">HHH", round(lightness * 0xFF00), 0x8000, 0x8000)
    identity = b"".join(fixed(float(row == col)) for row in range(3) for col in range(3))
    ramp = struct.pack(">HH", 0, 0xFFFF)
    lut = b"mft2" + bytes(4) + bytes([4, 3, 2, 0]) + identity + struct.pack(">HH", 2, 2)
    lut += ramp * 4 + clut + ramp * 3 + bytes(-len(lut + clut) % 4)
    white = b"XYZ " + bytes(4) + fixed(0.9642) + fixed(1.0) + fixed(0.8249)
    tags = [(b"A2B0", lut), (b"wtpt", white)]
    offset, table, body = 128 + 4 + 12 * len(tags), b"", b""
    for signature, data in tags:
        table += signature + struct.pack(">II", offset + len(body), len(data))
        body += data
    header = struct.pack(">I", offset + len(body)) + b"lcms" + struct.pack(">I", 0x02100000)
    header += b"prtrCMYKLab " + bytes(12) + b"acsp" + bytes(28)
    header += fixed(0.9642) + fixed(1.0) + fixed(0.8249) + bytes(48)
    return header + struct.pack(">I", len(tags)) + table + body


def reason(call: Callable[[], object]) -> str:
    with pytest.raises(FileProblem) as caught:
        call()
    return caught.value.reason


@pytest.fixture(scope="module")
def big_png() -> bytes:
    """A 10.3 MB noise PNG: just over the API's limit."""
    data = encode(noise(1900, 1900), "PNG", compress_level=0)
    assert len(data) > imaging.MAX_UPLOAD_BYTES
    return data


SMALL = noise(64, 48)
JPEG = encode(SMALL, "JPEG", quality=95)
PNG = encode(SMALL, "PNG")
WEBP = encode(SMALL, "WEBP", quality=90)
HEIC_HEAD = struct.pack(">I", 24) + b"ftypheic" + b"\0\0\0\0" + b"mif1heic" + b"\0" * 40


# --- accepted as they are ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "name", "fmt", "content_type"),
    [
        (JPEG, "shot.jpg", "jpeg", "image/jpeg"),
        (JPEG, "shot.JPEG", "jpeg", "image/jpeg"),
        (PNG, "shot.png", "png", "image/png"),
        (WEBP, "shot.webp", "webp", "image/webp"),
    ],
    ids=["jpg", "JPEG", "png", "webp"],
)
def test_accepted_formats_go_up_unchanged(data: bytes, name: str, fmt: str, content_type: str):
    """A valid JPEG, PNG or WebP within the limit is sent byte for byte, under its name."""
    prepared = imaging.prepare(data, name)
    assert prepared == imaging.Prepared(data, name, content_type, fmt, None)


@pytest.mark.parametrize(
    ("name", "sent_as"),
    [("shot.jpg", "shot.png"), ("shot", "shot.png"), ("a.b.jpeg", "a.b.png")],
)
def test_format_comes_from_content_not_name(name: str, sent_as: str):
    """A PNG named like a JPEG is sent as PNG, with its extension and content type fixed."""
    prepared = imaging.prepare(PNG, name)
    assert (prepared.data, prepared.format, prepared.content_type) == (PNG, "png", "image/png")
    assert prepared.filename == sent_as
    assert prepared.adapted is None


# --- refused ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        (b"product shot, final version\n", "it looks like text"),
        (b"<!DOCTYPE html><html><body>502</body></html>", "it looks like a web page"),
        (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "it looks like a PDF"),
        (struct.pack(">I", 24) + b"ftypisom\0\0\0\0isomavc1", "it looks like a video"),
    ],
    ids=["text", "html", "pdf", "mp4"],
)
def test_not_an_image_named_jpg(data: bytes, hint: str):
    """Content that is no image is refused whatever its name, with a hint at what it is."""
    said = reason(lambda: imaging.prepare(data, "shot.jpg"))
    assert said == (
        f"not an image: the file is named .jpg but the content is not JPEG, PNG or WebP ({hint})"
    )


def test_empty_file():
    """A 0-byte file is refused as empty, not as a broken image."""
    assert reason(lambda: imaging.prepare(b"", "shot.jpg")) == "empty file"


@pytest.mark.parametrize("data", [JPEG, PNG, WEBP], ids=["jpeg", "png", "webp"])
def test_truncated_image(data: bytes):
    """A file cut in half keeps a valid header but is refused after a full decode."""
    said = reason(lambda: imaging.prepare(data[: len(data) // 2], "shot"))
    assert said.startswith("truncated or corrupt image: ")


def test_truncated_big_jpeg_found_by_reduced_decode():
    """The cheap 1/8-scale JPEG check still sees a file that stops a few bytes early."""
    data = encode(noise(800, 600), "JPEG", quality=90, progressive=True)
    said = reason(lambda: imaging.prepare(data[:-50], "shot.jpg"))
    assert said.startswith("truncated or corrupt image: ")


# As in production, where that warning would only be printed and decoding would go on.
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("side", [10_000, 20_000])
def test_decompression_bomb_refused(side: int):
    """An image that declares more pixels than Pillow's default limit is never decoded."""
    said = reason(lambda: imaging.prepare(png_header_only(side, side), "bomb.png"))
    assert said.startswith("image too large to decode safely")


def test_decoding_leaves_pillow_and_warning_settings_alone():
    """Neither the bomb guard nor the truncation check changes process-wide settings."""
    filters, max_pixels = list(warnings.filters), Image.MAX_IMAGE_PIXELS
    reason(lambda: imaging.prepare(png_header_only(10_000, 10_000), "bomb.png"))
    reason(lambda: imaging.prepare(JPEG[:200], "cut.jpg"))
    assert warnings.filters == filters
    settings = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    assert settings == (max_pixels, False)


# --- over the limit ---------------------------------------------------------------------


def test_oversize_fail_says_how_to_fix(big_png: bytes):
    """Over 10 MB with oversize = fail: refused, naming the size and the setting to change."""
    said = reason(lambda: imaging.prepare(big_png, "shot.png"))
    assert said == (
        "too large: 10.3 MB, the API takes at most 10 MB; "
        'set oversize = "downscale" for this folder to send a smaller copy'
    )


def test_oversize_downscale_sends_a_jpeg_that_fits(big_png: bytes):
    """With oversize = downscale an opaque image becomes a decodable JPEG under the limit."""
    prepared = imaging.prepare(big_png, "shot.png", oversize="downscale")
    assert len(prepared.data) <= imaging.MAX_UPLOAD_BYTES
    assert (prepared.format, prepared.content_type) == ("jpeg", "image/jpeg")
    assert prepared.filename == "shot.jpg"
    assert prepared.adapted == "downscaled from 10.3 MB (quality 90)"
    with decoded(prepared.data) as image:
        assert (image.format, image.size) == ("JPEG", (1900, 1900))


def test_downscale_resizes_when_quality_is_not_enough():
    """When even the lowest quality is too big, the image shrinks until it fits."""
    data = encode(noise(900, 700), "PNG", compress_level=0)
    prepared = imaging.prepare(data, "shot.png", oversize="downscale", limit=150_000)
    assert len(prepared.data) <= 150_000
    with decoded(prepared.data) as image:
        assert image.format == "JPEG"
        assert image.width < 900
        assert image.width / image.height == pytest.approx(900 / 700, rel=0.01)
        assert prepared.adapted == (
            f"downscaled from {len(data) / MB:.1f} MB "
            f"(quality 75, resized to {image.width}x{image.height})"
        )


def test_downscale_gives_up_below_a_useful_size():
    """A limit no useful image can meet is refused rather than sent as a thumbnail."""
    data = encode(noise(400, 400), "PNG", compress_level=0)
    said = reason(lambda: imaging.prepare(data, "x.png", oversize="downscale", limit=2_000))
    assert said.startswith("too large: could not bring the image under")


def test_downscale_applies_orientation_and_keeps_icc():
    """Re-encoding turns the pixels upright and keeps the colour profile and EXIF."""
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    exif[0x010F] = "StudioCam"
    data = encode(noise(400, 330), "JPEG", quality=100, exif=exif, icc_profile=srgb)
    prepared = imaging.prepare(data, "shot.jpg", oversize="downscale", limit=len(data) - 1)
    with decoded(prepared.data) as image:
        assert image.size == (330, 400)
        assert image.info["icc_profile"] == srgb
        assert 0x0112 not in image.getexif()
        assert image.getexif()[0x010F] == "StudioCam"


def test_downscale_keeps_real_transparency_as_webp():
    """A cut-out with a used alpha channel is downscaled to WebP so it stays transparent."""
    image = noise(500, 400, "RGBA")
    data = encode(image, "PNG", compress_level=0)
    prepared = imaging.prepare(data, "cutout.png", oversize="downscale", limit=len(data) // 2)
    assert (prepared.format, prepared.filename) == ("webp", "cutout.webp")
    assert len(prepared.data) <= len(data) // 2
    with decoded(prepared.data) as out:
        assert out.mode == "RGBA"


def test_downscale_drops_an_alpha_channel_nobody_uses():
    """An RGBA image that is fully opaque is sent as JPEG like any photo."""
    image = noise(500, 400, "RGB").convert("RGBA")
    data = encode(image, "PNG", compress_level=0)
    prepared = imaging.prepare(data, "shot.png", oversize="downscale", limit=len(data) // 2)
    assert prepared.format == "jpeg"


def test_downscale_of_a_palette_image():
    """A palette PNG over the limit converts to RGB before it becomes a JPEG."""
    image = noise(600, 600, "L").convert("P")
    data = encode(image, "PNG", compress_level=0)
    prepared = imaging.prepare(data, "shot.png", oversize="downscale", limit=len(data) // 3)
    with decoded(prepared.data) as out:
        assert (out.format, out.mode) == ("JPEG", "RGB")


# --- formats the API does not take ------------------------------------------------------


def test_tiff_without_convert_is_refused_with_the_fix():
    """A TIFF is refused unless the folder lists it in convert, and the reason says so."""
    data = encode(SMALL, "TIFF")
    assert reason(lambda: imaging.prepare(data, "shot.tif")) == (
        'unsupported format tiff: the API takes JPEG, PNG, WebP; add "tiff" to convert '
        "for this folder"
    )


def test_tiff_with_convert_becomes_jpeg():
    """A listed TIFF is re-encoded as JPEG, renamed, and the note says it was converted."""
    prepared = imaging.prepare(encode(SMALL, "TIFF"), "shot.tif", convert=["tiff"])
    assert (prepared.format, prepared.filename) == ("jpeg", "shot.jpg")
    assert prepared.adapted == "converted from tiff"
    with decoded(prepared.data) as image:
        assert (image.format, image.size) == ("JPEG", SMALL.size)


def test_cmyk_tiff_converts_to_rgb():
    """CMYK pixels come out as the RGB colour they stand for, not as raw channels."""
    data = encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "TIFF")
    prepared = imaging.prepare(data, "print.tif", convert=["tiff"])
    with decoded(prepared.data) as image:
        assert image.mode == "RGB"
        red, green, blue = centre(image)
        assert red > 240 and green < 15 and blue < 15


def test_cmyk_with_its_own_profile_converts_through_it():
    """An embedded CMYK profile drives the conversion and an sRGB profile is embedded."""
    cyan = Image.new("CMYK", (40, 30), (255, 0, 0, 0))
    data = encode(cyan, "TIFF", icc_profile=grey_cmyk_profile())
    prepared = imaging.prepare(data, "print.tif", convert=["tiff"])
    with decoded(prepared.data) as image:
        assert image.info["icc_profile"][16:20] == b"RGB "
        red, green, blue = centre(image)
        assert abs(red - green) < 8 and abs(green - blue) < 8  # grey, as the profile says
        assert 150 < red < 220


def test_cmyk_with_a_broken_profile_falls_back():
    """A damaged CMYK profile is dropped: plain conversion, and no profile claims the pixels."""
    broken = bytes(16) + b"CMYK" + bytes(108)
    data = encode(Image.new("CMYK", (40, 30), (255, 0, 0, 0)), "TIFF", icc_profile=broken)
    prepared = imaging.prepare(data, "print.tif", convert=["tiff"])
    with decoded(prepared.data) as image:
        assert "icc_profile" not in image.info
        red, green, blue = centre(image)
        assert red < 15 and green > 240 and blue > 240


def test_sixteen_bit_tiff_keeps_its_tones():
    """16-bit grey is scaled to 8 bits: mid-grey stays mid-grey instead of clipping to white."""
    data = encode(Image.new("I;16", (40, 30), 32768), "TIFF")
    prepared = imaging.prepare(data, "scan.tif", convert=["tiff"])
    with decoded(prepared.data) as image:
        assert image.getpixel((20, 15)) == pytest.approx(128, abs=2)


def test_converted_cutout_stays_lossless_png():
    """A TIFF with a used alpha channel converts to PNG, keeping every pixel."""
    image = noise(50, 40, "RGBA")
    prepared = imaging.prepare(encode(image, "TIFF"), "cutout.tif", convert=["tiff"])
    assert (prepared.format, prepared.filename) == ("png", "cutout.png")
    with decoded(prepared.data) as out:
        assert out.tobytes() == image.tobytes()


def test_converted_file_over_the_limit_follows_oversize():
    """A converted file still too big is refused with oversize = fail, shrunk with downscale."""
    data = encode(noise(800, 600), "TIFF")
    limit = 200_000
    said = reason(lambda: imaging.prepare(data, "x.tif", convert=["tiff"], limit=limit))
    assert said.startswith("too large after converting from tiff: ")
    prepared = imaging.prepare(data, "x.tif", convert=["tiff"], oversize="downscale", limit=limit)
    assert len(prepared.data) <= limit
    assert prepared.adapted is not None
    assert prepared.adapted.startswith("converted from tiff; downscaled from ")


def test_avif_converts_when_listed():
    """AVIF, which Pillow reads itself, converts like TIFF."""
    data = encode(SMALL, "AVIF")
    prepared = imaging.prepare(data, "shot.avif", convert=["avif"])
    assert (prepared.format, prepared.adapted) == ("jpeg", "converted from avif")


def test_heic_without_the_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch):
    """Without pillow-heif, a HEIC file names the extra to install, listed or not."""
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # makes the import fail
    listed = reason(lambda: imaging.check_header(HEIC_HEAD, 3 * MB, "a.heic", convert=["heic"]))
    assert (
        listed == "cannot convert heic: the heic extra is not installed (pip install 'syncd[heic]')"
    )
    unlisted = reason(lambda: imaging.check_header(HEIC_HEAD, 3 * MB, "a.heic"))
    assert unlisted.startswith("unsupported format heic: ")
    assert unlisted.endswith(
        'add "heic" to convert for this folder and install the heic extra '
        "(pip install 'syncd[heic]')"
    )


# --- check_header -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "size", "options", "starts"),
    [
        (b"", 0, {}, "empty file"),
        (b"just some notes about the shoot", 31, {}, "not an image: "),
        (encode(SMALL, "TIFF")[:64], 200 * MB, {}, "unsupported format tiff"),
        (JPEG[:64], 14_889_779, {}, "too large: 14.2 MB, the API takes at most 10 MB"),
        (JPEG[:64], 300 * MB, {"oversize": "downscale"}, "too large: 300 MB; syncd makes"),
        (encode(SMALL, "TIFF")[:64], 300 * MB, {"convert": ["tiff"]}, "too large: 300 MB"),
    ],
    ids=["empty", "text", "tiff", "oversize", "huge-downscale", "huge-convert"],
)
def test_check_header_refuses_early(head: bytes, size: int, options: dict[str, Any], starts: str):
    """The first bytes and the size are enough to refuse these without reading the file."""
    assert reason(lambda: imaging.check_header(head, size, "x.jpg", **options)).startswith(starts)


@pytest.mark.parametrize(
    ("head", "size", "options"),
    [
        (JPEG[: imaging.HEAD_BYTES], 3 * MB, {}),
        (WEBP[: imaging.HEAD_BYTES], 10 * MB, {}),
        (PNG[: imaging.HEAD_BYTES], 40 * MB, {"oversize": "downscale"}),
        (encode(SMALL, "TIFF")[: imaging.HEAD_BYTES], 80 * MB, {"convert": ["tiff"]}),
    ],
    ids=["jpeg", "webp-at-limit", "png-downscale", "tiff-convert"],
)
def test_check_header_lets_through_what_prepare_may_send(
    head: bytes, size: int, options: dict[str, Any]
):
    """A header check passes files that only a full read can judge."""
    imaging.check_header(head, size, "x.jpg", **options)
