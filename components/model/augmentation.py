"""Augmentation policy: which image transforms training sees, and where they run.

Per-image transforms are Keras preprocessing layers inside the model. Keras runs them only when
``training=True``, so the exported model serves un-augmented images, and on a GPU node the GPU
does the work instead of the input pipeline. Rotation, zoom and translation are fused into one
affine warp (``RandomAffine``): Keras' ``RandomRotation``, ``RandomZoom`` and
``RandomTranslation`` each resample the whole image, and those warps dominate the cost.

MixUp and CutMix blend pairs of images and their labels, so they need the labels: they run on
training batches in the ``tf.data`` pipeline (Keras' ``MixUp`` and ``CutMix`` layers).
"""

from __future__ import annotations

from imgclf.components.parameters import AUGMENTATIONS, comma_separated

# Rotation is a fraction of a full turn (0.05: up to 18 degrees either way), as Keras'
# RandomRotation counts it; zoom and translation are fractions of the image's side; contrast
# and brightness fractions of the value range.
ROTATION = 0.05
ZOOM = 0.1
TRANSLATION = 0.1
CONTRAST = 0.2
BRIGHTNESS = 0.2
MIXUP_ALPHA = 0.2
_GEOMETRIC = ("rotation", "zoom", "translation")
_BATCH_MIXING = ("mixup", "cutmix")


def parse_augmentations(spec: str) -> list[str]:
    """``"flip,zoom"`` -> ``["flip", "zoom"]``; an empty string or ``none`` means none."""
    return comma_separated(spec, AUGMENTATIONS, "augmentation")


def geometric(spec: str) -> list[str]:
    """The augmentations of ``spec`` that warp the image (one affine transform)."""
    return [name for name in parse_augmentations(spec) if name in _GEOMETRIC]


def augmentation_layers(spec: str, seed: int = 0) -> list:
    """The per-image augmentations of ``spec`` as Keras layers for the model, in a fixed
    order: flip, one affine warp for the geometric ones, then contrast and brightness."""
    # Imported here so that compiling the pipeline, which reads the defaults above, does not
    # start TensorFlow.
    import keras

    from imgclf.components.model.random_affine import RandomAffine

    names = set(parse_augmentations(spec))
    layers = []
    if "flip" in names:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if names & set(_GEOMETRIC):
        layers.append(
            RandomAffine(
                rotation=ROTATION if "rotation" in names else 0.0,
                zoom=ZOOM if "zoom" in names else 0.0,
                translation=TRANSLATION if "translation" in names else 0.0,
                seed=seed + 1,
            )
        )
    if "contrast" in names:
        layers.append(keras.layers.RandomContrast(CONTRAST, seed=seed + 2))
    if "brightness" in names:
        layers.append(keras.layers.RandomBrightness(BRIGHTNESS, seed=seed + 3))
    return layers


def batch_mixing(spec: str, seed: int = 0):
    """A ``(images, labels) -> (images, labels)`` function for training batches (labels
    one-hot or multi-hot) applying MixUp or CutMix, one of the two per batch when both are
    named; None when ``spec`` names neither."""
    import keras
    import tensorflow as tf

    names = [name for name in parse_augmentations(spec) if name in _BATCH_MIXING]
    if not names:
        return None
    layers = {
        "mixup": keras.layers.MixUp(alpha=MIXUP_ALPHA, seed=seed),
        "cutmix": keras.layers.CutMix(seed=seed + 1),
    }
    chosen = [layers[name] for name in names]

    def mix(images, labels):
        def apply(layer):
            mixed = layer({"images": images, "labels": labels})
            return mixed["images"], mixed["labels"]

        if len(chosen) == 1:
            return apply(chosen[0])
        return tf.cond(
            tf.random.uniform([], seed=seed) < 0.5,
            lambda: apply(chosen[0]),
            lambda: apply(chosen[1]),
        )

    return mix
