"""Train: Keras transfer learning on the preprocessed TFRecords, exported for TF Serving.

With pretrained weights, stage 1 trains the new head on a frozen backbone, then stage 2
unfreezes the top of the backbone at a tenth of the learning rate (``stages``). BatchNormalization
layers stay frozen in both stages, which in Keras 3 also keeps them in inference mode: they keep
their ImageNet statistics (updating them from small batches wrecks a pretrained network).
Calling the backbone with ``training=False`` is not enough in Keras 3, whose functional models
pass the outer ``training`` flag down to every layer. Without pretrained weights there is
nothing to protect: the whole network trains from the start with BatchNormalization learning
normally.

The distribution strategy follows the hardware (``hardware``): MirroredStrategy across the local
GPUs, MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster (Kubeflow's TFJob sets it
in each worker's pod), the default strategy otherwise. ``batch_size`` is per replica, so the
global batch grows with the replicas; the learning rate is not scaled with it (the log says
both). Across processes, every worker trains and saves, and only the chief's files are kept
(``workers``): the others write to a temporary folder, and restore from the chief's
checkpoints. On a GPU the model computes in float16
(``mixed_float16``) with a float32 output layer, so scores and the loss keep full precision.

Multi-label data (a list of labels per image) trains a sigmoid per class with binary
cross-entropy; after training, each class gets the score threshold that maximises its F1 on the
validation split (``thresholds``), and the serving signature applies those thresholds.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow_transform as tft

from imgclf.components import artifacts
from imgclf.components.serving import signature, tflite
from imgclf.components.training import record, workers
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.dataset import make_dataset, optional_split, sized_for_data
from imgclf.components.training.hardware import distribution_strategy
from imgclf.components.training.network import build_model
from imgclf.components.training.stages import TrainResult, fit_stages, new_result
from imgclf.components.training.thresholds import per_class_thresholds
from imgclf.components.transform import features

log = logging.getLogger(__name__)


def train(
    examples_dir: str,
    transform_dir: str,
    model_dir: str,
    config: TrainConfig,
    keras_model_path: str | None = None,
) -> TrainResult:
    """Trains on ``examples_dir/{train,validation}`` and writes the serving SavedModel; with
    ``keras_model_path``, the Keras model too (a ``.keras`` file, for Grad-CAM). A worker
    other than the chief writes all of that to a temporary folder, then removes it."""
    worker = workers.from_environment()
    if worker.is_chief:
        return _train(examples_dir, transform_dir, model_dir, config, keras_model_path)
    scratch = Path(tempfile.mkdtemp(prefix=f"imgclf-{worker.task_type}{worker.index}-"))
    try:
        return _train(
            examples_dir,
            transform_dir,
            str(scratch / "model"),
            _written_to(scratch, config),
            str(scratch / "model.keras") if keras_model_path else None,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _written_to(scratch: Path, config: TrainConfig) -> TrainConfig:
    """``config`` for a worker other than the chief: its checkpoints and logs in ``scratch``,
    restored from the chief's (its mirror, or its folder where all workers share a disk)."""
    return dataclasses.replace(
        config,
        checkpoint_dir=str(scratch / "checkpoints") if config.checkpoint_dir else "",
        checkpoint_mirror=config.checkpoint_mirror or config.checkpoint_dir,
        tensorboard_dir=str(scratch / "tensorboard") if config.tensorboard_dir else "",
    )


def _train(
    examples_dir: str,
    transform_dir: str,
    model_dir: str,
    config: TrainConfig,
    keras_model_path: str | None,
) -> TrainResult:
    keras.utils.set_random_seed(config.seed)
    config = sized_for_data(config, transform_dir)
    tft_output = tft.TFTransformOutput(transform_dir)
    class_names = features.class_names(tft_output)
    multi_label = features.is_multi_label(tft_output)
    log.info(
        "Training %s on %d classes%s: %s",
        config.backbone,
        len(class_names),
        " (multi-label)" if multi_label else "",
        class_names,
    )
    if multi_label and config.class_weight != "none":
        raise ValueError(
            "class_weight='balanced' weighs an image by its one class; multi-label images have "
            "several. Use class_weight='none' (thresholds per class already adapt to rare "
            "labels)."
        )
    strategy = distribution_strategy()
    result = new_result(examples_dir, class_names, multi_label, config, strategy)
    if result.workers > 1:
        log.info("This process is %s", workers.from_environment().describe())
    log.info(
        "%s with %d replica(s) in %d process(es): global batch %d (%d per replica), learning "
        "rate %g as set (not scaled with the global batch), %s",
        type(strategy).__name__,
        result.replicas,
        result.workers,
        config.batch_size * result.replicas,
        config.batch_size,
        config.learning_rate,
        result.precision_policy,
    )
    if result.class_weights:
        log.info(
            "Class weights: %s", dict(zip(class_names, result.class_weights.values(), strict=True))
        )
    with strategy.scope():
        train_data = make_dataset(
            examples_dir, "train", tft_output, config, training=True, replicas=result.replicas
        )
        validation_data = optional_split(
            examples_dir, "validation", tft_output, config, result.replicas
        )
        model, backbone = build_model(config, len(class_names), multi_label)
        fit_stages(model, backbone, train_data, validation_data, config, result)

    if multi_label:
        threshold_data = validation_data
        if threshold_data is None:
            threshold_data = make_dataset(examples_dir, "train", tft_output, config, training=False)
        result.thresholds = per_class_thresholds(model, threshold_data)
        log.info("Per-class thresholds: %s", dict(zip(class_names, result.thresholds, strict=True)))
    signature.export(
        model, transform_dir, class_names, config.image_size, model_dir, result.thresholds
    )
    extra = Path(model_dir) / artifacts.ASSETS_EXTRA
    quantizations = tflite.parse_quantizations(config.tflite)
    if quantizations:
        split = "validation" if validation_data is not None else "train"
        samples = make_dataset(examples_dir, split, tft_output, config, training=False)
        images = np.concatenate([batch.numpy() for batch, _ in samples.take(4)])
        folder = str(extra / artifacts.TFLITE_FOLDER)
        result.tflite = tflite.export(model, folder, quantizations, images)
    if keras_model_path:
        Path(keras_model_path).parent.mkdir(parents=True, exist_ok=True)
        model.save(keras_model_path)
    record.write(extra, config, result, features.Preprocessing.read(transform_dir))
    log.info("Exported the serving SavedModel to %s", model_dir)
    return result
