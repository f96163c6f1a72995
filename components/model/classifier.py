"""The classifier train builds around a backbone, in Keras alone: it builds under any Keras
backend, so that ``bench.gpu_training_speed`` can time it on GPU machines without TensorFlow."""

from __future__ import annotations

import math

import keras

from imgclf.components.model.backbones import Backbone


def classifier(
    spec: Backbone,
    backbone: keras.Model,
    augmentations: list[keras.layers.Layer],
    dropout: float,
    num_classes: int,
    multi_label: bool = False,
    l2: float = 0.0,
) -> keras.Model:
    """uint8-valued RGB (as float) through ``augmentations``, the backbone's own input
    scaling, the backbone, pooling and dropout to class probabilities (softmax), or one
    independent probability per class (sigmoid) for multi-label data, always in float32."""
    inputs = keras.Input(shape=backbone.input_shape[1:], name="image")
    x = inputs
    for layer in augmentations:
        x = layer(x)
    scaling = spec.scaling_layer()
    if scaling is not None:
        x = scaling(x)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes,
        activation="sigmoid" if multi_label else "softmax",
        kernel_regularizer=keras.regularizers.L2(l2) if l2 else None,
        dtype="float32",
        name="scores",
    )(x)
    return keras.Model(inputs, outputs, name=f"{spec.name}_classifier")


def unfreeze_top(backbone: keras.Model, fraction: float) -> int:
    """Makes the top ``fraction`` of layers trainable, BatchNormalization excepted; returns
    how many layers that top holds."""
    backbone.trainable = True
    count = max(1, math.ceil(len(backbone.layers) * fraction))
    for index, layer in enumerate(backbone.layers):
        is_top = index >= len(backbone.layers) - count
        layer.trainable = is_top and not isinstance(layer, keras.layers.BatchNormalization)
    return count
