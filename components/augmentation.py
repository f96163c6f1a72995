"""Augmentation as Keras preprocessing layers inside the model.

Keras runs them only when ``training=True``, so the exported model serves un-augmented images,
and on a GPU node the GPU does the work instead of the input pipeline.
"""

from __future__ import annotations

AUGMENTATIONS = ("flip", "rotation", "zoom", "contrast")
DEFAULT_AUGMENTATIONS = "flip,rotation,zoom"


def parse_augmentations(spec: str) -> list[str]:
    """``"flip,zoom"`` -> ``["flip", "zoom"]``; an empty string or ``none`` means none."""
    names = [name.strip().lower() for name in spec.split(",") if name.strip()]
    if names == ["none"]:
        return []
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown:
        raise ValueError(
            f"Unknown augmentation {', '.join(unknown)}; choose from "
            f"{', '.join(AUGMENTATIONS)} (comma-separated) or 'none'."
        )
    return names


def augmentation_layers(spec: str, seed: int = 0) -> list:
    """The named augmentations as Keras layers, in order."""
    # Imported here so that compiling the pipeline, which reads the defaults above, does not
    # start TensorFlow.
    import keras

    layers = {
        "flip": lambda s: keras.layers.RandomFlip("horizontal", seed=s),
        "rotation": lambda s: keras.layers.RandomRotation(0.05, fill_mode="constant", seed=s),
        "zoom": lambda s: keras.layers.RandomZoom(0.1, fill_mode="constant", seed=s),
        "contrast": lambda s: keras.layers.RandomContrast(0.2, seed=s),
    }
    return [layers[name](seed + i) for i, name in enumerate(parse_augmentations(spec))]
