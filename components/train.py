"""Train: Keras transfer learning on the preprocessed TFRecords, exported for TF Serving.

With pretrained weights, stage 1 trains the new head on a frozen backbone, then stage 2
unfreezes the top of the backbone at a tenth of the learning rate. BatchNormalization layers
stay frozen in both stages, which in Keras 3 also keeps them in inference mode: they keep their
ImageNet statistics (updating them from small batches wrecks a pretrained network). Calling
the backbone with ``training=False`` is not enough in Keras 3, whose functional models pass the
outer ``training`` flag down to every layer.
Without pretrained weights there is nothing to protect: the whole network trains from the start
with BatchNormalization learning normally.

The distribution strategy follows the hardware: MirroredStrategy across the local GPUs,
MultiWorkerMirroredStrategy when ``TF_CONFIG`` names a cluster, the default strategy otherwise;
``batch_size`` is per replica. On a GPU the model computes in float16 (``mixed_float16``) with a
float32 output layer, so scores and the loss keep full precision.

Multi-label data (a list of labels per image) trains a sigmoid per class with binary
cross-entropy; after training, each class gets the score threshold that maximises its F1 on the
validation split, and the serving signature applies those thresholds.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_transform as tft
from sklearn.metrics import precision_recall_curve

from components import augmentation, preprocess, serving, storage, tflite_export
from components.backbones import get_backbone
from components.classifier import classifier, unfreeze_top

log = logging.getLogger(__name__)

_SHUFFLE_BUFFER = 2048
# A split is cached in memory, decoded, when it takes at most this share of the memory
# available to the step; the rest is for the model, the batches and the runtime.
CACHE_MEMORY_SHARE = 0.25
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
CLASS_WEIGHTS = ("none", "balanced")
# The Keras model's file in train's keras_model artifact (Grad-CAM reads it).
KERAS_MODEL_FILE = "model.keras"
LOSSES = ("crossentropy", "focal")
MIXED_PRECISION = ("auto", "on", "off")


@dataclass
class TrainConfig:
    backbone: str = "mobilenet"
    weights: str = "imagenet"
    alpha: float = 1.0
    image_size: int = 224
    # The training defaults below were measured on the clothing photos (MobileNet v1 0.25,
    # 224 px); the figures are in create_pipeline's docstring, which README's table is made from.
    # A short head stage, then the whole backbone fine-tuned for long: the model underfits.
    epochs: int = 2
    fine_tune_epochs: int = 30
    batch_size: int = 32
    # Fine-tuning at a tenth of 0.01 diverges at a constant rate; the warmup and cosine decay
    # below are what keep it stable.
    learning_rate: float = 1e-2
    unfreeze_fraction: float = 1.0
    dropout: float = 0.2
    augmentations: str = augmentation.DEFAULT_AUGMENTATIONS
    # Under the cosine schedule validation loss keeps improving until the rate has decayed, but
    # on a few hundred images it wanders for several epochs on the way.
    early_stopping_patience: int = 10
    optimizer: str = "adam"
    # "cosine": linear warmup over warmup_epochs, then cosine decay to zero over each stage.
    learning_rate_schedule: str = "cosine"
    warmup_epochs: int = 1
    label_smoothing: float = 0.0
    # "balanced": each class weighs train images / (classes x its images), as scikit-learn's.
    class_weight: str = "none"
    # "focal": cross-entropy scaled by (1 - p)^focal_gamma, which puts the weight on hard images.
    loss: str = "crossentropy"
    focal_gamma: float = 2.0
    # L2 penalty on the classifier head's weights.
    l2: float = 0.0
    # "auto": mixed_float16 on a GPU, float32 on a CPU (where float16 is slower).
    mixed_precision: str = "auto"
    # Compile train steps with XLA.
    xla: bool = False
    # Where TensorBoard logs go, one run per stage; "" for none.
    tensorboard_dir: str = ""
    # TFLite exports beside the SavedModel (assets.extra/tflite): "float16", "int8", both
    # comma-separated, or "none".
    tflite: str = "none"
    # Where each epoch is backed up, so that a killed and restarted step resumes; "" for none.
    checkpoint_dir: str = ""
    seed: int = 42

    @classmethod
    def from_parameters(cls, parameters: dict, **overrides) -> TrainConfig:
        """The config from a KFP step's parameters: those named as fields, then
        ``overrides``."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in parameters.items() if k in names}, **overrides)

    def __post_init__(self):
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("learning_rate_schedule", LEARNING_RATE_SCHEDULES),
            ("class_weight", CLASS_WEIGHTS),
            ("loss", LOSSES),
            ("mixed_precision", MIXED_PRECISION),
        ):
            if getattr(self, name) not in choices:
                raise ValueError(
                    f"{name} must be one of {', '.join(choices)}, not {getattr(self, name)!r}."
                )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), not {self.label_smoothing}.")
        if self.l2 < 0 or self.focal_gamma < 0:
            raise ValueError("l2 and focal_gamma must not be negative.")
        tflite_export.parse_quantizations(self.tflite)
        if self.xla and augmentation.geometric(self.augmentations):
            raise ValueError(
                f"xla cannot compile the {', '.join(augmentation.geometric(self.augmentations))} "
                "augmentation (its image warp has no XLA kernel); drop it from augmentations or "
                "turn xla off."
            )


