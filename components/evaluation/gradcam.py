"""Grad-CAM (Selvaraju et al., 2017): where in an image the model found the class it scored.

The class score's gradient with respect to the backbone's last feature map, averaged over
the map, weighs each channel; the weighted sum of the channels, rectified, is the heatmap.
Every backbone here ends in a convolutional feature map, so the backbone's own output is the
layer to explain, whichever architecture it is.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def load_classifier(path: str) -> keras.Model:
    """A classifier train saved (``.keras``), in a process that has not built one: the
    modules of our own layers are imported first so that Keras knows their classes."""
    from imgclf.components.model import backbones, random_affine  # noqa: F401 - they register layers

    return keras.models.load_model(path, compile=False)


def heatmaps(
    model: keras.Model, images: np.ndarray, class_ids: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[N, H, W, 3]`` images -> (``[N, h, w]`` heatmaps in [0, 1] at the feature
    map's resolution, the ``[N]`` class ids explained: ``class_ids``, or each top class)."""
    # The classifier is a chain (build_model): layers up to the backbone make the feature
    # map, the layers after it (pooling, dropout, scores) the class scores.
    chain = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    split = chain.index(_backbone(model)) + 1
    features = tf.cast(images, tf.float32)
    for layer in chain[:split]:
        features = layer(features, training=False)
    with tf.GradientTape() as tape:
        tape.watch(features)
        scores = features
        for layer in chain[split:]:
            scores = layer(scores, training=False)
        if class_ids is None:
            class_ids = tf.argmax(scores, axis=1).numpy()
        chosen = tf.gather(scores, class_ids, axis=1, batch_dims=1)
    gradients = tf.cast(tape.gradient(chosen, features), tf.float32)
    channel_weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cams = tf.nn.relu(tf.reduce_sum(tf.cast(features, tf.float32) * channel_weights, axis=-1))
    peaks = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
    return (cams / tf.maximum(peaks, 1e-12)).numpy(), np.asarray(class_ids)


def overlay(image: np.ndarray, heatmap: np.ndarray, strength: float = 0.6) -> np.ndarray:
    """The heatmap over the image: warm (dark red to yellow) where it is high, the photo
    untouched where it is zero."""
    heat = tf.image.resize(heatmap[..., np.newaxis], image.shape[:2]).numpy()
    heat = np.clip(heat, 0.0, 1.0)
    warm = np.concatenate(
        [np.minimum(1.0, 2 * heat), np.clip(2 * heat - 1, 0.0, 1.0), np.zeros_like(heat)], axis=-1
    )
    alpha = strength * heat
    blended = image.astype(np.float32) * (1 - alpha) + 255 * warm * alpha
    return np.clip(blended, 0, 255).astype(np.uint8)


def _backbone(model: keras.Model) -> keras.Model:
    """The model's backbone: its one nested model."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        raise ValueError(f"Expected one backbone inside {model.name}, found {len(nested)}.")
    return nested[0]
