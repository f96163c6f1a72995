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
    problems = backbone_problems(config)
    if problems:
        raise ValueError(" ".join(problems))
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(precision_policy(config.mixed_precision))
    try:
        return _build_model(spec, config, num_classes, multi_label)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


def backbone_problems(config: TrainConfig) -> list[str]:
    """What makes the backbone impossible to build as configured, found without building it."""
    spec = get_backbone(config.backbone)
    problems = []
    if config.image_size < spec.min_image_size:
        problems.append(
            f"image_size {config.image_size} is below {spec.name}'s smallest input, "
            f"{spec.min_image_size}; its default is {spec.default_image_size}."
        )
    if config.alpha != 1 and not spec.width_multiplier:
        problems.append(
            f"alpha={config.alpha:g} has no effect on {spec.name}: only the MobileNets take a "
            "width multiplier; leave alpha at 1."
        )
    if config.weights.lower() == "imagenet" and not spec.imagenet_weights:
        problems.append(
            f"weights=imagenet: no ImageNet weights exist for {spec.name}; pass weights=none to "
            "train it from scratch, or weights=PATH to a Keras weights file of its headless "
            "architecture."
        )
    return problems


def build_backbone(config: TrainConfig) -> keras.Model:
    """The headless backbone with its weights: a file that does not fit it, or ImageNet
    weights that cannot be had, fail here with what to pass instead."""
    spec = get_backbone(config.backbone)
    shape = (config.image_size, config.image_size, 3)
    weights = _keras_weights(config.weights)
    try:
        return spec.build(shape, weights, config.alpha)
    except Exception as error:  # Keras raises a bare Exception for a failed download
        hint = (
            "without internet access pass weights=PATH (a Keras weights file) or weights=none"
            if config.weights.lower() == "imagenet"
            else "the file must hold weights of this backbone and alpha, without the top"
        )
        # Keras' messages run over several lines (the second one often says which layer).
        reason = " ".join(str(error).split())[:400] or type(error).__name__
        raise RuntimeError(
            f"weights={config.weights} could not be loaded into {spec.name} "
            f"(alpha={config.alpha:g}, image_size={config.image_size}): {reason}; {hint}."
        ) from error


def _build_model(spec, config: TrainConfig, num_classes: int, multi_label: bool):
    pretrained = config.pretrained
    backbone = build_backbone(config)
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
            f"weights: the file {weights} does not exist; pass weights=imagenet, none, or an "
            "existing Keras .h5/.weights.h5 file."
        )
    return str(Path(weights).resolve())
