"""The two-stage fit and what it records: with pretrained weights, the head on a frozen backbone,
then the top of the backbone unfrozen at a tenth of the learning rate; from scratch, everything
at once. The weights kept are the best epoch's on validation loss across both stages: a
fine-tuning stage that does worse than the head leaves the head's. Each epoch is backed up and
each finished stage saved, so a killed and restarted step resumes where it stopped."""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import tensorflow as tf

from imgclf.components import artifacts, storage
from imgclf.components.model.classifier import unfreeze_top
from imgclf.components.training import workers
from imgclf.components.training.adversarial import AdversarialTraining
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.dataset import train_label_counts
from imgclf.components.training.hardware import precision_policy
from imgclf.components.training.objectives import (
    balanced_class_weights,
    make_loss,
    make_optimizer,
)
from imgclf.components.training.trainer import Trainer
from imgclf.components.transform import features

log = logging.getLogger(__name__)


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
    # The processes that trained together (TF_CONFIG's chief and workers).
    workers: int = 1
    precision_policy: str = "float32"
    # Per TFLite quantisation: its file, size and agreement with the model.
    tflite: dict[str, dict] | None = None
    # The epoch whose weights were exported: stage, epoch (1-based, across stages) and the
    # monitored validation loss.
    kept: dict | None = None
    # The head stage's first epoch (0-based) that early stopping may pick: the one that
    # completes min_head_steps.
    head_selectable_from: int = 0
    # Why stage 2 did not run though fine_tune_epochs asked for it; None where it ran.
    fine_tune_skipped: str | None = None

    @property
    def final_metrics(self) -> dict[str, float]:
        return {name: values[-1] for name, values in self.history.items() if values}


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
        train_images=features.read_counts(examples_dir)["train"],
        replicas=(strategy or tf.distribute.get_strategy()).num_replicas_in_sync,
        workers=workers.from_environment().count,
        precision_policy=precision_policy(config.mixed_precision),
    )
    if config.class_weight == "balanced":
        counts = train_label_counts(examples_dir, len(class_names))
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
    at a tenth of the learning rate. From scratch: everything at once. The model ends with
    the weights of the best epoch on validation loss across the stages (``result.kept``).
    ``callbacks`` join every stage's. Only the chief writes the mirror; the other workers
    restore from it."""
    data = (train_data, validation_data)
    if config.checkpoint_dir and config.checkpoint_mirror:
        _restore_mirrored_checkpoints(config)
        if workers.from_environment().is_chief:
            callbacks = [*callbacks, _MirrorCheckpoints(config)]
    if not config.pretrained:
        epochs = config.epochs + config.fine_tune_epochs
        _fit(model, "full", *data, config.learning_rate, epochs, config, result, callbacks)
    else:
        backbone.trainable = False
        epochs, result.head_selectable_from = head_schedule(config, result)
        _fit(
            model,
            "head",
            *data,
            config.learning_rate,
            epochs,
            config,
            result,
            callbacks,
            selectable_from=result.head_selectable_from,
        )
        if fine_tunes(config, result):
            _fine_tune(model, backbone, data, config, result, callbacks)
    result.kept = best_epoch(result)


def head_schedule(config: TrainConfig, result: TrainResult) -> tuple[int, int]:
    """The head stage's epochs and the first (0-based) that early stopping may stop after or
    keep: ``epochs``, or more where they make fewer than ``min_head_steps`` optimizer steps;
    before those steps, a validation split of a few images would pick a head that barely
    trained."""
    if config.epochs == 0:
        return 0, 0
    steps = _steps_per_epoch(config, result)
    needed = math.ceil(config.min_head_steps / steps)
    epochs = max(config.epochs, needed)
    if epochs > config.epochs:
        log.info(
            "Stage head: %d epochs instead of %d, so that %d train images (%d steps an epoch) "
            "make min_head_steps=%d steps",
            epochs,
            config.epochs,
            result.train_images,
            steps,
            config.min_head_steps,
        )
    return epochs, max(needed - 1, 0)


def fine_tunes(config: TrainConfig, result: TrainResult) -> bool:
    """Whether stage 2 runs: asked for, and on enough images a class that it can pay and be
    seen to. Where it does not run for want of images, ``result.fine_tune_skipped`` says why."""
    if config.fine_tune_epochs == 0:
        return False
    per_class = result.train_images / max(len(result.class_names), 1)
    if per_class >= config.min_fine_tune_images_per_class:
        return True
    result.fine_tune_skipped = (
        f"{result.train_images} train images make {per_class:.0f} a class, fewer than "
        f"min_fine_tune_images_per_class={config.min_fine_tune_images_per_class}"
    )
    log.info(
        "Stage 2 (fine-tuning) skipped: %s; the head stage's model is exported",
        result.fine_tune_skipped,
    )
    return False


def _steps_per_epoch(config: TrainConfig, result: TrainResult) -> int:
    return max(1, math.ceil(result.train_images / (config.batch_size * result.replicas)))


def _fine_tune(model, backbone, data, config: TrainConfig, result: TrainResult, callbacks):
    """The top of the backbone at a tenth of the learning rate; its weights replace the head
    stage's only if they do better on validation."""
    # By variable, not by position: unfreezing reorders a model's weight list.
    head_weights = [(variable, variable.numpy()) for variable in model.weights]
    unfrozen = unfreeze_top(backbone, config.unfreeze_fraction)
    log.info(
        "Stage 2: fine-tuning the top %d of %d backbone layers", unfrozen, len(backbone.layers)
    )
    rate, epochs = config.learning_rate / 10, config.fine_tune_epochs
    _fit(model, "fine_tune", *data, rate, epochs, config, result, callbacks)
    best = best_epoch(result)
    if best and best["stage"] == "head":
        for variable, value in head_weights:
            variable.assign(value)
        log.info(
            "Fine-tuning did not beat the head stage on validation loss (best %.4g against "
            "%.4g at epoch %d): the head stage's weights are kept",
            _stage_best(result, "fine_tune"),
            best["val_loss"],
            best["epoch"],
        )


