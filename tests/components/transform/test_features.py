"""Scaled JPEG decoding in the transform graph: a photo larger than the square needs is
decoded at 1/2, 1/4 or 1/8 scale in libjpeg's DCT domain, and nothing else changes."""

import io
import json
import math
import struct

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import CLASS_COLOURS, encode_image, photo
from imgclf.components import artifacts
from imgclf.components.transform import features

RED = CLASS_COLOURS["red"]


@pytest.mark.parametrize(
    ("width", "height", "image_size", "resize_policy", "scale"),
    [
        (4032, 3024, 224, "stretch", 8),
        (4032, 3024, 224, "crop", 8),
        (4032, 3024, 224, "pad", 8),
        (1600, 1200, 224, "stretch", 4),
        (900, 600, 224, "stretch", 2),
        (500, 300, 224, "stretch", 1),
        # Stretch and crop need the shorter side, pad only the longer one.
        (1600, 400, 224, "stretch", 1),
        (1600, 400, 224, "pad", 4),
        # The boundary: ceil(1785 / 8) is 224, ceil(1784 / 8) only 223.
        (1785, 1785, 224, "stretch", 8),
        (1784, 1784, 224, "stretch", 4),
    ],
)
def test_a_jpeg_decodes_at_the_largest_scale_that_still_covers_the_square(
    width, height, image_size, resize_policy, scale
):
    """libjpeg makes ceil(side / scale) pixels of a side at a reduced scale
    (``jpeg_core_output_dimensions``: ``jdiv_round_up(image_width, block_size)``, in
    libjpeg-turbo's jdmaster.c and IJG libjpeg's jdinput.c)."""
    image = features.decode(photo(RED, 0, (width, height)), image_size, resize_policy, "scaled")
    assert image.shape == (math.ceil(height / scale), math.ceil(width / scale), 3)


def test_full_decoding_decodes_every_jpeg_at_full_size():
    assert features.decode(photo(RED, 0), 224, "stretch", "full").shape == (3024, 4032, 3)


@pytest.mark.parametrize("resize_policy", ["stretch", "crop", "pad"])
def test_a_photo_decoded_at_reduced_scale_gives_almost_the_same_square(resize_policy):
    """Against the full decode: within a grey level on average. (A wrong resize, crop or
    orientation differs by tens.)"""
    data = photo(RED, 1, (4032, 3024))
    scaled = features.decode_and_resize(data, 224, resize_policy, "scaled").numpy()
    full = features.decode_and_resize(data, 224, resize_policy, "full").numpy()
    difference = np.abs(scaled.astype(int) - full.astype(int))
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 4


def test_a_sideways_photo_is_turned_upright_at_reduced_scale():
    data = photo(RED, 2, (4032, 3024), orientation=6)
    assert features.decode(data, 224, "stretch", "scaled").shape == (504, 378, 3)
    scaled = features.decode_and_resize(data, 224, "pad", "scaled").numpy()
    full = features.decode_and_resize(data, 224, "pad", "full").numpy()
    assert np.abs(scaled.astype(int) - full.astype(int)).mean() < 1.0


@pytest.mark.parametrize("image_format", ["PNG", "BMP", "GIF", "WEBP"])
def test_other_formats_decode_exactly_as_before(image_format):
    pixels = np.asarray(Image.open(io.BytesIO(photo(RED, 3, (1200, 900)))))
    data = encode_image(pixels, image_format)
    scaled = features.decode_and_resize(data, 32, "stretch", "scaled").numpy()
    full = features.decode_and_resize(data, 32, "stretch", "full").numpy()
    np.testing.assert_array_equal(scaled, full)


def test_a_jpeg_too_small_to_scale_decodes_exactly_as_before():
    data = photo(RED, 4, (400, 300))
    scaled = features.decode_and_resize(data, 224, "stretch", "scaled").numpy()
    np.testing.assert_array_equal(
        scaled, features.decode_and_resize(data, 224, "stretch", "full").numpy()
    )


def _with_frame_size(data: bytes, width: int, height: int) -> bytes:
    """The JPEG with its baseline frame header (SOF0) claiming another size."""
    frame = data.index(b"\xff\xc0")
    return data[: frame + 5] + struct.pack(">HH", height, width) + data[frame + 9 :]


def _large(**options) -> bytes:
    return photo(RED, 5, (2000, 1500), **options)


# Made when a test asks: encoding them at import would slow every collection.
HARD_JPEGS = {
    "header claims twice the size": lambda: _with_frame_size(_large(), 4000, 3000),
    "header claims half the size": lambda: _with_frame_size(_large(), 1000, 750),
    "truncated": lambda: _large()[: len(_large()) // 2],
    "progressive": lambda: _large(progressive=True),
    "CMYK": lambda: _large(mode="CMYK"),
    "grayscale": lambda: _large(mode="L"),
    "1x1": lambda: photo(RED, 5, (1, 1)),
}


def _outcome(data: bytes, jpeg_decoding: str):
    try:
        return features.decode_and_resize(data, 32, "stretch", jpeg_decoding).numpy()
    except tf.errors.InvalidArgumentError as error:
        return f"error: {error.message.splitlines()[0].split('}}')[-1].strip()}"


@pytest.mark.parametrize("name", HARD_JPEGS)
def test_hard_jpegs_decode_or_fail_at_reduced_scale_as_in_full(name):
    """A file that decodes in full decodes scaled to the same square (within JPEG rounding),
    and one that fails in full fails scaled too: quarantine decodes in full, so nothing it
    passes can break the scaled transform."""
    data = HARD_JPEGS[name]()
    scaled, full = _outcome(data, "scaled"), _outcome(data, "full")
    if isinstance(full, str):
        assert isinstance(scaled, str) and "Invalid JPEG data" in scaled, scaled
    else:
        assert not isinstance(scaled, str), scaled
        assert np.abs(scaled.astype(int) - full.astype(int)).mean() < 2.0


def test_a_transform_graph_from_before_scaled_decoding_reads_as_full(tmp_path):
    record = tmp_path / artifacts.PREPROCESSING_RECORD
    record.write_text(json.dumps({"image_size": 224, "resize_policy": "stretch"}))
    assert features.Preprocessing.read(str(tmp_path)).jpeg_decoding == "full"
