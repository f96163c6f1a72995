"""Per-class decision thresholds for multi-label models, chosen on held-out images."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from sklearn.metrics import precision_recall_curve


def per_class_thresholds(model: keras.Model, data: tf.data.Dataset) -> list[float]:
    """Per class, the score threshold with the best F1 on ``data`` (multi-hot labels); 0.5
    for a class with no positive in ``data``."""
    scores, truth = [], []
    for images, labels in data:
        scores.append(model(images, training=False).numpy())
        truth.append(labels.numpy())
    scores, truth = np.concatenate(scores), np.concatenate(truth)
    thresholds = []
    for column in range(truth.shape[1]):
        if not truth[:, column].any():
            thresholds.append(0.5)
            continue
        precision, recall, cuts = precision_recall_curve(truth[:, column], scores[:, column])
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        thresholds.append(float(cuts[np.argmax(f1)]))
    return thresholds
