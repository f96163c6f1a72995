"""Per-class thresholds of multi-label models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from imgclf.components.training.thresholds import per_class_thresholds


def test_per_class_thresholds_maximise_f1_on_the_given_data():
    # Class 0 is present exactly when its score is at least 0.6; class 1 never occurs.
    scores = np.array([[0.9, 0.2], [0.6, 0.1], [0.55, 0.3], [0.1, 0.4]], np.float32)
    truth = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], np.float32)
    identity = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    data = tf.data.Dataset.from_tensor_slices((scores, truth)).batch(3)
    assert per_class_thresholds(identity, data) == pytest.approx([0.6, 0.5])
