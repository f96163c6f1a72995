"""The trainer's input: batches of uint8 images and float32 label rows from the TFRecords, with
tf.data's habits (parallel interleave and parse, an in-memory cache when it fits, shuffle,
prefetch) and no Python in the hot path."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_transform as tft

from imgclf.components.model import augmentation
from imgclf.components.training.config import TrainConfig
from imgclf.components.transform import features

log = logging.getLogger(__name__)

_SHUFFLE_BUFFER = 2048
# A split is cached in memory, decoded, when it takes at most this share of the memory
# available to the step; the rest is for the model, the batches and the runtime.
CACHE_MEMORY_SHARE = 0.25


def sized_for_data(config: TrainConfig, transform_dir: str) -> TrainConfig:
    """``config`` at the image size the transform graph makes: a fact of the data, not a
    setting of the trainer."""
    image_size = features.Preprocessing.read(transform_dir).image_size
    return dataclasses.replace(config, image_size=image_size)


def make_dataset(
    examples_dir: str,
    split: str,
    tft_output: tft.TFTransformOutput,
    config: TrainConfig,
    training: bool,
    replicas: int = 1,
) -> tf.data.Dataset:
    """Global batches (``batch_size`` per replica) of ``(images, labels)`` from the TFRecords:
    uint8 images (the model casts them,
    on the GPU where there is one: a quarter of float32's bytes to move) and float32 one-hot
    label rows (multi-hot for multi-label data). Training data is shuffled and gets the
    batch-mixing augmentations (MixUp, CutMix), which blend labels too and so give float32
    images in [0, 255]."""
    files = sorted(tf.io.gfile.glob(features.split_file_pattern(examples_dir, split)))
    if not files:
        raise FileNotFoundError(f"No {split} TFRecords in {examples_dir}.")
    feature_spec = tft_output.transformed_feature_spec()
    image_size = config.image_size
    multi_label = features.is_multi_label(tft_output)
    num_classes = tft_output.vocabulary_size_by_name(features.LABEL_VOCABULARY)

    def parse(records):
        parsed = tf.io.parse_example(records, feature_spec)
        images = features.parse_images(parsed[features.IMAGE_KEY], image_size)
        if not multi_label:
            return images, tf.one_hot(parsed[features.LABEL_ID_KEY], num_classes)
        label_ids = parsed[features.LABEL_IDS_KEY]
        # Labels absent from the train split's vocabulary map to -1: not a class to learn.
        known = tf.sparse.retain(label_ids, label_ids.values >= 0)
        return images, tf.cast(tf.sparse.to_indicator(known, num_classes), tf.float32)

    dataset = tf.data.Dataset.from_tensor_slices(files)
    if training:
        dataset = dataset.shuffle(len(files), seed=config.seed)
    dataset = dataset.interleave(
        lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP"),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    images = features.read_counts(examples_dir)[split]
    if images * image_size * image_size * 3 <= CACHE_MEMORY_SHARE * available_memory():
        # Read and decompress once; later epochs come from memory, still reshuffled below.
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(_SHUFFLE_BUFFER, seed=config.seed)
    dataset = dataset.batch(config.batch_size * replicas).map(
        parse, num_parallel_calls=tf.data.AUTOTUNE
    )
    mix = augmentation.batch_mixing(config.augmentations, config.seed) if training else None
    if mix is not None:
        dataset = dataset.map(
            lambda images, labels: mix(tf.cast(images, tf.float32), labels),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    options = tf.data.Options()
    # Across processes, each worker keeps its replicas' share of every global batch (DATA)
    # rather than a share of the files: a worker given fewer files would run out of batches
    # before the others and leave them waiting in the all-reduce. Each worker reads every record.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options).prefetch(tf.data.AUTOTUNE)


def available_memory() -> int:
    """Bytes of memory this process may still use: what the machine has free, or less under
    a container's limit (cgroup v2)."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cgroup = Path("/sys/fs/cgroup")
    limit, used = cgroup / "memory.max", cgroup / "memory.current"
    if limit.is_file() and used.is_file() and limit.read_text().strip().isdigit():
        available = min(available, int(limit.read_text()) - int(used.read_text()))
    return available


def optional_split(examples_dir, split, tft_output, config, replicas) -> tf.data.Dataset | None:
    if not tf.io.gfile.glob(features.split_file_pattern(examples_dir, split)):
        log.warning("No %s split: early stopping watches the training loss instead", split)
        return None
    return make_dataset(examples_dir, split, tft_output, config, training=False, replicas=replicas)


def train_label_counts(examples_dir: str, num_classes: int) -> list[int]:
    """Train images per label id, read from the records' labels alone."""
    files = tf.io.gfile.glob(features.split_file_pattern(examples_dir, "train"))
    spec = {features.LABEL_ID_KEY: tf.io.FixedLenFeature([], tf.int64)}
    label_ids = (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .batch(1024)
        .map(lambda records: tf.io.parse_example(records, spec)[features.LABEL_ID_KEY])
    )
    counts = np.zeros(num_classes, np.int64)
    for batch in label_ids:
        counts += np.bincount(batch.numpy(), minlength=num_classes)[:num_classes]
    return counts.tolist()
