"""The hardware a training run finds: how many replicas train together, and in what precision."""

from __future__ import annotations

import os

import tensorflow as tf

from imgclf.components.training import workers


def distribution_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when ``TF_CONFIG`` describes a cluster, MirroredStrategy
    across several local GPUs, the default strategy on one device."""
    if os.environ.get("TF_CONFIG"):
        workers.from_environment()  # a TF_CONFIG that is not JSON is named before TF reads it
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def precision_policy(mixed_precision: str) -> str:
    """The Keras dtype policy for the ``mixed_precision`` setting."""
    if mixed_precision == "auto":
        return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"
    return "mixed_float16" if mixed_precision == "on" else "float32"
