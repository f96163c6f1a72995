"""The test images the evaluation report shows: the first misclassified ones as thumbnails, and
Grad-CAM overlays of a few."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from imgclf.components.evaluation import gradcam
from imgclf.components.reporting import png_data_uri
from imgclf.components.transform import features

_GRID_IMAGES = 24
_THUMBNAIL = 96
_GRADCAM_IMAGES = 6


def misclassified_grid(
    images: list[bytes], true_labels: list[str], predicted: list[str]
) -> list[dict]:
    """Thumbnails (PNG data URIs) of the first misclassified test images, for the report."""
    grid = []
    for data, truth, guess in zip(images, true_labels, predicted, strict=True):
        if truth == guess:
            continue
        with Image.open(io.BytesIO(data)) as image:
            thumbnail = image.convert("RGB")
            thumbnail.thumbnail((_THUMBNAIL, _THUMBNAIL))
        grid.append({"true": truth, "predicted": guess, "src": png_data_uri(thumbnail)})
        if len(grid) == _GRID_IMAGES:
            break
    return grid


def gradcam_grid(
    keras_model_path: str,
    images: list[bytes],
    true_labels: list[str],
    predicted: list[str],
    preprocessing: features.Preprocessing,
) -> list[dict]:
    """Grad-CAM overlays (PNG data URIs) of the top predicted class for the first
    misclassified test images and as many correctly classified ones."""
    model = gradcam.load_classifier(keras_model_path)
    wrong = [i for i, (t, p) in enumerate(zip(true_labels, predicted, strict=True)) if t != p]
    right = [i for i in range(len(images)) if i not in set(wrong)]
    chosen = wrong[: _GRADCAM_IMAGES // 2]
    chosen += right[: _GRADCAM_IMAGES - len(chosen)]
    if not chosen:
        return []
    pixels = np.stack(
        [
            features.decode_and_resize(
                images[i],
                preprocessing.image_size,
                preprocessing.resize_policy,
                preprocessing.jpeg_decoding,
            ).numpy()
            for i in chosen
        ]
    )
    heat, _ = gradcam.heatmaps(model, pixels)
    return [
        {
            "true": true_labels[index],
            "predicted": predicted[index],
            "src": png_data_uri(_at_least_thumbnail(gradcam.overlay(image, heatmap))),
        }
        for index, image, heatmap in zip(chosen, pixels, heat, strict=True)
    ]


def _at_least_thumbnail(pixels: np.ndarray) -> Image.Image:
    """Small model inputs scaled up (nearest neighbour, so pixels stay visible)."""
    image = Image.fromarray(pixels)
    if image.width < _THUMBNAIL:
        image = image.resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.NEAREST)
    return image
