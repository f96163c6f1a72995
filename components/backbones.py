"""Keras Applications backbones, each with its own input scaling and default input size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras


@dataclass(frozen=True)
class Backbone:
    name: str
    default_image_size: int
    # (input_shape, weights, alpha) -> headless Keras model
    build: Callable[[tuple[int, int, int], str | None, float], keras.Model]
    # The layer that maps [0, 255] RGB to what the backbone was trained on; None when the
    # backbone scales its input itself.
    scaling: Callable[[], keras.layers.Layer] | None


def _minus_one_to_one() -> keras.layers.Layer:
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_minus1_1")


BACKBONES: dict[str, Backbone] = {
    "mobilenet": Backbone(
        "mobilenet",
        224,
        lambda shape, weights, alpha: keras.applications.MobileNet(
            input_shape=shape, alpha=alpha, include_top=False, weights=weights
        ),
        _minus_one_to_one,
    ),
    "mobilenet_v2": Backbone(
        "mobilenet_v2",
        224,
        lambda shape, weights, alpha: keras.applications.MobileNetV2(
            input_shape=shape, alpha=alpha, include_top=False, weights=weights
        ),
        _minus_one_to_one,
    ),
    "efficientnetv2b0": Backbone(
        "efficientnetv2b0",
        224,
        lambda shape, weights, alpha: keras.applications.EfficientNetV2B0(
            input_shape=shape, include_top=False, weights=weights, include_preprocessing=True
        ),
        None,
    ),
    "resnet50v2": Backbone(
        "resnet50v2",
        224,
        lambda shape, weights, alpha: keras.applications.ResNet50V2(
            input_shape=shape, include_top=False, weights=weights
        ),
        _minus_one_to_one,
    ),
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown backbone {name!r}; choose one of: {', '.join(sorted(BACKBONES))}."
        ) from None