@dataclass
class TrainResult:
    class_names: list[str]
    multi_label: bool = False
    # Multi-label only: per class, the score from which the class is predicted present.
    thresholds: list[float] | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    stages: list[str] = field(default_factory=list)
    train_images: int = 0
    class_weights: dict[int, float] | None = None
    replicas: int = 1
    precision_policy: str = "float32"
    # Per TFLite quantisation: its file, size and agreement with the model.
    tflite: dict[str, dict] | None = None

    @property
    def final_metrics(self) -> dict[str, float]:
        return {name: values[-1] for name, values in self.history.items() if values}


def train(
    examples_dir: str,
    transform_dir: str,
    model_dir: str,
    config: TrainConfig,
    keras_model_path: str | None = None,
) -> TrainResult:
    """Trains on ``examples_dir/{train,validation}`` and writes the serving SavedModel; with
    ``keras_model_path``, the Keras model too (a ``.keras`` file, for Grad-CAM)."""
    keras.utils.set_random_seed(config.seed)
    tft_output = tft.TFTransformOutput(transform_dir)
    class_names = [
        name.decode() for name in tft_output.vocabulary_by_name(preprocess.LABEL_VOCABULARY)
    ]
    multi_label = preprocess.is_multi_label(tft_output)
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
    log.info(
        "%s with %d replica(s), global batch %d, %s",
        type(strategy).__name__,
        result.replicas,
        config.batch_size * result.replicas,
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
        validation_data = _optional_split(
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
    serving.export(
        model, transform_dir, class_names, config.image_size, model_dir, result.thresholds
    )
    extra = Path(model_dir) / "assets.extra"
    quantizations = tflite_export.parse_quantizations(config.tflite)
    if quantizations:
        split = "validation" if validation_data is not None else "train"
        samples = make_dataset(examples_dir, split, tft_output, config, training=False)
        images = np.concatenate([batch.numpy() for batch, _ in samples.take(4)])
        result.tflite = tflite_export.export(model, str(extra / "tflite"), quantizations, images)
    if keras_model_path:
        Path(keras_model_path).parent.mkdir(parents=True, exist_ok=True)
        model.save(keras_model_path)
    extra.mkdir(parents=True, exist_ok=True)
    (extra / serving.TRAINING_FILE).write_text(
        json.dumps({"config": asdict(config), **asdict(result)}, indent=2)
    )
    log.info("Exported the serving SavedModel to %s", model_dir)
    return result


def new_result(
    examples_dir: str,
    class_names: list[str],
    multi_label: bool,
    config: TrainConfig,
    strategy: tf.distribute.Strategy | None = None,
) -> TrainResult:
    """What a training run starts from: the data's counts, the hardware's replicas and
    precision, and the class weights ``config`` asks for."""
    result = TrainResult(
        class_names=class_names,
        multi_label=multi_label,
        train_images=preprocess.read_counts(examples_dir)["train"],
        replicas=(strategy or tf.distribute.get_strategy()).num_replicas_in_sync,
        precision_policy=precision_policy(config.mixed_precision),
    )
    if config.class_weight == "balanced":
        counts = _train_label_counts(examples_dir, len(class_names))
        result.class_weights = balanced_class_weights(counts)
    return result


def fit_stages(
    model: keras.Model,
    backbone: keras.Model,
    train_data: tf.data.Dataset,
    validation_data: tf.data.Dataset | None,
    config: TrainConfig,
    result: TrainResult,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> None:
    """With pretrained weights: the head on a frozen backbone, then the top of the backbone
    at a tenth of the learning rate. From scratch: everything at once. ``callbacks`` join
    every stage's."""
    data = (train_data, validation_data)
    if config.weights.lower() == "none":
        epochs = config.epochs + config.fine_tune_epochs
        _fit(model, "full", *data, config.learning_rate, epochs, config, result, callbacks)
        return
    backbone.trainable = False
    _fit(model, "head", *data, config.learning_rate, config.epochs, config, result, callbacks)
    if config.fine_tune_epochs > 0:
        unfrozen = unfreeze_top(backbone, config.unfreeze_fraction)
        log.info(
            "Stage 2: fine-tuning the top %d of %d backbone layers", unfrozen, len(backbone.layers)
        )
        rate, epochs = config.learning_rate / 10, config.fine_tune_epochs
        _fit(model, "fine_tune", *data, rate, epochs, config, result, callbacks)


def distribution_strategy() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy when ``TF_CONFIG`` describes a cluster, MirroredStrategy
    across several local GPUs, the default strategy on one device."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def precision_policy(mixed_precision: str) -> str:
    """The Keras dtype policy for the ``mixed_precision`` setting."""
    if mixed_precision == "auto":
        return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"
    return "mixed_float16" if mixed_precision == "on" else "float32"


def build_model(
    config: TrainConfig, num_classes: int, multi_label: bool = False
) -> tuple[keras.Model, keras.Model]:
    """uint8-valued RGB ``[size, size, 3]`` (as float) -> class probabilities (softmax), or
    one independent probability per class (sigmoid) for multi-label data. Layers compute in
    the ``mixed_precision`` policy; the scores layer always in float32."""
    spec = get_backbone(config.backbone)
    if config.image_size < spec.min_image_size:
        raise ValueError(
            f"{spec.name} needs image_size of at least {spec.min_image_size}, not "
            f"{config.image_size}; its default is {spec.default_image_size}."
        )
    if config.weights.lower() == "imagenet" and not spec.imagenet_weights:
        raise ValueError(
            f"No ImageNet weights exist for {spec.name}: pass weights=none to train it from "
            "scratch, or weights=PATH to a Keras weights file of its headless architecture."
        )
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision_policy(config.mixed_precision))
    try:
        return _build_model(spec, config, num_classes, multi_label)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def _build_model(spec, config: TrainConfig, num_classes: int, multi_label: bool):
    shape = (config.image_size, config.image_size, 3)
    pretrained = config.weights.lower() != "none"
    weights = _keras_weights(config.weights)
    try:
        backbone = spec.build(shape, weights, config.alpha)
    except Exception as error:  # Keras raises a bare Exception for a failed download
        hint = (
            "Without internet access pass weights=PATH (a Keras weights file) or weights=none."
            if config.weights.lower() == "imagenet"
            else "The file must hold weights of this backbone and alpha, without the top."
        )
        raise RuntimeError(
            f"Could not load {config.weights} weights into {spec.name} "
            f"(alpha={config.alpha:g}): {error}. {hint}"
        ) from error

    if not pretrained:
        _speed_up_batch_norm_statistics(backbone)
    augmentations = augmentation.augmentation_layers(config.augmentations, config.seed)
    model = classifier(
        spec, backbone, augmentations, config.dropout, num_classes, multi_label, config.l2
    )
    return model, backbone


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
    files = sorted(tf.io.gfile.glob(preprocess.split_file_pattern(examples_dir, split)))
    if not files:
        raise FileNotFoundError(f"No {split} TFRecords in {examples_dir}.")
    feature_spec = tft_output.transformed_feature_spec()
    image_size = config.image_size
    multi_label = preprocess.is_multi_label(tft_output)
    num_classes = tft_output.vocabulary_size_by_name(preprocess.LABEL_VOCABULARY)

    def parse(records):
        features = tf.io.parse_example(records, feature_spec)
        images = preprocess.parse_images(features[preprocess.IMAGE_KEY], image_size)
        if not multi_label:
            return images, tf.one_hot(features[preprocess.LABEL_ID_KEY], num_classes)
        label_ids = features[preprocess.LABEL_IDS_KEY]
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
    images = preprocess.read_counts(examples_dir)[split]
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
    return dataset.prefetch(tf.data.AUTOTUNE)


def available_memory() -> int:
    """Bytes of memory this process may still use: what the machine has free, or less under
    a container's limit (cgroup v2)."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    cgroup = Path("/sys/fs/cgroup")
    limit, used = cgroup / "memory.max", cgroup / "memory.current"
    if limit.is_file() and used.is_file() and limit.read_text().strip().isdigit():
        available = min(available, int(limit.read_text()) - int(used.read_text()))
    return available


def _optional_split(examples_dir, split, tft_output, config, replicas) -> tf.data.Dataset | None:
    if not tf.io.gfile.glob(preprocess.split_file_pattern(examples_dir, split)):
        log.warning("No %s split: early stopping watches the training loss instead", split)
        return None
    return make_dataset(examples_dir, split, tft_output, config, training=False, replicas=replicas)


def _fit(
    model, stage, train_data, validation_data, learning_rate, epochs, config, result, extra=()
):
    if epochs <= 0:
        return
    if _restore_finished_stage(model, stage, config, result):
        return
    log.info(
        "Stage %s: %d epochs, %s at learning rate %g (%s)",
        stage,
        epochs,
        config.optimizer,
        learning_rate,
        config.learning_rate_schedule,
    )
    if result.multi_label:
        metrics = [
            keras.metrics.BinaryAccuracy(name="binary_accuracy"),
            keras.metrics.AUC(curve="PR", multi_label=True, name="average_precision"),
        ]
    else:
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    steps_per_epoch = math.ceil(result.train_images / (config.batch_size * result.replicas))
    model.compile(
        optimizer=make_optimizer(config, learning_rate, steps_per_epoch * epochs, steps_per_epoch),
        loss=make_loss(config, result.multi_label),
        metrics=metrics,
        jit_compile=config.xla,
    )
    monitor = "val_loss" if validation_data is not None else "loss"
    callbacks = [
        keras.callbacks.EarlyStopping(
            monitor=monitor,
            patience=config.early_stopping_patience,
            restore_best_weights=True,
        )
    ]
    if config.checkpoint_dir:
        callbacks.append(
            # double_checkpoint: a kill while the backup is written leaves the previous one,
            # which Keras restores instead of failing on the half-written file.
            keras.callbacks.BackupAndRestore(
                storage.join(config.checkpoint_dir, stage), double_checkpoint=True
            )
        )
    if config.tensorboard_dir:
        callbacks.append(keras.callbacks.TensorBoard(storage.join(config.tensorboard_dir, stage)))
    with warnings.catch_warnings():
        # The splits' length is unknown until read (interleaved files), so Keras learns it by
        # running out of data in the first epoch and warns each stage that the input "ran out";
        # nothing is lost (keras-team/keras#23360 stops the warning, after Keras 3.15).
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        history = model.fit(
            train_data,
            validation_data=validation_data,
            epochs=epochs,
            verbose=2,
            callbacks=[*callbacks, *extra],
            class_weight=result.class_weights,
            shuffle=False,  # make_dataset shuffles; Keras cannot shuffle a tf.data input
        )
    stage_history = {name: [float(v) for v in values] for name, values in history.history.items()}
    _record_stage(result, stage, stage_history)
    if config.checkpoint_dir:
        # BackupAndRestore deletes its backup when the stage ends; this keeps the outcome, so a
        # restart after this point skips the stage instead of training it again.
        model.save_weights(_finished_stage_file(config, stage, "weights.h5"))
        storage.write_bytes(
            _finished_stage_file(config, stage, "history.json"), json.dumps(stage_history).encode()
        )


def make_loss(config: TrainConfig, multi_label: bool) -> keras.losses.Loss:
    """Cross-entropy, or focal cross-entropy with ``focal_gamma``; binary for multi-label.
    Focal loss is not class-balanced here (alpha 1): ``class_weight`` does that job."""
    smoothing = config.label_smoothing
    if config.loss == "focal":
        if multi_label:
            return keras.losses.BinaryFocalCrossentropy(
                gamma=config.focal_gamma, label_smoothing=smoothing
            )
        return keras.losses.CategoricalFocalCrossentropy(
            alpha=1.0, gamma=config.focal_gamma, label_smoothing=smoothing
        )
    if multi_label:
        return keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)


def make_optimizer(
    config: TrainConfig, learning_rate: float, total_steps: int, steps_per_epoch: int
) -> keras.optimizers.Optimizer:
    """The configured optimizer; with the cosine schedule, a linear warmup over
    ``warmup_epochs`` to ``learning_rate`` and a cosine decay to zero by ``total_steps``."""
    rate = learning_rate
    if config.learning_rate_schedule == "cosine":
        warmup_steps = min(config.warmup_epochs * steps_per_epoch, total_steps - 1)
        rate = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=0.0 if warmup_steps else learning_rate,
            decay_steps=max(total_steps - warmup_steps, 1),
            warmup_target=learning_rate if warmup_steps else None,
            warmup_steps=warmup_steps,
        )
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9, nesterov=True)
    optimizer = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "rmsprop": keras.optimizers.RMSprop,
    }[config.optimizer]
    return optimizer(rate)


def balanced_class_weights(label_counts: Sequence[int]) -> dict[int, float]:
    """scikit-learn's "balanced": images / (classes x the class's images); a class without
    train images weighs nothing."""
    total, classes = sum(label_counts), len(label_counts)
    return {
        index: (total / (classes * count) if count else 0.0)
        for index, count in enumerate(label_counts)
    }


def _train_label_counts(examples_dir: str, num_classes: int) -> list[int]:
    """Train images per label id, read from the records' labels alone."""
    files = tf.io.gfile.glob(preprocess.split_file_pattern(examples_dir, "train"))
    spec = {preprocess.LABEL_ID_KEY: tf.io.FixedLenFeature([], tf.int64)}
    label_ids = (
        tf.data.TFRecordDataset(files, compression_type="GZIP")
        .batch(1024)
        .map(lambda records: tf.io.parse_example(records, spec)[preprocess.LABEL_ID_KEY])
    )
    counts = np.zeros(num_classes, np.int64)
    for batch in label_ids:
        counts += np.bincount(batch.numpy(), minlength=num_classes)[:num_classes]
    return counts.tolist()


def _record_stage(result: TrainResult, stage: str, history: dict[str, list[float]]) -> None:
    for name, values in history.items():
        result.history.setdefault(name, []).extend(values)
    result.stages.extend([stage] * len(next(iter(history.values()), [])))


def _finished_stage_file(config: TrainConfig, stage: str, suffix: str) -> str:
    return storage.join(config.checkpoint_dir, f"{stage}-finished.{suffix}")


def _restore_finished_stage(model, stage: str, config: TrainConfig, result: TrainResult) -> bool:
    """After a restart: loads a stage that had finished, and says so."""
    if not config.checkpoint_dir:
        return False
    weights = _finished_stage_file(config, stage, "weights.h5")
    if not storage.exists(weights):
        return False
    model.load_weights(weights)
    history = json.loads(storage.read_bytes(_finished_stage_file(config, stage, "history.json")))
    _record_stage(result, stage, history)
    log.info("Stage %s had finished before a restart: its weights are restored", stage)
    return True


def per_class_thresholds(model: keras.Model, data: tf.data.Dataset) -> list[float]:
    """Per class, the score threshold with the best F1 on ``data`` (multi-hot labels); 0.5
    for a class with no positive in ``data``."""
    scores, truth = [], []
    for images, labels in data:
        scores.append(model(images, training=False).numpy())
        truth.append(labels.numpy())
    scores, truth = np.concatenate(scores), np.concatenate(truth)
    thresholds = []
    for column in range(truth.shape[1]):
        if not truth[:, column].any():
            thresholds.append(0.5)
            continue
        precision, recall, cuts = precision_recall_curve(truth[:, column], scores[:, column])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        thresholds.append(float(cuts[np.argmax(f1)]))
    return thresholds


def _speed_up_batch_norm_statistics(backbone: keras.Model) -> None:
    """From scratch, BatchNormalization's moving statistics trail weights that change fast;
    at Keras' default momentum of 0.99 a short run validates on stale statistics and looks
    like chance. 0.9 lets them keep up."""
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9


def _keras_weights(weights: str) -> str | None:
    """``imagenet`` | ``none`` | a local or ``gs://`` weights file, as Keras takes it."""
    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    if storage.is_gcs(weights):
        local = Path(tempfile.mkdtemp()) / Path(weights).name
        local.write_bytes(storage.read_bytes(weights))
        return str(local)
    if not Path(weights).is_file():
        raise FileNotFoundError(
            f"Weights file {weights} not found; pass weights=imagenet, none, or an existing "
            "Keras .h5/.weights.h5 file."
        )
    return str(Path(weights).resolve())
