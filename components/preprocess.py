"""Preprocess: tensorflow-transform on Apache Beam, from manifest rows to TFRecords.

``preprocessing_fn`` is the one definition of how an image becomes model input. Its transform
graph is written next to the TFRecords and embedded in the serving SavedModel, so training,
evaluation and serving run the very same decode and resize: no skew.

Data flows as Arrow RecordBatches of a bounded number of images (TFXIO in, record batches
out), never as per-image Python dicts, and never the whole dataset at once.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import apache_beam as beam
import tensorflow as tf
import tensorflow_transform as tft
import tensorflow_transform.beam as tft_beam
from apache_beam.options.pipeline_options import PipelineOptions
from tensorflow_transform.tf_metadata import schema_utils
from tfx_bsl.coders.example_coder import RecordBatchToExamplesEncoder
from tfx_bsl.public import tfxio

from components import exif, manifest, rebalance, storage

log = logging.getLogger(__name__)

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
# How a non-square image becomes square: "pad" keeps all of it (black bars), "crop" keeps
# the centre square (no bars, but the edges of wide or tall images are lost).
RESIZE_POLICIES = ("pad", "crop", "stretch")
TFRECORD_SUFFIX = ".tfrecord.gz"
# Images per split and their size, beside the TFRecords, so that training can tell whether
# the decoded data fits in memory without reading it.
COUNTS_FILE = "counts.json"
# Images per Arrow RecordBatch: encoded photos are large, so a batch bounds the memory a
# worker holds, whatever the dataset's size.
_IMAGES_PER_RECORD_BATCH = 64


def decode_and_resize(
    image_bytes: tf.Tensor, image_size: int, resize_policy: str = "stretch"
) -> tf.Tensor:
    """Encoded JPEG/PNG/GIF/BMP/WebP -> uint8 RGB ``[image_size, image_size, 3]``.

    Grayscale and RGBA become RGB, an animated GIF gives its first frame, a photo is turned
    upright by its EXIF orientation. The square is made by padding with black (``pad``: all of
    the image, at a lower resolution), cropping to the centre square (``crop``: the edges of
    long images are lost) or stretching (``stretch``: everything at full resolution, the
    aspect ratio distorted, as Keras' ``Resizing`` does by default).
    """
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image = exif.apply_orientation(image, exif.orientation(image_bytes))
    if resize_policy == "crop":
        side = tf.reduce_min(tf.shape(image)[:2])
        image = tf.image.resize_with_crop_or_pad(image, side, side)
    if resize_policy in ("crop", "stretch"):
        image = tf.image.resize(image, [image_size, image_size], antialias=True)
    else:
        image = tf.image.resize_with_pad(image, image_size, image_size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def make_preprocessing_fn(
    image_size: int, multi_label: bool = False, resize_policy: str = "stretch"
):
    def preprocessing_fn(inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        # Images are stored as serialized uint8 tensors: already resized, read back with a
        # memory copy instead of a second decode.
        images = tf.map_fn(
            lambda data: tf.io.serialize_tensor(decode_and_resize(data, image_size, resize_policy)),
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


def preprocess(
    manifest_dir: str,
    examples_dir: str,
    transform_dir: str,
    image_size: int,
    beam_pipeline_args: list[str] | None = None,
    resize_policy: str = "stretch",
    rebalance_to: int = 0,
) -> dict[str, int]:
    """Writes gzip TFRecords to ``examples_dir/<split>/`` and the transform graph to
    ``transform_dir``; returns the number of records per split.

    The vocabulary and any other analysis see only the train split. With ``rebalance_to``,
    every class with fewer train images gets augmented copies up to that many.
    """
    if resize_policy not in RESIZE_POLICIES:
        raise ValueError(
            f"resize_policy must be one of {', '.join(RESIZE_POLICIES)}, not {resize_policy!r}."
        )
    frame = manifest.read(manifest_dir)
    counts = manifest.counts_by_split(frame)
    if counts["train"] == 0:
        raise ValueError("The manifest has no train images; nothing to preprocess.")
    multi_label = manifest.is_multi_label(frame)
    copies = _copy_plan(frame, rebalance_to)
    counts["train"] += len(copies)
    options = PipelineOptions(beam_pipeline_args or ["--runner=DirectRunner"])
    raw_tfxio = tfxio.TFExampleBeamRecord(
        physical_format="inmem",
        telemetry_descriptors=["imgclf", "preprocess"],
        schema=schema_utils.schema_from_feature_spec(
            MULTI_LABEL_RAW_FEATURE_SPEC if multi_label else RAW_FEATURE_SPEC
        ),
    )
    raw_data_config = raw_tfxio.TensorAdapterConfig()
    log.info(
        "Preprocessing %s %s images per split at %dx%d (%s)",
        counts,
        "multi-label" if multi_label else "multi-class",
        image_size,
        image_size,
        resize_policy,
    )
    with (
        tempfile.TemporaryDirectory() as temp_dir,
        beam.Pipeline(options=options) as pipeline,
        tft_beam.Context(temp_dir=_beam_temp_dir(options, temp_dir)),
    ):
        # Analysis learns the label vocabulary and needs no pixels: it reads the manifest's
        # labels, so the transform below can stream the images in one pass. (Analysing and
        # transforming the same images would hold them all until analysis finished.) An
        # analyzer over pixels would need this changed: it would learn from stand-in images.
        transform_fn = (
            _train_labels(pipeline, frame, raw_tfxio),
            raw_data_config,
        ) | "AnalyzeTrainLabels" >> tft_beam.AnalyzeDataset(
            make_preprocessing_fn(image_size, multi_label, resize_policy)
        )
        for split in (split for split in manifest.SPLITS if counts[split]):
            transformed, _ = (
                (
                    _read_split(
                        pipeline, frame, split, raw_tfxio, copies if split == "train" else []
                    ),
                    raw_data_config,
                ),
                transform_fn,
            ) | f"Transform{split.title()}" >> tft_beam.TransformDataset(output_record_batches=True)
            _ = (
                transformed
                | f"Encode{split.title()}"
                >> beam.FlatMapTuple(lambda batch, _: RecordBatchToExamplesEncoder().encode(batch))
                # No fixed shard count: that would group every record of the split in one
                # place first. Each bundle writes its own file, so the number of files follows
                # the runner's parallelism and, on Dataflow, the data's size.
                | f"Write{split.title()}"
                >> beam.io.WriteToTFRecord(
                    storage.join(examples_dir, split, "part"),
                    file_name_suffix=TFRECORD_SUFFIX,
                    compression_type=beam.io.filesystem.CompressionTypes.GZIP,
                )
            )
        _ = transform_fn | "WriteTransformFn" >> tft_beam.WriteTransformFn(transform_dir)
    storage.write_bytes(
        storage.join(examples_dir, COUNTS_FILE),
        json.dumps({"images": counts, "image_size": image_size}).encode(),
    )
    log.info("Wrote TFRecords to %s and the transform graph to %s", examples_dir, transform_dir)
    return counts


def read_counts(examples_dir: str) -> dict[str, int]:
    """Images per split that preprocess wrote to ``examples_dir``."""
    return json.loads(storage.read_bytes(storage.join(examples_dir, COUNTS_FILE)))["images"]


def is_multi_label(tft_output: tft.TFTransformOutput) -> bool:
    """Whether the transform wrote multi-label records (a list of label ids per image)."""
    return LABEL_IDS_KEY in tft_output.transformed_feature_spec()


def split_file_pattern(examples_dir: str, split: str) -> str:
    return storage.join(examples_dir, split, f"part-*{TFRECORD_SUFFIX}")


def _copy_plan(frame, rebalance_to: int) -> list[tuple[str, str, int]]:
    if rebalance_to <= 0:
        return []
    if manifest.is_multi_label(frame):
        raise ValueError(
            "rebalance_to works on single-label data: copying an image of several labels "
            "to raise one label's count raises the others' too. Set rebalance_to=0."
        )
    copies = rebalance.copy_plan(manifest.split_rows(frame, "train"), rebalance_to)
    log.info("Rebalancing: %d augmented copies bring every class to %d", len(copies), rebalance_to)
    return copies


def _read_split(
    pipeline: beam.Pipeline,
    frame,
    split: str,
    raw_tfxio: tfxio.TFExampleBeamRecord,
    copies: list[tuple[str, str, int]],
) -> beam.PCollection:
    """The split's images and labels, and any augmented ``copies`` ``(uri, label, seed)``, as
    Arrow RecordBatches; only the URIs are listed up front, each worker reads the files it is
    given."""
    rows = manifest.split_rows(frame, split)
    multi_label = manifest.is_multi_label(frame)
    originals = [(uri, label, None) for uri, label in zip(rows["uri"], _labels(rows), strict=True)]
    return (
        pipeline
        | f"List{split.title()}" >> beam.Create(originals + copies)
        # Spread the reads across workers instead of keeping them on the one that listed them.
        | f"Spread{split.title()}" >> beam.Reshuffle()
        | f"Read{split.title()}"
        >> beam.MapTuple(
            lambda uri, labels, copy_seed: _raw_example(
                _image_bytes(uri, copy_seed), labels, multi_label
            )
        )
        | f"Batch{split.title()}" >> raw_tfxio.BeamSource(batch_size=_IMAGES_PER_RECORD_BATCH)
    )


def _image_bytes(uri: str, copy_seed: int | None) -> bytes:
    data = storage.read_bytes(uri)
    return data if copy_seed is None else rebalance.augmented_copy(data, copy_seed)


def _train_labels(
    pipeline: beam.Pipeline, frame, raw_tfxio: tfxio.TFExampleBeamRecord
) -> beam.PCollection:
    """The train split's labels as RecordBatches, each with a 1x1 black PNG for its image
    (the graph decodes every row it analyses, but only the labels feed an analyzer)."""
    rows = manifest.split_rows(frame, "train")
    multi_label = manifest.is_multi_label(frame)
    stand_in = tf.io.encode_png(tf.zeros([1, 1, 3], tf.uint8)).numpy()
    return (
        pipeline
        | "ListTrainLabels"
        >> beam.Create([_raw_example(stand_in, label, multi_label) for label in _labels(rows)])
        | "BatchTrainLabels" >> raw_tfxio.BeamSource()
    )


def _labels(rows) -> list[str] | list[list[str]]:
    """Each row's label, or its list of labels for multi-label data."""
    return manifest.label_sets(rows) if manifest.is_multi_label(rows) else rows["label"].tolist()


def _raw_example(image_bytes: bytes, labels: str | list[str], multi_label: bool) -> bytes:
    """A serialized ``tf.Example`` of an image's bytes and its label(s): TFXIO's input."""
    label_values = labels if multi_label else [labels]
    feature = {
        IMAGE_BYTES_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
        LABELS_KEY if multi_label else LABEL_KEY: tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[label.encode() for label in label_values])
        ),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _beam_temp_dir(options: PipelineOptions, local_temp_dir: str) -> str:
    """The runner's temp location when it has one (Dataflow workers cannot see local disk)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    return options.view_as(GoogleCloudOptions).temp_location or str(Path(local_temp_dir))
