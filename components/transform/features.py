"""The transform graph and the records it writes: how an image becomes model input.

``make_preprocessing_fn`` is the one definition of that: preprocess runs it on Beam to write the
TFRecords, and its transform graph is embedded in the serving SavedModel, so training,
evaluation and serving run the very same decode and resize: no skew. This module holds the
graph's side (TensorFlow and tensorflow-transform, no Beam), and how the steps after preprocess
read back what it wrote.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import tensorflow as tf
import tensorflow_transform as tft

from imgclf.components import artifacts, storage
from imgclf.components.transform import exif

IMAGE_BYTES_KEY = "image_bytes"
LABEL_KEY = "label"
LABELS_KEY = "labels"
IMAGE_KEY = "image"
# Multi-class records hold one vocabulary id per image; multi-label records a list of ids,
# which training turns into a multi-hot vector (its length, the vocabulary size, is only
# known after analysis, and a transform output needs a fixed shape).
LABEL_ID_KEY = "label_id"
LABEL_IDS_KEY = "label_ids"
LABEL_VOCABULARY = "label"
RAW_FEATURE_SPEC = {
    IMAGE_BYTES_KEY: tf.io.FixedLenFeature([], tf.string),
    LABEL_KEY: tf.io.FixedLenFeature([], tf.string),
}
MULTI_LABEL_RAW_FEATURE_SPEC = {
    IMAGE_BYTES_KEY: tf.io.FixedLenFeature([], tf.string),
    LABELS_KEY: tf.io.VarLenFeature(tf.string),
}
# The reduced scales libjpeg decodes at in the DCT domain that tf.io.decode_jpeg's ratio
# offers, largest first; 1 is the full-size decode.
JPEG_SCALES = (8, 4, 2, 1)


@dataclass(frozen=True)
class Preprocessing:
    """What the transform graph does to every image, recorded beside it: the steps after
    preprocess read it from the artifact instead of being told again."""

    image_size: int
    resize_policy: str
    jpeg_decoding: str

    def write(self, transform_dir: str) -> None:
        storage.write_bytes(
            storage.join(transform_dir, artifacts.PREPROCESSING_RECORD),
            json.dumps(asdict(self)).encode(),
        )

    @classmethod
    def read(cls, transform_dir: str) -> Preprocessing:
        record = storage.join(transform_dir, artifacts.PREPROCESSING_RECORD)
        # Transform graphs written before scaled decoding existed decoded every JPEG in full.
        return cls(**{"jpeg_decoding": "full", **json.loads(storage.read_bytes(record))})


def decode_and_resize(
    image_bytes: tf.Tensor,
    image_size: int,
    resize_policy: str = "stretch",
    jpeg_decoding: str = "scaled",
) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP -> uint8 RGB ``[image_size, image_size, 3]``.

    Grayscale and RGBA become RGB, an animated GIF gives its first frame, a photo is turned
    upright by its EXIF orientation. The square is made by padding with black (``pad``: all of
    the image, at a lower resolution), cropping to the centre square (``crop``: the edges of
    long images are lost) or stretching (``stretch``: everything at full resolution, the
    aspect ratio distorted, as Keras' ``Resizing`` does by default). With ``scaled``
    ``jpeg_decoding``, a JPEG larger than the square needs is decoded at a reduced scale first
    (:func:`decode`).
    """
    image = decode(image_bytes, image_size, resize_policy, jpeg_decoding)
    if resize_policy == "crop":
        side = tf.reduce_min(tf.shape(image)[:2])
        image = tf.image.resize_with_crop_or_pad(image, side, side)
    if resize_policy in ("crop", "stretch"):
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
    else:
        image = tf.image.resize_with_pad(image, image_size, image_size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def decode(
    image_bytes: tf.Tensor, image_size: int, resize_policy: str, jpeg_decoding: str
) -> tf.Tensor:
    """Encoded image -> upright uint8 RGB ``[height, width, 3]``.

    With ``scaled``, a JPEG is decoded in libjpeg's DCT domain at the largest of
    ``JPEG_SCALES`` at which it still covers the square: stretch and crop keep its shorter side
    at or above ``image_size``, pad its longer side (the one the resize maps to
    ``image_size``). Other formats, and every JPEG with ``full``, are decoded in full.
    """

    def in_full() -> tf.Tensor:
        return tf.io.decode_image(image_bytes, channels=3, expand_animations=False)

    if jpeg_decoding == "full":
        image = in_full()
    else:
        # ratio is an attribute of the op, not an input: one decode_jpeg per scale, the
        # full-size path last (index 3), exactly today's decode.
        scaled = [
            lambda ratio=ratio: tf.io.decode_jpeg(image_bytes, channels=3, ratio=ratio)
            for ratio in JPEG_SCALES[:-1]
        ]
        index = tf.cond(
            tf.io.is_jpeg(image_bytes),
            lambda: _scale_index(image_bytes, image_size, resize_policy),
            lambda: tf.constant(len(JPEG_SCALES) - 1),
        )
        image = tf.switch_case(index, branch_fns=[*scaled, in_full])
    return exif.apply_orientation(image, exif.orientation(image_bytes))


def _scale_index(image_bytes: tf.Tensor, image_size: int, resize_policy: str) -> tf.Tensor:
    """Index into ``JPEG_SCALES``, read from the JPEG's header alone."""
    shape = tf.image.extract_jpeg_shape(image_bytes)[:2]
    side = tf.reduce_max(shape) if resize_policy == "pad" else tf.reduce_min(shape)
    # libjpeg's scaled output is ceil(side / scale) pixels (jpeg_core_output_dimensions).
    scales = tf.constant(JPEG_SCALES[:-1])
    covers = (side + scales - 1) // scales >= image_size
    # The first scale that covers; the full size when none does.
    return tf.cast(tf.argmax(tf.concat([covers, [True]], axis=0)), tf.int32)


def make_preprocessing_fn(preprocessing: Preprocessing, multi_label: bool = False):
    def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        # Images are stored as serialized uint8 tensors: already resized, read back with a
        # memory copy instead of a second decode.
        images = tf.map_fn(
            lambda data: tf.io.serialize_tensor(
                decode_and_resize(
                    data,
                    preprocessing.image_size,
                    preprocessing.resize_policy,
                    preprocessing.jpeg_decoding,
                )
            ),
            inputs[IMAGE_BYTES_KEY],
            fn_output_signature=tf.string,
        )
        label_key, label_id_key = (
            (LABELS_KEY, LABEL_IDS_KEY) if multi_label else (LABEL_KEY, LABEL_ID_KEY)
        )
        label_ids = tft.compute_and_apply_vocabulary(
            inputs[label_key], vocab_filename=LABEL_VOCABULARY
        )
        return {IMAGE_KEY: images, label_id_key: label_ids}

    return preprocessing_fn


def parse_images(serialized: tf.Tensor, image_size: int) -> tf.Tensor:
    """Batch of serialized images from the transform -> uint8 ``[batch, size, size, 3]``."""
    images = tf.map_fn(
        lambda data: tf.io.parse_tensor(data, tf.uint8),
        serialized,
        fn_output_signature=tf.TensorSpec([image_size, image_size, 3], tf.uint8),
    )
    return tf.ensure_shape(images, [None, image_size, image_size, 3])


def read_counts(examples_dir: str) -> dict[str, int]:
    """Images per split that preprocess wrote to ``examples_dir``."""
    return json.loads(storage.read_bytes(storage.join(examples_dir, artifacts.COUNTS)))["images"]


def write_counts(examples_dir: str, counts: dict[str, int]) -> None:
    storage.write_bytes(
        storage.join(examples_dir, artifacts.COUNTS), json.dumps({"images": counts}).encode()
    )


def is_multi_label(tft_output: tft.TFTransformOutput) -> bool:
    """Whether the transform wrote multi-label records (a list of label ids per image)."""
    return LABEL_IDS_KEY in tft_output.transformed_feature_spec()


def class_names(tft_output: tft.TFTransformOutput) -> list[str]:
    """The label vocabulary the transform learned on the train split, in label-id order."""
    return [name.decode() for name in tft_output.vocabulary_by_name(LABEL_VOCABULARY)]


def split_file_pattern(examples_dir: str, split: str) -> str:
    return storage.join(examples_dir, split, f"part-*{artifacts.TFRECORD_SUFFIX}")
