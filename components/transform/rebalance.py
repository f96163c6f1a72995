"""Offline class rebalancing: augmented copies of minority-class training images, written to
the TFRecords beside the originals, until every class has a target number of train images.

A copy is made from the original file at its full resolution (flip, rotation, zoom, shift and
contrast, from a seed fixed by the file and the copy's number, so the same data always gives
the same copies) and stored as a PNG that the transform then decodes and resizes like any
other image. Only the train split gets copies: evaluation must see real images.
"""

from __future__ import annotations

import hashlib

import pandas as pd

# Geometric and photometric changes that keep the label: the in-model policy's, plus shifts.
COPY_AUGMENTATIONS = "flip,rotation,zoom,translation,contrast"


def copy_plan(train_rows: pd.DataFrame, target: int) -> list[tuple[str, str, int]]:
    """``(uri, label, seed)`` per augmented copy: a class with ``n < target`` train images
    gets ``target - n`` copies, spread over its images in manifest order (the first images
    get one copy more when the numbers do not divide). The seed follows the file's content,
    not its path."""
    plan = []
    for label, rows in train_rows.groupby("label", sort=True):
        missing = target - len(rows)
        originals = list(zip(rows["uri"], rows["sha256"], strict=True))
        for copy_number in range(max(missing, 0)):
            uri, sha256 = originals[copy_number % len(originals)]
            plan.append((uri, label, _seed(sha256, copy_number)))
    return plan


def augmented_copy(image_bytes: bytes, seed: int) -> bytes:
    """The image, upright by its EXIF orientation, randomly augmented from ``seed``, as PNG."""
    import tensorflow as tf

    from imgclf.components.model import augmentation
    from imgclf.components.transform import exif

    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image = exif.apply_orientation(image, exif.orientation(image_bytes))
    images = tf.cast(image, tf.float32)[tf.newaxis]
    for layer in augmentation.augmentation_layers(COPY_AUGMENTATIONS, seed):
        images = layer(images, training=True)
    pixels = tf.cast(tf.clip_by_value(tf.round(images[0]), 0.0, 255.0), tf.uint8)
    return tf.io.encode_png(pixels).numpy()


def _seed(sha256: str, copy_number: int) -> int:
    digest = hashlib.sha256(f"{sha256}#{copy_number}".encode()).digest()
    return int.from_bytes(digest[:4], "big")
