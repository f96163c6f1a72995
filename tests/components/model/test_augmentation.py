import math

import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from imgclf.components.model.augmentation import (
    augmentation_layers,
    batch_mixing,
    parse_augmentations,
)
from imgclf.components.model.random_affine import RandomAffine, affine_transform_rows


def _gradient_image(size=8) -> np.ndarray:
    """One image whose every pixel differs, so any misplaced pixel shows."""
    return np.arange(size * size * 3, dtype=np.float32).reshape(1, size, size, 3)


def _warp(images, angle=0.0, scale=1.0, shift_x=0.0, shift_y=0.0):
    size = float(images.shape[1])
    rows = affine_transform_rows(
        *(ops.convert_to_tensor([value]) for value in (angle, scale, shift_x, shift_y)),
        height=size,
        width=size,
    )
    warped = ops.image.affine_transform(
        images, rows, interpolation="bilinear", fill_mode="constant"
    )
    return ops.convert_to_numpy(warped)


def test_a_quarter_turn_is_a_rotation_of_the_pixel_grid():
    image = _gradient_image()
    np.testing.assert_allclose(_warp(image, angle=math.pi / 2)[0], np.rot90(image[0]), atol=1e-3)


def test_a_shift_moves_the_content_and_fills_black():
    image = _gradient_image()
    shifted = _warp(image, shift_x=3.0, shift_y=1.0)[0]
    np.testing.assert_allclose(shifted[1:, 3:], image[0, :-1, :-3], atol=1e-3)
    assert not shifted[:1].any() and not shifted[:, :3].any()


def test_zooming_out_by_two_halves_the_content_about_the_centre():
    image = np.zeros((1, 9, 9, 3), np.float32)
    image[0, 2:7, 2:7] = 255.0  # a 5x5 square centred on pixel 4
    zoomed = _warp(image, scale=2.0)[0, :, :, 0]
    assert zoomed[4, 4] == 255.0 and zoomed[3:6, 3:6].min() > 0
    assert not zoomed[:2].any() and not zoomed[7:].any()


def test_random_affine_warps_in_training_only():
    images = np.repeat(_gradient_image(16), 4, axis=0)
    layer = RandomAffine(rotation=0.05, zoom=0.1, translation=0.1, seed=1)
    np.testing.assert_array_equal(ops.convert_to_numpy(layer(images, training=False)), images)
    augmented = ops.convert_to_numpy(layer(images, training=True))
    assert augmented.shape == images.shape
    # Each image of the batch gets its own transform.
    assert not np.allclose(augmented[0], augmented[1]) and not np.allclose(augmented[0], images[0])
    still = RandomAffine(seed=1)(images, training=True)
    np.testing.assert_allclose(ops.convert_to_numpy(still), images, atol=1e-3)


def test_geometric_augmentations_become_one_warp():
    layers = augmentation_layers("rotation,flip,brightness,zoom,translation,contrast,mixup")
    assert [type(layer).__name__ for layer in layers] == [
        "RandomFlip",
        "RandomAffine",
        "RandomContrast",
        "RandomBrightness",
    ]
    affine = layers[1]
    assert (affine.rotation, affine.zoom, affine.translation) == (0.05, 0.1, 0.1)
    assert augmentation_layers("zoom")[0].rotation == 0.0
    assert augmentation_layers("none") == []


def test_unknown_augmentations_are_named():
    with pytest.raises(ValueError, match="Unknown augmentation blur, tilt; choose from flip"):
        parse_augmentations("flip,tilt,blur")


@pytest.mark.parametrize("spec", ["mixup", "cutmix", "mixup,cutmix"])
def test_batch_mixing_blends_images_and_their_labels_alike(spec):
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (8, 16, 16, 3)), tf.float32)
    labels = tf.one_hot([0, 1, 2, 0, 1, 2, 0, 1], 3)
    mixed_images, mixed_labels = batch_mixing(spec, seed=3)(images, labels)
    assert mixed_images.shape == images.shape and mixed_labels.shape == labels.shape
    np.testing.assert_allclose(tf.reduce_sum(mixed_labels, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(mixed_labels, labels)
    assert batch_mixing("flip,zoom") is None
