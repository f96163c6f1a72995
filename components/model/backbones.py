"""The backbones a user can pick: Keras Applications and the two classic networks Keras does
not ship, each with its own input scaling, default input size and smallest accepted size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from imgclf.components.model import classic_backbones


def _minus_one_to_one() -> keras.layers.Layer:
    return keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_to_minus1_1")


def _imagenet_mean_and_std() -> keras.layers.Layer:
    """PyTorch-style scaling (DenseNet, torchvision's nets): ImageNet's per-channel mean and
    deviation."""
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


# How each backbone wants its [0, 255] RGB input, by the name `imgclf backbones` shows; None
# for the backbones that scale their input themselves.
SCALINGS: dict[str, Callable[[], keras.layers.Layer] | None] = {
    "[-1, 1]": _minus_one_to_one,
    "ImageNet mean/std": _imagenet_mean_and_std,
    "Caffe BGR minus mean": CaffeScaling,
    "inside the model": None,
}


@dataclass(frozen=True)
class Backbone:
    name: str
    default_image_size: int
    # (input_shape=, weights=, **options) -> headless Keras model
    constructor: Callable[..., keras.Model]
    scaling: str
    # The smallest input side the architecture accepts.
    min_image_size: int = 32
    # Whether ``alpha`` (the MobileNets' width multiplier) applies.
    width_multiplier: bool = False
    imagenet_weights: bool = True

    def build(self, shape: tuple[int, int, int], weights: str | None, alpha: float) -> keras.Model:
        options = {"alpha": alpha} if self.width_multiplier else {}
        return self.constructor(input_shape=shape, weights=weights, **options)

    def scaling_layer(self) -> keras.layers.Layer | None:
        make = SCALINGS[self.scaling]
        return make() if make else None


def _application(constructor: Callable[..., keras.Model], **options) -> Callable[..., keras.Model]:
    """A Keras Applications constructor without its classifier top."""

    def headless(**arguments):
        return constructor(include_top=False, **arguments, **options)

    return headless


def _efficientnet_v2(variant: str, size: int) -> Backbone:
    constructor = getattr(keras.applications, f"EfficientNetV2{variant}")
    return Backbone(
        f"efficientnetv2{variant.lower()}",
        size,
        _application(constructor, include_preprocessing=True),
        "inside the model",
    )


BACKBONES: dict[str, Backbone] = {
    backbone.name: backbone
    for backbone in (
        Backbone(
            "mobilenet",
            224,
            _application(keras.applications.MobileNet),
            "[-1, 1]",
            width_multiplier=True,
        ),
        Backbone(
            "mobilenet_v2",
            224,
            _application(keras.applications.MobileNetV2),
            "[-1, 1]",
            width_multiplier=True,
        ),
        Backbone(
            "mobilenet_v3_small",
            224,
            _application(keras.applications.MobileNetV3Small),
            "inside the model",
            width_multiplier=True,
        ),
        Backbone(
            "mobilenet_v3_large",
            224,
            _application(keras.applications.MobileNetV3Large),
            "inside the model",
            width_multiplier=True,
        ),
        Backbone("vgg16", 224, _application(keras.applications.VGG16), "Caffe BGR minus mean"),
        Backbone(
            "resnet50", 224, _application(keras.applications.ResNet50), "Caffe BGR minus mean"
        ),
        Backbone("resnet50v2", 224, _application(keras.applications.ResNet50V2), "[-1, 1]"),
        Backbone("inceptionv3", 299, _application(keras.applications.InceptionV3), "[-1, 1]", 75),
        Backbone("xception", 299, _application(keras.applications.Xception), "[-1, 1]", 71),
        Backbone(
            "densenet121",
            224,
            _application(keras.applications.DenseNet121),
            "ImageNet mean/std",
        ),
        *(
            _efficientnet_v2(variant, size)
            for variant, size in (("B0", 224), ("B1", 240), ("B2", 260), ("B3", 300), ("S", 384))
        ),
        Backbone(
            "convnext_tiny",
            224,
            _application(keras.applications.ConvNeXtTiny, include_preprocessing=True),
            "inside the model",
        ),
        Backbone(
            "alexnet",
            224,
            classic_backbones.alexnet,
            "ImageNet mean/std",
            63,
            imagenet_weights=False,
        ),
        Backbone(
            "squeezenet1_1",
            224,
            classic_backbones.squeezenet_1_1,
            "ImageNet mean/std",
            imagenet_weights=False,
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
