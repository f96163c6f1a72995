"""EXIF orientation, read and applied inside the TensorFlow graph.

Phones store pictures sideways and record the turn in the EXIF Orientation tag;
``tf.io.decode_image`` ignores it. The correction must run in the transform graph, so that
serving turns a phone's upload exactly as training did. Pillow's ``ImageOps.exif_transpose``
is the reference the tests compare with.
"""

from __future__ import annotations

import tensorflow as tf

_EXIF_MARKER = "Exif\x00\x00"
_SEARCH_BYTES = 65536  # an APP1 segment, where EXIF lives in a JPEG, is at most 64 KiB
_ORIENTATION_TAG = 0x0112


def orientation(image_bytes: tf.Tensor) -> tf.Tensor:
    """The EXIF Orientation (1 to 8) of one encoded image; 1 when there is none or it is
    unreadable."""
    head = tf.strings.substr(image_bytes, 0, _SEARCH_BYTES)
    # Splitting at the marker finds it with a byte search instead of comparing every offset.
    before_marker = tf.strings.split(head, sep=_EXIF_MARKER, maxsplit=1)
    data = tf.io.decode_raw(head, tf.uint8)
    size = tf.shape(data)[0]
    # Reads past the end give zeros instead of an error: a corrupt header cannot crash.
    padded = tf.concat([data, tf.zeros([16], tf.uint8)], axis=0)

    def byte(offset):
        return tf.cast(tf.gather(padded, tf.clip_by_value(offset, 0, size + 15)), tf.int32)

    def read_tag() -> tf.Tensor:
        tiff = tf.strings.length(before_marker[0]) + len(_EXIF_MARKER)
        little_endian = tf.equal(byte(tiff), ord("I"))

        def unsigned(offset, width):
            values = [byte(offset + i) for i in range(width)]
            little = sum(v * 256**i for i, v in enumerate(values))
            big = sum(v * 256**i for i, v in enumerate(reversed(values)))
            return tf.where(little_endian, little, big)

        directory = tiff + unsigned(tiff + 4, 4)
        count = tf.clip_by_value(unsigned(directory, 2), 0, 512)
        entries = directory + 2 + 12 * tf.range(count)
        tags = unsigned(entries, 2)
        matches = tf.cast(tf.where(tf.equal(tags, _ORIENTATION_TAG))[:, 0], tf.int32)
        value = tf.cond(
            tf.size(matches) > 0,
            lambda: unsigned(entries[matches[0]] + 8, 2),
            lambda: tf.constant(1, tf.int32),
        )
        return tf.where((value >= 1) & (value <= 8), value, 1)

    return tf.cond(tf.size(before_marker) > 1, read_tag, lambda: tf.constant(1, tf.int32))


def apply_orientation(image: tf.Tensor, value: tf.Tensor) -> tf.Tensor:
    """Turns an ``[height, width, channels]`` image the way its Orientation says to show it."""
    return tf.switch_case(
        value - 1,
        branch_fns=[
            lambda: image,
            lambda: tf.image.flip_left_right(image),
            lambda: tf.image.rot90(image, 2),
            lambda: tf.image.flip_up_down(image),
            lambda: tf.image.transpose(image),
            lambda: tf.image.rot90(image, 3),
            lambda: tf.image.rot90(tf.image.transpose(image), 2),
            lambda: tf.image.rot90(image, 1),
        ],
    )
