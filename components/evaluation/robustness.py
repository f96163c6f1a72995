"""Robust accuracy: the share of test images a model still gets right when each is perturbed,
by at most epsilon grey levels per pixel (L-infinity, in the 0-255 scale of the model's input),
to make it wrong.

The attacks are the Adversarial Robustness Toolbox's (Trusted-AI/adversarial-robustness-toolbox)
FGSM (one step of the loss gradient's sign) and PGD (``PGD_STEPS`` steps of 2.5 epsilon /
steps, Madry et al.'s step, projected back into the epsilon ball; started from the image
itself, so a rerun gives the same numbers). They run on the served SavedModel's own
``preprocess`` and ``score_pixels`` signatures: each image is decoded and resized by the model's
transform graph, and the perturbation is made in that image space, where a camera's noise or an
attacker's edit would be.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass

import keras
import numpy as np
from PIL import Image

from imgclf.components.reporting import png_data_uri
from imgclf.components.serving import signature

ATTACKS = ("fgsm", "pgd")
PGD_STEPS = 10
PGD_STEP_FACTOR = 2.5
_EXAMPLES = 6
_THUMBNAIL = 112

log = logging.getLogger(__name__)
# ART logs a success rate for FGSM that is 0 unless it ran random restarts, and its data path;
# the robust accuracy logged here says what happened.
logging.getLogger("art").setLevel(logging.WARNING)


@dataclass
class Robustness:
    """Accuracy per attack at each perturbation size; ``epsilons[0]`` is 0, the clean images."""

    epsilons: list[float]
    accuracy: dict[str, list[float]]
    images: int
    seconds: float
    pixel_scale: str = "0-255 grey levels per pixel (L-infinity)"

    def metrics(self) -> dict[str, float]:
        """Each robust accuracy under a name a metrics store takes: ``pgd_robust_accuracy_at_2``,
        ``fgsm_robust_accuracy_at_0_5``."""
        return {
            f"{attack}_robust_accuracy_at_{epsilon:g}".replace(".", "_"): self.at(attack, epsilon)
            for epsilon in self.epsilons[1:]
            for attack in ATTACKS
        }

    def at(self, attack: str, epsilon: float) -> float | None:
        """The accuracy under ``attack`` at ``epsilon``, or None where it was not measured."""
        if epsilon not in self.epsilons:
            return None
        return self.accuracy[attack][self.epsilons.index(epsilon)]


@dataclass
class Perturbed:
    """One test image beside its perturbed self, with the model's answer for each."""

    true: str
    original: str
    perturbed: str
    original_src: str
    perturbed_src: str


def attacked_rows(images: int, limit: int) -> list[int]:
    """``limit`` indices spread evenly over ``images`` (all of them for 0), so that a sample of
    a test split listed class by class still holds every class."""
    if limit == 0 or limit >= images:
        return list(range(images))
    return sorted({round(i * (images - 1) / (limit - 1)) for i in range(limit)})


def measure(
    model: signature.ServedModel,
    images: list[bytes],
    true_labels: list[str],
    epsilons: list[float],
    batch_size: int = 32,
) -> tuple[Robustness, list[Perturbed]]:
    """Robust accuracy of ``model`` under each attack at 0 and each of ``epsilons`` (rising),
    and a few images that PGD at the largest epsilon turned from right to wrong. ``images``
    are scored in the order given, ``true_labels`` one per image."""
    started = time.monotonic()
    pixels = model.pixels(images, batch_size).astype(np.float32)
    classes = [name.decode() for name in model.predict(images[:1])[signature.CLASSES_KEY][0]]
    truth = np.array([classes.index(label) for label in true_labels])
    classifier = _art_classifier(model, len(classes), pixels.shape[1:])
    clean = _predicted(classifier, pixels, batch_size)
    accuracy = {attack: [float(np.mean(clean == truth))] for attack in ATTACKS}
    one_hot = np.eye(len(classes), dtype=np.float32)[truth]
    # An image broken at one size stays broken at every larger one: the smaller perturbation
    # is within the larger budget (a fixed-step attack can miss it there).
    broken = {attack: clean != truth for attack in ATTACKS}
    strongest = None
    for epsilon in epsilons:
        for attack in ATTACKS:
            adversarial = _attack(attack, classifier, epsilon, batch_size).generate(pixels, one_hot)
            predicted = _predicted(classifier, adversarial, batch_size)
            broken[attack] |= predicted != truth
            accuracy[attack].append(float(1 - np.mean(broken[attack])))
            if attack == "pgd":
                strongest = (adversarial, predicted)
        log.info(
            "Robust accuracy at %g grey levels: FGSM %.3f, PGD %.3f (%d images, %.0f s so far)",
            epsilon,
            accuracy["fgsm"][-1],
            accuracy["pgd"][-1],
            len(images),
            time.monotonic() - started,
        )
    robustness = Robustness(
        epsilons=[0.0, *epsilons],
        accuracy=accuracy,
        images=len(images),
        seconds=round(time.monotonic() - started, 1),
    )
    if strongest is None:
        return robustness, []
    adversarial, predicted = strongest
    flipped = np.flatnonzero((clean == truth) & (predicted != truth))[:_EXAMPLES]
    examples = [
        Perturbed(
            true=classes[truth[i]],
            original=classes[clean[i]],
            perturbed=classes[predicted[i]],
            original_src=_thumbnail(pixels[i]),
            perturbed_src=_thumbnail(adversarial[i]),
        )
        for i in flipped
    ]
    return robustness, examples


def _art_classifier(model: signature.ServedModel, classes: int, input_shape: tuple[int, ...]):
    with warnings.catch_warnings():
        # ART announces on import that it found no PyTorch; these attacks need none.
        warnings.filterwarnings("ignore", message="PyTorch not found")
        from art.estimators.classification import TensorFlowV2Classifier

    return TensorFlowV2Classifier(
        model=lambda pixels, training=False: model.score_pixels(pixels),
        nb_classes=classes,
        input_shape=input_shape,
        # score_pixels answers probabilities (softmax), not logits.
        loss_object=keras.losses.CategoricalCrossentropy(),
        clip_values=(0.0, 255.0),
    )


def _attack(name: str, classifier, epsilon: float, batch_size: int):
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent

    if name == "fgsm":
        return FastGradientMethod(classifier, eps=epsilon, batch_size=batch_size)
    return ProjectedGradientDescent(
        classifier,
        eps=epsilon,
        eps_step=PGD_STEP_FACTOR * epsilon / PGD_STEPS,
        max_iter=PGD_STEPS,
        num_random_init=0,
        batch_size=batch_size,
        verbose=False,
    )


def _predicted(classifier, pixels: np.ndarray, batch_size: int) -> np.ndarray:
    return np.argmax(classifier.predict(pixels, batch_size=batch_size), axis=1)


def _thumbnail(pixels: np.ndarray) -> str:
    image = Image.fromarray(np.clip(np.round(pixels), 0, 255).astype(np.uint8))
    if image.width < _THUMBNAIL:
        image = image.resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.NEAREST)
    return png_data_uri(image)
