"""Adversarial training: examples made inside the train step, as ART's attacks make them, and
what they buy."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from conftest import _train_small_model
from imgclf.components import manifest, storage
from imgclf.components.evaluation import robustness
from imgclf.components.serving import signature
from imgclf.components.training.adversarial import AdversarialTraining


def _small_classifier() -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Rescaling(1 / 255)(inputs)
    hidden = keras.layers.Conv2D(4, 3, activation="relu")(hidden)
    hidden = keras.layers.GlobalAveragePooling2D()(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))


def _compiled(attack: str, epsilon: float) -> AdversarialTraining:
    trainer = AdversarialTraining(_small_classifier(), attack, epsilon, share=0.5)
    trainer.compile(optimizer="sgd", loss=keras.losses.CategoricalCrossentropy())
    return trainer


def test_fgsm_examples_are_the_adversarial_robustness_toolboxs():
    """ART's FastGradientMethod (art/attacks/evasion/fast_gradient.py: x + eps * sign of the
    loss gradient, clipped to clip_values) gives the same images as the train step's."""
    from art.attacks.evasion import FastGradientMethod
    from art.estimators.classification import TensorFlowV2Classifier

    trainer = _compiled("fgsm", 6.0)
    pixels = np.random.default_rng(0).uniform(0, 255, (16, 8, 8, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[np.arange(16) % 3]
    ours = trainer.adversarial_examples(pixels, labels).numpy()
    classifier = TensorFlowV2Classifier(
        trainer.classifier,
        nb_classes=3,
        input_shape=(8, 8, 3),
        loss_object=keras.losses.CategoricalCrossentropy(),
        clip_values=(0.0, 255.0),
    )
    theirs = FastGradientMethod(classifier, eps=6.0).generate(pixels, labels)
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_examples_stay_within_epsilon_and_the_pixel_range_and_raise_the_loss(attack):
    trainer = _compiled(attack, 4.0)
    pixels = np.random.default_rng(1).uniform(0, 255, (16, 8, 8, 3)).astype(np.float32)
    pixels[0] = 0.0
    pixels[1] = 255.0
    labels = np.eye(3, dtype=np.float32)[np.arange(16) % 3]
    adversarial = trainer.adversarial_examples(pixels, labels).numpy()
    assert np.abs(adversarial - pixels).max() <= 4.0 + 1e-4
    assert adversarial.min() >= 0.0 and adversarial.max() <= 255.0
    loss = keras.losses.CategoricalCrossentropy()
    assert float(loss(labels, trainer.classifier(adversarial))) > float(
        loss(labels, trainer.classifier(pixels))
    )


def _all_images(prepared) -> tuple[list[bytes], list[str]]:
    rows = manifest.read(prepared["validated"])
    return [storage.read_bytes(uri) for uri in rows["uri"]], rows["label"].tolist()


@pytest.mark.slow
def test_fgsm_training_raises_fgsm_robust_accuracy_at_its_epsilon(prepared, tmp_path):
    """The same seed and data, with and without adversarial_training=fgsm, measured by ART's
    FGSM at the training epsilon on every image of the colour set (60: the test split alone
    is 13, too few to tell). The adversarial run backs up each epoch, as the pipeline's does."""
    images, labels = _all_images(prepared)
    options = dict(epochs=20, batch_size=4, early_stopping_patience=20)
    robust = {}
    defended = dict(adversarial_training="fgsm", checkpoint_dir=str(tmp_path / "checkpoints"))
    for name, defence in (("none", {}), ("fgsm", defended)):
        model_dir = _train_small_model(
            tmp_path / name / "saved_model",
            prepared,
            adversarial_epsilon=24.0,
            **defence,
            **options,
        )
        measured, _ = robustness.measure(signature.ServedModel(model_dir), images, labels, [24.0])
        robust[name] = measured.at("fgsm", 24.0)
    assert robust["fgsm"] > robust["none"] + 0.1, robust
