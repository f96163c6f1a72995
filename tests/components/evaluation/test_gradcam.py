import subprocess
import sys

import keras
import numpy as np
import pytest

from conftest import REPO
from imgclf.components.evaluation import gradcam
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.network import build_model


def _red_blue_classifier(size: int = 16) -> keras.Model:
    """Built as build_model chains its layers: a nested backbone whose two channels are the
    red and the blue of each pixel, pooled into a red-vs-blue softmax."""
    pixels = keras.Input((size, size, 3))
    channels = keras.layers.Conv2D(2, 1, use_bias=False, name="red_and_blue")(pixels)
    backbone = keras.Model(pixels, channels, name="backbone")
    backbone.get_layer("red_and_blue").set_weights(
        [np.array([[[[1, 0], [0, 0], [0, 1]]]], np.float32) / 255]
    )
    image = keras.Input((size, size, 3), name="image")
    x = keras.layers.Rescaling(1.0, name="scaling")(image)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    head = keras.layers.Dense(2, activation="softmax", name="scores")
    outputs = head(x)
    head.set_weights([np.eye(2, dtype=np.float32) * 50, np.zeros(2, np.float32)])
    return keras.Model(image, outputs)


def test_the_heatmap_lights_the_region_that_holds_the_class():
    image = np.zeros((1, 16, 16, 3), np.uint8)
    image[0, :8, :8, 0] = 255  # a red square in the top-left corner, black elsewhere
    heatmaps, classes = gradcam.heatmaps(_red_blue_classifier(), image)
    assert classes.tolist() == [0]  # red
    assert heatmaps.shape == (1, 16, 16)
    np.testing.assert_allclose(heatmaps[0, :8, :8], 1.0)
    np.testing.assert_allclose(heatmaps[0, 8:, :], 0.0)
    np.testing.assert_allclose(heatmaps[0, :, 8:], 0.0)


def test_a_chosen_class_is_explained_instead_of_the_top_one():
    image = np.zeros((1, 16, 16, 3), np.uint8)
    image[0, :8, :, 0] = 255  # red top half
    image[0, 12:, :4, 2] = 255  # a small blue patch
    heatmaps, classes = gradcam.heatmaps(_red_blue_classifier(), image, np.array([1]))
    assert classes.tolist() == [1]
    assert heatmaps[0, 12:, :4].min() == pytest.approx(1.0)
    assert heatmaps[0, :8].max() == 0.0


def test_the_overlay_keeps_cold_pixels_and_warms_hot_ones():
    image = np.full((4, 4, 3), 100, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    blended = gradcam.overlay(image, heat)
    assert blended.shape == (4, 4, 3) and blended.dtype == np.uint8
    assert (blended[3, 3] == 100).all()
    assert blended[0, 0, 0] > 100 and blended[0, 0, 2] < 100


def test_a_saved_classifier_with_our_own_layers_loads_in_a_fresh_process(tmp_path):
    config = TrainConfig(
        backbone="resnet50", weights="none", image_size=32, augmentations="flip,rotation,zoom"
    )
    model, _ = build_model(config, num_classes=2)
    path = tmp_path / "model.keras"
    model.save(path)
    code = (
        "from imgclf.components.evaluation import gradcam\n"
        f"model = gradcam.load_classifier({str(path)!r})\n"
        "print([layer.__class__.__name__ for layer in model.layers])\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "RandomAffine" in completed.stdout and "CaffeScaling" in completed.stdout
