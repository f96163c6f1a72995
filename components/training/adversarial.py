"""Adversarial training: a share of each batch is replaced by adversarial examples made against
the model as it learns (Goodfellow et al.'s FGSM, or Madry et al.'s PGD), so that small
perturbations stop flipping its predictions.

The examples are made inside the compiled train step, where the model and the batch already
are: the Adversarial Robustness Toolbox's trainers run their own loop over NumPy arrays, outside
Keras' ``fit``, its distribution strategy and its callbacks (the evaluation measures with ART).
The perturbation is made in the model's input space, the 0-255 pixels before augmentation.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from imgclf.components.training.trainer import Trainer

# Training-time PGD: fewer steps than the evaluation's 10, from the image itself.
PGD_STEPS = 5
PGD_STEP_FACTOR = 2.5


class AdversarialTraining(Trainer):
    """Fits ``classifier`` (whose weights it shares) on batches of which ``share`` are
    replaced by adversarial versions within ``epsilon`` grey levels."""

    def __init__(
        self,
        classifier: keras.Model,
        attack: str,
        epsilon: float,
        share: float,
        across_processes: bool = False,
    ):
        super().__init__(classifier, across_processes)
        self.attack = attack
        self.epsilon = epsilon
        self.share = share

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.cast(x, tf.float32)
        adversarial = self.adversarial_examples(x, tf.cast(y, tf.float32))
        count = tf.cast(tf.round(self.share * tf.cast(tf.shape(x)[0], tf.float32)), tf.int32)
        x = tf.concat([adversarial[:count], x[count:]], axis=0)
        return super().train_step((x, y, sample_weight))

    def adversarial_examples(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        """``x`` moved up the loss, each pixel by at most ``epsilon``, within 0-255."""
        x = tf.convert_to_tensor(x, tf.float32)
        if self.attack == "fgsm":
            steps, step = 1, self.epsilon
        else:
            steps, step = PGD_STEPS, PGD_STEP_FACTOR * self.epsilon / PGD_STEPS
        adversarial = x
        for _ in range(steps):
            adversarial = adversarial + step * tf.sign(self._input_gradient(adversarial, y))
            adversarial = tf.clip_by_value(adversarial, x - self.epsilon, x + self.epsilon)
            adversarial = tf.clip_by_value(adversarial, 0.0, 255.0)
        return tf.stop_gradient(adversarial)

    def _input_gradient(self, x: tf.Tensor, y: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            # Inference mode: the attack aims at the model as it is, without dropout or
            # augmentation (which the training pass then applies to the adversarial images).
            loss = self.loss(y, self.classifier(x, training=False))
        return tape.gradient(loss, x)
