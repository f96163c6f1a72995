"""AlexNet and SqueezeNet 1.1, which Keras Applications does not ship, as headless Keras models.

Both follow torchvision's definitions (layer for layer, so a user can port its ImageNet weights
into a Keras weights file) and stop before the classifier, as ``include_top=False`` does for
Keras Applications. No pretrained weights ship with them: they start from random
initialisation, or from a Keras weights file the user provides.
"""

from __future__ import annotations

import keras


def alexnet(input_shape: tuple[int, int, int], weights: str | None = None) -> keras.Model:
    """AlexNet's five convolutions (torchvision's one-tower variant): 256 channels out."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.ZeroPadding2D(2, name="conv1_pad")(inputs)
    x = keras.layers.Conv2D(64, 11, strides=4, activation="relu", name="conv1")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = keras.layers.Conv2D(192, 5, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool2")(x)
    x = keras.layers.Conv2D(384, 3, padding="same", activation="relu", name="conv3")(x)
    x = keras.layers.Conv2D(256, 3, padding="same", activation="relu", name="conv4")(x)
    x = keras.layers.Conv2D(256, 3, padding="same", activation="relu", name="conv5")(x)
    outputs = keras.layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    return _with_weights(keras.Model(inputs, outputs, name="alexnet"), weights)


def squeezenet_1_1(input_shape: tuple[int, int, int], weights: str | None = None) -> keras.Model:
    """SqueezeNet 1.1's features: a strided convolution and eight Fire modules, 512 channels
    out."""
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Conv2D(64, 3, strides=2, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    x = _fire(x, "fire2", squeeze=16, expand=64)
    x = _fire(x, "fire3", squeeze=16, expand=64)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool3")(x)
    x = _fire(x, "fire4", squeeze=32, expand=128)
    x = _fire(x, "fire5", squeeze=32, expand=128)
    x = keras.layers.MaxPooling2D(3, strides=2, name="pool5")(x)
    x = _fire(x, "fire6", squeeze=48, expand=192)
    x = _fire(x, "fire7", squeeze=48, expand=192)
    x = _fire(x, "fire8", squeeze=64, expand=256)
    outputs = _fire(x, "fire9", squeeze=64, expand=256)
    return _with_weights(keras.Model(inputs, outputs, name="squeezenet_1_1"), weights)


def _fire(x, name: str, squeeze: int, expand: int):
    """A 1x1 squeeze, then 1x1 and 3x3 expansions side by side."""
    squeezed = keras.layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze")(x)
    return keras.layers.Concatenate(name=f"{name}_concat")(
        [
            keras.layers.Conv2D(expand, 1, activation="relu", name=f"{name}_expand1x1")(squeezed),
            keras.layers.Conv2D(
                expand, 3, padding="same", activation="relu", name=f"{name}_expand3x3"
            )(squeezed),
        ]
    )


def _with_weights(model: keras.Model, weights: str | None) -> keras.Model:
    if weights == "imagenet":
        raise ValueError(
            f"No ImageNet weights ship for {model.name}: pass weights=none to train it from "
            "scratch, or weights=PATH to a Keras weights file of this headless architecture."
        )
    if weights is not None:
        model.load_weights(weights)
    return model
