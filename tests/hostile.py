"""A corpus of the files real image folders contain, good and bad, for validation tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _photo(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels: a decompression bomb's
    header without the bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def _jpeg_cut_after_header(seed: int) -> bytes:
    data = _encode(_photo(seed), "JPEG")
    start_of_scan = data.index(b"\xff\xda")
    return data[: start_of_scan + 20]


QUARANTINED = {
    "truncated.jpg": lambda: _encode(_photo(1), "JPEG")[:600],
    "empty.jpg": lambda: b"",
    "notes.jpg": lambda: b"shopping list: socks, hats\n",
    "page.png": lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>",
    "noise.jpg": lambda: np.random.default_rng(2).bytes(3000),
    "one-pixel.png": lambda: _encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"),
    "bomb.png": lambda: _png_claiming(40_000, 40_000),
    "header-only.jpg": lambda: _jpeg_cut_after_header(3),
}

ACCEPTED = {
    "gray.png": lambda: _encode(_photo(4).convert("L"), "PNG"),
    "alpha.png": lambda: _encode(_photo(5).convert("RGBA"), "PNG"),
    "palette.gif": lambda: _encode(_photo(6).convert("P"), "GIF"),
    "cmyk.jpg": lambda: _encode(_photo(7).convert("CMYK"), "JPEG"),
    "deep.png": lambda: _encode(
        Image.fromarray((np.arange(48 * 40).reshape(40, 48) * 30).astype(np.uint16)), "PNG"
    ),
    "bitmap.bmp": lambda: _encode(_photo(8), "BMP"),
    "UPPER.JPG": lambda: _encode(_photo(9), "JPEG"),
    "été au parc 1.png": lambda: _encode(_photo(10), "PNG"),
}

SKIPPED = {
    ".DS_Store": lambda: b"\x00\x00\x00\x01Bud1",
    "._photo.jpg": lambda: b"\x00\x05\x16\x07 AppleDouble",
}


def add_corpus(class_dir: Path) -> None:
    """Writes every corpus file into one class folder of an otherwise good dataset."""
    class_dir.mkdir(parents=True, exist_ok=True)
    for files in (QUARANTINED, ACCEPTED, SKIPPED):
        for name, make in files.items():
            (class_dir / name).write_bytes(make())
