"""What training minimises and how: the loss, the optimizer with its learning-rate schedule, and
class weights."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from imgclf.components.training.config import TrainConfig


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