def _fit(
    model,
    stage,
    train_data,
    validation_data,
    learning_rate,
    epochs,
    config,
    result,
    extra=(),
    selectable_from=0,
):
    if epochs <= 0:
        return
    if _restore_finished_stage(model, stage, config, result):
        return
    steps_per_epoch = _steps_per_epoch(config, result)
    worker = workers.from_environment()
    log.info(
        "Stage %s: %d epochs of %d steps, %s at learning rate %g (%s)%s",
        stage,
        epochs,
        steps_per_epoch,
        config.optimizer,
        learning_rate,
        config.learning_rate_schedule,
        f", on {worker.describe()}" if worker.across_processes else "",
    )
    if result.multi_label:
        metrics = [
            keras.metrics.BinaryAccuracy(name="binary_accuracy"),
            keras.metrics.AUC(curve="PR", multi_label=True, name="average_precision"),
        ]
    else:
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    fitted = _trainer(model, stage, config, worker.across_processes)
    if isinstance(fitted, AdversarialTraining):
        log.info(
            "Stage %s: adversarial training (%s), %g of each batch perturbed by up to %g grey "
            "levels",
            stage,
            config.adversarial_training,
            config.adversarial_share,
            config.adversarial_epsilon,
        )
    fitted.compile(
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
            start_from_epoch=selectable_from,
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
        history = fitted.fit(
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
        model.save_weights(_finished_stage_file(config, stage, artifacts.FINISHED_STAGE_WEIGHTS))
        storage.write_bytes(
            _finished_stage_file(config, stage, artifacts.FINISHED_STAGE_HISTORY),
            json.dumps(stage_history).encode(),
        )
        if config.checkpoint_mirror and worker.is_chief:
            storage.mirror_folder(config.checkpoint_dir, config.checkpoint_mirror)


def _trainer(model, stage: str, config: TrainConfig, across_processes: bool) -> keras.Model:
    """What ``fit`` trains in ``stage``: ``model`` itself; in the stage that trains the
    backbone with adversarial training on, a trainer that perturbs a share of each batch;
    across processes, a trainer Keras can fit there (``trainer``)."""
    if config.adversarial_training != "none" and stage != "head":
        trainer = AdversarialTraining(
            model,
            config.adversarial_training,
            config.adversarial_epsilon,
            config.adversarial_share,
            across_processes,
        )
    elif across_processes:
        trainer = Trainer(model, across_processes=True)
    else:
        return model
    # Built before fit, as BackupAndRestore requires; its weights are the classifier's.
    trainer.build(model.input_shape)
    return trainer


class _MirrorCheckpoints(keras.callbacks.Callback):
    """Copies the epoch's backup to the mirror once BackupAndRestore has written it (callbacks
    run in list order, and the backup comes first)."""

    def __init__(self, config: TrainConfig):
        super().__init__()
        self.config = config

    def on_epoch_end(self, epoch, logs=None):
        storage.mirror_folder(self.config.checkpoint_dir, self.config.checkpoint_mirror)


def _restore_mirrored_checkpoints(config: TrainConfig) -> None:
    """A restarted pod starts with an empty disk: the mirror brings back what the killed one
    had backed up, for BackupAndRestore and the finished stages to pick up."""
    if not storage.is_dir(config.checkpoint_mirror):
        return
    storage.download_folder(config.checkpoint_mirror, config.checkpoint_dir)
    for metadata in sorted(Path(config.checkpoint_dir).glob("*/training_metadata.json")):
        epoch = json.loads(metadata.read_text()).get("epoch", -1) + 1
        log.info("Resuming stage %s after epoch %d (%s)", metadata.parent.name, epoch, metadata)
    log.info("Restored the checkpoints of a previous attempt from %s", config.checkpoint_mirror)


def best_epoch(result: TrainResult) -> dict | None:
    """The epoch of lowest validation loss across the stages, each stage having been restored
    to its own best by early stopping; none without a validation split."""
    losses = result.history.get("val_loss")
    if not losses:
        return None
    head_epochs_seen = 0
    selectable = []
    for index, stage in enumerate(result.stages):
        if stage == "head":
            head_epochs_seen += 1
            if head_epochs_seen <= result.head_selectable_from:
                continue
        selectable.append(index)
    index = min(selectable, key=lambda i: (losses[i], i))
    return {"stage": result.stages[index], "epoch": index + 1, "val_loss": losses[index]}


def _stage_best(result: TrainResult, stage: str) -> float:
    return min(
        loss
        for loss, of in zip(result.history["val_loss"], result.stages, strict=True)
        if of == stage
    )


def _record_stage(result: TrainResult, stage: str, history: dict[str, list[float]]) -> None:
    for name, values in history.items():
        result.history.setdefault(name, []).extend(values)
    result.stages.extend([stage] * len(next(iter(history.values()), [])))


def _finished_stage_file(config: TrainConfig, stage: str, name: str) -> str:
    return storage.join(config.checkpoint_dir, name.format(stage=stage))


def _restore_finished_stage(model, stage: str, config: TrainConfig, result: TrainResult) -> bool:
    """After a restart: loads a stage that had finished, and says so."""
    if not config.checkpoint_dir:
        return False
    weights = _finished_stage_file(config, stage, artifacts.FINISHED_STAGE_WEIGHTS)
    if not storage.exists(weights):
        return False
    model.load_weights(weights)
    history_file = _finished_stage_file(config, stage, artifacts.FINISHED_STAGE_HISTORY)
    history = json.loads(storage.read_bytes(history_file))
    _record_stage(result, stage, history)
    log.info("Stage %s had finished before a restart: its weights are restored", stage)
    return True
