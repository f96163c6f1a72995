"""The network train fits: a backbone with its weights under the classifier head, built in the
precision the hardware calls for."""

from __future__ import annotations

import tempfile
from pathlib import Path

import keras

from imgclf.components import storage
from imgclf.components.model import augmentation
from imgclf.components.model.backbones import get_backbone
from imgclf.components.model.classifier import classifier
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.hardware import precision_policy


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
    pretrained = config.pretrained
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


def _speed_up_batch_norm_statistics(backbone: keras.Model) -> None:
    """From scratch, BatchNormalization's moving statistics trail weights that change fast;
    at Keras' default momentum of 0.99 a short run validates on stale statistics and looks
    like chance. 0.9 lets them keep up."""
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9


def _keras_weights(weights: str) -> str | None:
    """``imagenet`` | ``none`` | a weights file on a local path or a store, as Keras takes it."""
    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    if storage.is_remote(weights):
        local = Path(tempfile.mkdtemp()) / Path(weights).name
        local.write_bytes(storage.read_bytes(weights))
        return str(local)
    if not Path(weights).is_file():
        raise FileNotFoundError(
            f"Weights file {weights} not found; pass weights=imagenet, none, or an existing "
            "Keras .h5/.weights.h5 file."
        )
    return str(Path(weights).resolve())
