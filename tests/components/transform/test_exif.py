import io
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from imgclf.components.transform import exif
from imgclf.components.transform.features import decode_and_resize


def _photo(width=50, height=30) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _jpeg_with_orientation(value: int, image: Image.Image | None = None) -> bytes:
    tags = Image.Exif()
    tags[0x0112] = value
    buffer = io.BytesIO()
    (image or _photo()).save(buffer, format="JPEG", exif=tags.tobytes(), quality=95)
    return buffer.getvalue()


@pytest.mark.parametrize("value", range(1, 9))
def test_every_orientation_turns_the_image_as_pillow_does(value):
    data = _jpeg_with_orientation(value)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    assert int(exif.orientation(tf.constant(data))) == value
    decoded = tf.io.decode_image(data, channels=3, expand_animations=False)
    turned = exif.apply_orientation(decoded, exif.orientation(tf.constant(data))).numpy()
    assert turned.shape == expected.shape
    # Same pixels up to the two JPEG decoders' rounding; a wrong turn differs by ~85.
    assert np.abs(turned.astype(int) - expected.astype(int)).mean() < 3


def test_big_endian_exif_is_read():
    entry = struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0)
    tiff = b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1) + entry + b"\x00" * 4
    payload = b"Exif\x00\x00" + tiff
    plain = io.BytesIO()
    _photo().save(plain, format="JPEG")
    data = (
        b"\xff\xd8\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + plain.getvalue()[2:]
    )
    assert int(exif.orientation(tf.constant(data))) == 6
    assert tf.io.decode_image(data, channels=3).shape == (30, 50, 3)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"Exif\x00\x00",
        b"Exif\x00\x00MM\x00*\xff\xff\xff\xff",
        np.random.default_rng(1).bytes(5000),
    ],
)
def test_missing_or_broken_exif_means_upright(data):
    assert int(exif.orientation(tf.constant(data))) == 1


def test_preprocess_turns_a_sideways_portrait_upright():
    portrait = Image.new("RGB", (20, 40), (255, 255, 255))  # tall, white
    image = decode_and_resize(_jpeg_with_orientation(6, portrait), 32, resize_policy="pad").numpy()
    # Shown turned, the portrait is landscape: black bars above and below, not at the sides.
    assert image[0].max() < 20 and image[-1].max() < 20
    assert image[16, 0].min() > 230 and image[16, -1].min() > 230
