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
    # The smallest input side Keras accepts for this architecture.
    min_image_size: int = 32


def _minus_one_to_one() -> keras.layers.Layer:
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_minus1_1")


def _imagenet_mean_and_std() -> keras.layers.Layer:
    """PyTorch-style scaling (DenseNet): ImageNet's per-channel mean and deviation."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    return keras.layers.Normalization(
        mean=[255 * m for m in mean], variance=[(255 * s) ** 2 for s in std], name="imagenet_norm"
    )


@keras.saving.register_keras_serializable(package="imgclf")
class CaffeScaling(keras.layers.Layer):
    """Caffe-style scaling (VGG16, ResNet50): RGB to BGR, minus ImageNet's BGR mean."""

    def call(self, images):
        bgr = keras.ops.flip(images, axis=-1)
        return bgr - keras.ops.convert_to_tensor([103.939, 116.779, 123.68], images.dtype)


def _application(
    constructor: Callable[..., keras.Model], *, alpha: bool = False, **options
) -> Callable[[tuple[int, int, int], str | None, float], keras.Model]:
    """A Keras Applications constructor as a ``build`` function; ``alpha`` is passed only to
    the architectures that have a width multiplier."""

    def build(shape, weights, width):
        extra = {"alpha": width} if alpha else {}
        return constructor(
            input_shape=shape, include_top=False, weights=weights, **extra, **options
        )

    return build


BACKBONES: dict[str, Backbone] = {
    backbone.name: backbone
    for backbone in (
        Backbone(
            "mobilenet",
            224,
            _application(keras.applications.MobileNet, alpha=True),
            _minus_one_to_one,
        ),
        Backbone(
            "mobilenet_v2",
            224,
            _application(keras.applications.MobileNetV2, alpha=True),
            _minus_one_to_one,
        ),
        Backbone(
            "mobilenet_v3_small",
            224,
            _application(keras.applications.MobileNetV3Small, alpha=True),
            None,
        ),
        Backbone(
            "mobilenet_v3_large",
            224,
            _application(keras.applications.MobileNetV3Large, alpha=True),
            None,
        ),
        Backbone("vgg16", 224, _application(keras.applications.VGG16), CaffeScaling),
        Backbone("resnet50", 224, _application(keras.applications.ResNet50), CaffeScaling),
        Backbone("resnet50v2", 224, _application(keras.applications.ResNet50V2), _minus_one_to_one),
        Backbone(
            "inceptionv3", 299, _application(keras.applications.InceptionV3), _minus_one_to_one, 75
        ),
        Backbone("xception", 299, _application(keras.applications.Xception), _minus_one_to_one, 71),
        Backbone(
            "densenet121", 224, _application(keras.applications.DenseNet121), _imagenet_mean_and_std
        ),
        *(
            Backbone(
                f"efficientnetv2{variant.lower()}",
                size,
                _application(
                    getattr(keras.applications, f"EfficientNetV2{variant}"),
                    include_preprocessing=True,
                ),
                None,
            )
            for variant, size in (("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300), ("S", 384))
        ),
        Backbone(
            "convnext_tiny",
            224,
            _application(keras.applications.ConvNeXtTiny, include_preprocessing=True),
            None,
        ),
    )
}


def get_backbone(name: str) -> Backbone:
    try:
        return BACKBONES[name.lower()]
    except KeyError:
        raise ValueError(
            f"Unknown backbone {name!r}; choose one of: {', '.join(sorted(BACKBONES))}."
        ) from None
