"""The trainer input: batches from the TFRecords."""

import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft

from conftest import IMAGE_SIZE
from imgclf.components.training import dataset
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.dataset import make_dataset


def test_training_batches_are_one_hot_and_mixup_blends_them(prepared):
    transform = tft.TFTransformOutput(prepared["transform"])
    config = TrainConfig(weights="none", image_size=IMAGE_SIZE, batch_size=8)
    _, labels = next(iter(make_dataset(prepared["examples"], "train", transform, config, True)))
    assert labels.shape == (8, 3) and set(np.unique(labels)) == {0.0, 1.0}

    config.augmentations = "flip,mixup"
    _, mixed = next(iter(make_dataset(prepared["examples"], "train", transform, config, True)))
    np.testing.assert_allclose(tf.reduce_sum(mixed, axis=1), 1.0, rtol=1e-5)
    assert set(np.unique(mixed)) - {0.0, 1.0}, "MixUp left every label one-hot"
    _, test_labels = next(
        iter(make_dataset(prepared["examples"], "test", transform, config, False))
    )
    assert set(np.unique(test_labels)) == {0.0, 1.0}


@pytest.mark.parametrize("memory_share, cached", [(dataset.CACHE_MEMORY_SHARE, True), (0.0, False)])
def test_a_split_that_fits_in_memory_is_read_from_disk_once(
    prepared, tmp_path, monkeypatch, memory_share, cached
):
    examples = shutil.copytree(prepared["examples"], tmp_path / "examples")
    monkeypatch.setattr(dataset, "CACHE_MEMORY_SHARE", memory_share)
    transform = tft.TFTransformOutput(prepared["transform"])
    config = TrainConfig(weights="none", image_size=IMAGE_SIZE, batch_size=8)
    data = make_dataset(str(examples), "test", transform, config, training=False)
    first = [images.numpy() for images, _ in data]
    for path in examples.glob("test/*.tfrecord.gz"):
        path.unlink()
    if cached:
        np.testing.assert_array_equal(np.concatenate([i for i, _ in data]), np.concatenate(first))
    else:
        with pytest.raises(tf.errors.NotFoundError):
            list(data)


def test_batches_are_global_batches_across_replicas(prepared):
    transform = tft.TFTransformOutput(prepared["transform"])
    config = TrainConfig(weights="none", image_size=IMAGE_SIZE, batch_size=4)
    data = make_dataset(prepared["examples"], "train", transform, config, False, replicas=2)
    images, _ = next(iter(data))
    assert images.shape[0] == 8
