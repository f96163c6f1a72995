import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from conftest import IMAGE_SIZE, MOBILENET_WEIGHTS, needs_weights

from components import manifest, serving, storage, train
from components.backbones import BACKBONES
from components.train import (
    TrainConfig,
    build_model,
    make_dataset,
    per_class_thresholds,
    unfreeze_top,
)


@pytest.mark.parametrize("backbone", sorted(BACKBONES))
def test_every_backbone_builds_and_classifies(backbone):
    config = TrainConfig(backbone=backbone, weights="none", alpha=0.35, image_size=32)
    model, _ = build_model(config, num_classes=4)
    scores = model.predict(np.zeros((2, 32, 32, 3), np.float32), verbose=0)
    assert scores.shape == (2, 4)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)


def test_a_multi_label_head_has_a_sigmoid_per_class():
    config = TrainConfig(weights="none", alpha=0.25, image_size=32)
    model, _ = build_model(config, num_classes=3, multi_label=True)
    assert model.get_layer("scores").activation.__name__ == "sigmoid"


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of: efficientnetv2b0, mobilenet"):
        build_model(TrainConfig(backbone="vgg99", weights="none"), num_classes=2)


def test_missing_weights_file_is_a_clear_error(tmp_path):
    config = TrainConfig(weights=str(tmp_path / "nope.h5"), alpha=0.25, image_size=32)
    with pytest.raises(FileNotFoundError, match="weights=imagenet, none, or an existing"):
        build_model(config, num_classes=2)


def _fit_one_batch(model, learning_rate=0.01):
    model.compile(keras.optimizers.SGD(learning_rate), "sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    model.fit(images, rng.integers(0, 2, 8), epochs=1, verbose=0)


def _weights(layers):
    return [w.copy() for layer in layers for w in layer.get_weights()]


def _same(before, after):
    return all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))


@needs_weights
def test_stage_one_trains_the_head_only_and_stage_two_keeps_batch_norm_frozen():
    config = TrainConfig(
        weights=str(MOBILENET_WEIGHTS), alpha=0.25, image_size=32, augmentations="none"
    )
    model, backbone = build_model(config, num_classes=2)
    head = model.get_layer("scores")

    backbone.trainable = False
    backbone_before, head_before = _weights(backbone.layers), _weights([head])
    _fit_one_batch(model)
    assert _same(backbone_before, _weights(backbone.layers))
    assert not _same(head_before, _weights([head]))

    unfrozen = unfreeze_top(backbone, 0.3)
    top, bottom = backbone.layers[-unfrozen:], backbone.layers[:-unfrozen]
    norms = [layer for layer in top if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in top if isinstance(layer, keras.layers.Conv2D)]
    assert norms and convs
    moving = [w.copy() for n in norms for w in (n.moving_mean.numpy(), n.moving_variance.numpy())]
    bottom_before, convs_before = _weights(bottom), _weights(convs)
    _fit_one_batch(model)
    assert _same(bottom_before, _weights(bottom))
    assert not _same(convs_before, _weights(convs))
    moving_after = [w for n in norms for w in (n.moving_mean.numpy(), n.moving_variance.numpy())]
    assert _same(moving, moving_after), "BatchNormalization statistics moved in fine-tuning"


@needs_weights
def test_weights_file_loads_imagenet_features():
    config = TrainConfig(weights=str(MOBILENET_WEIGHTS), alpha=0.25, image_size=32)
    _, backbone = build_model(config, num_classes=2)
    reference = keras.applications.MobileNet(
        input_shape=(32, 32, 3), alpha=0.25, include_top=False, weights=str(MOBILENET_WEIGHTS)
    )
    assert _same(_weights(reference.layers), _weights(backbone.layers))
    assert len(backbone.get_weights()) > 0 and backbone.count_params() == 218_544


@needs_weights
def test_weights_of_another_alpha_are_a_clear_error():
    config = TrainConfig(weights=str(MOBILENET_WEIGHTS), alpha=0.5, image_size=32)
    with pytest.raises(RuntimeError, match="must hold weights of this backbone and alpha"):
        build_model(config, num_classes=2)


def test_per_class_thresholds_maximise_f1_on_the_given_data():
    # Class 0 is present exactly when its score is at least 0.6; class 1 never occurs.
    scores = np.array([[0.9, 0.2], [0.6, 0.1], [0.55, 0.3], [0.1, 0.4]], np.float32)
    truth = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], np.float32)
    identity = keras.Sequential([keras.Input((2,)), keras.layers.Identity()])
    data = tf.data.Dataset.from_tensor_slices((scores, truth)).batch(3)
    assert per_class_thresholds(identity, data) == pytest.approx([0.6, 0.5])


def test_a_multi_label_model_learns_which_labels_are_present(
    multi_label_model, multi_label_prepared
):
    training = json.loads(
        (Path(multi_label_model) / "assets.extra" / serving.TRAINING_FILE).read_text()
    )
    assert training["multi_label"] is True
    assert len(training["thresholds"]) == 3 and "average_precision" in training["history"]

    model = serving.ServedModel(multi_label_model)
    test = manifest.split_rows(manifest.read(multi_label_prepared["validated"]), "test")
    outputs = model.predict([storage.read_bytes(uri) for uri in test["uri"]])
    classes = [name.decode() for name in outputs[serving.CLASSES_KEY][0]]
    assert outputs[serving.POSITIVES_KEY].dtype == bool
    # Independent sigmoids: a row's scores need not sum to one.
    assert not np.allclose(outputs[serving.SCORES_KEY].sum(axis=1), 1.0)
    predicted = [
        {name for name, present in zip(classes, row, strict=True) if present}
        for row in outputs[serving.POSITIVES_KEY]
    ]
    truth = [set(labels) for labels in manifest.label_sets(test)]
    exact = np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
    assert exact >= 0.6, list(zip(predicted, truth, strict=True))


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


@pytest.mark.parametrize("memory_share, cached", [(train.CACHE_MEMORY_SHARE, True), (0.0, False)])
def test_a_split_that_fits_in_memory_is_read_from_disk_once(
    prepared, tmp_path, monkeypatch, memory_share, cached
):
    examples = shutil.copytree(prepared["examples"], tmp_path / "examples")
    monkeypatch.setattr(train, "CACHE_MEMORY_SHARE", memory_share)
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
