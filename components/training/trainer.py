"""What ``fit`` trains: the classifier itself, or a ``keras.Model`` that shares its weights and
changes the train step, for adversarial training (``adversarial``) or for training across
processes under MultiWorkerMirroredStrategy, which Keras 3.15's own ``fit`` cannot do
(keras-team/keras#20585, open)."""

from __future__ import annotations

import keras
import tensorflow as tf


class Trainer(keras.Model):
    """Fits ``classifier``, whose weights it shares; ``across_processes`` when the strategy
    whose scope ``fit`` runs in spans several processes."""

    def __init__(self, classifier: keras.Model, across_processes: bool = False):
        super().__init__()
        self.classifier = classifier
        self.across_processes = across_processes
        if across_processes:
            # Given a strategy at construction, Keras' fit first averages a whole batch across
            # the replicas only to learn its shapes (_maybe_symbolic_build in keras/src/backend/
            # tensorflow/trainer.py), and tf.distribute cannot reduce a nest of tensors across
            # workers (Strategy.reduce). Without one, Keras builds while tracing the train
            # step, and takes the strategy of the scope fit is called in.
            self._distribute_strategy = None

    def call(self, inputs, training=False):
        return self.classifier(inputs, training=training)

    def train_step(self, data):
        return self._reducible(super().train_step(data))

    def test_step(self, data):
        return self._reducible(super().test_step(data))

    def _reducible(self, logs: dict) -> dict:
        """Across processes, Keras averages every log over the workers along axis 0
        (reduce_per_replica, ``strategy.reduce("MEAN", value, axis=0)``), which a scalar does
        not have; the metrics are already the same on every worker, so the mean is the value."""
        if not self.across_processes:
            return logs
        return {name: tf.reshape(value, [1]) for name, value in logs.items()}
