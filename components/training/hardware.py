"""The hardware a training run finds: how many replicas train together, and in what precision."""

from __future__ import annotations

import json
import os

import tensorflow as tf


def distribution_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when ``TF_CONFIG`` describes a cluster, MirroredStrategy
    across several local GPUs, the default strategy on one device."""
    tf_config = os.environ.get("TF_CONFIG")
    if tf_config:
        processes = training_processes(tf_config)
        if processes > 1:
            raise RuntimeError(
                f"TF_CONFIG names {processes} training processes, and this Keras cannot train "
                "across processes: Model.fit fails under MultiWorkerMirroredStrategy with more "
                "than one worker (keras-team/keras#20585); train in one pod, whose GPUs train "
                "together (MirroredStrategy)."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def training_processes(tf_config: str) -> int:
    """How many processes ``TF_CONFIG`` has training together: its chief and its workers."""
    try:
        cluster = json.loads(tf_config).get("cluster", {})
    except (ValueError, AttributeError) as error:
        raise ValueError(
            f"TF_CONFIG must be a JSON object with a cluster and a task ({error}): "
            f"{tf_config[:200]!r}"
        ) from error
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))


def precision_policy(mixed_precision: str) -> str:
    """The Keras dtype policy for the ``mixed_precision`` setting."""
    if mixed_precision == "auto":
        return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"
    return "mixed_float16" if mixed_precision == "on" else "float32"
