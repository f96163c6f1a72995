import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
from conftest import IMAGE_SIZE, MOBILENET_WEIGHTS, REPO, needs_weights

from components import manifest, serving, storage, train, tune
from components.classifier import unfreeze_top
from components.train import (
    TrainConfig,
    build_model,
    make_dataset,
    per_class_thresholds,
)


def test_a_multi_label_head_has_a_sigmoid_per_class():
    config = TrainConfig(weights="none", alpha=0.25, image_size=32)
    model, _ = build_model(config, num_classes=3, multi_label=True)
    assert model.get_layer("scores").activation.__name__ == "sigmoid"


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


def test_the_cli_offers_the_trainers_choices():
    from pipelines import cli

    assert cli.OPTIMIZERS == train.OPTIMIZERS
    assert cli.LEARNING_RATE_SCHEDULES == train.LEARNING_RATE_SCHEDULES
    assert cli.CLASS_WEIGHTS == train.CLASS_WEIGHTS
    assert cli.LOSSES == train.LOSSES
    assert cli.MIXED_PRECISION == train.MIXED_PRECISION
    assert cli.TUNE_ALGORITHMS == tune.ALGORITHMS


@pytest.mark.parametrize(
    "option, message",
    [
        ({"optimizer": "lbfgs"}, "optimizer must be one of adam, adamw, sgd, rmsprop"),
        ({"learning_rate_schedule": "step"}, "learning_rate_schedule must be one of constant"),
        ({"class_weight": "inverse"}, "class_weight must be one of none, balanced"),
        ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
        ({"loss": "hinge"}, "loss must be one of crossentropy, focal"),
        ({"tflite": "float64"}, "Unknown TFLite quantisation float64"),
        ({"mixed_precision": "bf16"}, "mixed_precision must be one of auto, on, off"),
        ({"l2": -1.0}, "l2 and focal_gamma must not be negative"),
        ({"xla": True, "augmentations": "flip,zoom"}, "xla cannot compile the zoom augmentation"),
    ],
)
def test_unknown_training_options_are_refused(option, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**option)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = TrainConfig(optimizer="sgd", learning_rate_schedule="cosine", warmup_epochs=1)
    optimizer = train.make_optimizer(config, 0.1, total_steps=50, steps_per_epoch=10)
    schedule = optimizer._learning_rate
    assert optimizer.momentum == 0.9
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(10)) == pytest.approx(0.1)  # warmup ends at the target
    assert float(schedule(30)) == pytest.approx(0.05)  # half way through the decay
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-7)


def test_balanced_class_weights_follow_scikit_learn():
    assert train.balanced_class_weights([30, 10, 20]) == pytest.approx({0: 2 / 3, 1: 2.0, 2: 1.0})
    assert train.balanced_class_weights([4, 0])[1] == 0.0


def test_training_with_sgd_cosine_smoothing_and_class_weights(prepared, tmp_path):
    config = TrainConfig(
        weights="none",
        alpha=0.25,
        image_size=IMAGE_SIZE,
        epochs=2,
        fine_tune_epochs=0,
        batch_size=16,
        augmentations="none",
        optimizer="sgd",
        learning_rate_schedule="cosine",
        warmup_epochs=1,
        label_smoothing=0.1,
        class_weight="balanced",
        loss="focal",
        l2=1e-4,
        tensorboard_dir=str(tmp_path / "logs"),
        tflite="int8",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train.train(
            prepared["examples"], prepared["transform"], str(tmp_path / "m"), config
        )
    keras_warnings = [str(w.message) for w in caught if "keras" in w.filename]
    assert not [m for m in keras_warnings if "ran out of data" in m or "shuffle" in m]
    assert (tmp_path / "m" / "assets.extra" / "tflite" / "model_int8.tflite").is_file()
    assert set(result.tflite) == {"int8"} and result.tflite["int8"]["sample_images"] > 0
    assert list((tmp_path / "logs" / "full" / "train").glob("events.out.tfevents.*"))
    assert list((tmp_path / "logs" / "full" / "validation").glob("events.out.tfevents.*"))
    train_rows = manifest.split_rows(manifest.read(prepared["validated"]), "train")
    counts = train_rows["label"].value_counts()
    expected = {
        index: len(train_rows) / (len(counts) * counts[name])
        for index, name in enumerate(result.class_names)
    }
    assert result.class_weights == pytest.approx(expected)
    assert result.stages == ["full", "full"]
    saved = json.loads((tmp_path / "m" / "assets.extra" / serving.TRAINING_FILE).read_text())
    assert saved["config"]["optimizer"] == "sgd" and saved["config"]["label_smoothing"] == 0.1
    assert saved["config"]["loss"] == "focal" and saved["precision_policy"] == "float32"


def test_focal_loss_down_weights_the_images_the_model_already_gets_right():
    truth = np.array([[1.0, 0.0], [1.0, 0.0]])
    scores = np.array([[0.9, 0.1], [0.4, 0.6]])  # one easy image, one hard
    focal = train.make_loss(TrainConfig(loss="focal", focal_gamma=2.0), multi_label=False)
    plain = train.make_loss(TrainConfig(), multi_label=False)
    per_image = [
        (
            float(focal(truth[i : i + 1], scores[i : i + 1])),
            float(plain(truth[i : i + 1], scores[i : i + 1])),
        )
        for i in range(2)
    ]
    for (focal_loss, cross_entropy), p in zip(per_image, (0.9, 0.4), strict=True):
        assert focal_loss == pytest.approx((1 - p) ** 2 * cross_entropy, rel=1e-5)
    binary = train.make_loss(TrainConfig(loss="focal"), multi_label=True)
    assert isinstance(binary, keras.losses.BinaryFocalCrossentropy)


def test_l2_penalises_the_heads_weights():
    config = TrainConfig(weights="none", alpha=0.25, image_size=32, l2=0.01)
    model, _ = build_model(config, num_classes=3)
    kernel = model.get_layer("scores").kernel.numpy()
    assert len(model.losses) == 1
    assert float(model.losses[0]) == pytest.approx(0.01 * (kernel**2).sum(), rel=1e-5)
    assert not build_model(TrainConfig(weights="none", alpha=0.25, image_size=32), 3)[0].losses


def test_mixed_precision_computes_in_float16_with_a_float32_output():
    config = TrainConfig(weights="none", alpha=0.25, image_size=32, mixed_precision="on")
    model, backbone = build_model(config, num_classes=3)
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after building
    assert {layer.compute_dtype for layer in backbone.layers[1:]} == {"float16"}
    assert model.get_layer("scores").compute_dtype == "float32"
    model.compile(keras.optimizers.SGD(0.01), train.make_loss(config, multi_label=False))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    images = np.full((4, 32, 32, 3), 128, np.uint8)
    loss = model.train_on_batch(images, np.eye(3)[[0, 1, 2, 0]])
    assert np.isfinite(loss)
    assert model.predict(images, verbose=0).dtype == np.float32
    assert train.precision_policy("auto") == "float32"  # no GPU here


def test_xla_compiles_the_train_step():
    config = TrainConfig(
        weights="none", alpha=0.25, image_size=32, xla=True, augmentations="flip,contrast"
    )
    model, _ = build_model(config, num_classes=2)
    model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy", jit_compile=config.xla)
    loss = model.train_on_batch(np.full((4, 32, 32, 3), 90, np.uint8), np.eye(2)[[0, 1, 1, 0]])
    assert np.isfinite(loss) and model.jit_compile


def test_one_device_uses_the_default_strategy_and_a_cluster_the_multi_worker_one():
    strategy = train.distribution_strategy()
    assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    worker = f"localhost:{port}"
    tf_config = {"cluster": {"worker": [worker]}, "task": {"type": "worker", "index": 0}}
    code = (
        "import tensorflow as tf\n"
        "from components.train import distribution_strategy\n"
        "strategy = distribution_strategy()\n"
        "print(isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), "
        "strategy.num_replicas_in_sync)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "TF_CONFIG": json.dumps(tf_config)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.stdout.split() == ["True", "1"], completed.stderr


def test_batches_are_global_batches_across_replicas(prepared):
    transform = tft.TFTransformOutput(prepared["transform"])
    config = TrainConfig(weights="none", image_size=IMAGE_SIZE, batch_size=4)
    data = make_dataset(prepared["examples"], "train", transform, config, False, replicas=2)
    images, _ = next(iter(data))
    assert images.shape[0] == 8


def test_balanced_class_weights_are_refused_for_multi_label_data(multi_label_prepared, tmp_path):
    config = TrainConfig(weights="none", image_size=IMAGE_SIZE, class_weight="balanced")
    with pytest.raises(ValueError, match="multi-label images have several"):
        train.train(
            multi_label_prepared["examples"],
            multi_label_prepared["transform"],
            str(tmp_path / "m"),
            config,
        )


def _test_accuracy(model_dir: str, prepared: dict[str, str]) -> float:
    from components.evaluate import classification_metrics, predict

    test = manifest.split_rows(manifest.read(prepared["validated"]), "test")
    images = [Path(uri).read_bytes() for uri in test["uri"]]
    predictions = predict(serving.ServedModel(model_dir), images, batch_size=32)
    return classification_metrics(test["label"].tolist(), predictions).accuracy


def test_a_killed_train_step_resumes_from_its_last_epoch(prepared, tmp_path):
    """kill -9 once an epoch has been backed up, during the next; the rerun continues from
    the backup and ends as accurate as a run that was never interrupted."""
    config = TrainConfig(
        weights="none",
        alpha=0.25,
        image_size=IMAGE_SIZE,
        epochs=12,
        early_stopping_patience=12,
        fine_tune_epochs=0,
        batch_size=16,
        augmentations="none",
        checkpoint_dir=str(tmp_path / "checkpoints"),
    )
    code = (
        "from components.train import TrainConfig, train\n"
        f"train({prepared['examples']!r}, {prepared['transform']!r}, "
        f"{str(tmp_path / 'killed')!r}, TrainConfig(**{asdict(config)!r}))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    backup = tmp_path / "checkpoints" / "full" / "training_metadata.json"
    deadline = time.monotonic() + 180
    while not backup.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert backup.exists(), "no epoch was backed up before the kill"
    assert not (tmp_path / "killed").exists()

    result = train.train(
        prepared["examples"], prepared["transform"], str(tmp_path / "resumed"), config
    )
    assert 0 < len(result.stages) < config.epochs  # it started after the backed-up epochs
    assert serving.is_saved_model(tmp_path / "resumed")
    assert (tmp_path / "checkpoints" / "full-finished.weights.h5").exists()

    again = train.train(prepared["examples"], prepared["transform"], str(tmp_path / "3"), config)
    assert again.stages == result.stages  # the finished stage is restored, not retrained

    uninterrupted = dataclasses.replace(config, checkpoint_dir="")
    train.train(prepared["examples"], prepared["transform"], str(tmp_path / "whole"), uninterrupted)
    resumed_accuracy = _test_accuracy(str(tmp_path / "resumed"), prepared)
    assert resumed_accuracy == pytest.approx(
        _test_accuracy(str(tmp_path / "whole"), prepared), abs=0.02
    )


def test_the_seed_repeats_a_training_run_and_another_seed_trains_another(prepared, tmp_path):
    config = TrainConfig(
        weights="none", alpha=0.25, image_size=IMAGE_SIZE, epochs=1, fine_tune_epochs=0
    )
    first, again, other = (
        train.train(
            prepared["examples"],
            prepared["transform"],
            str(tmp_path / name),
            dataclasses.replace(config, seed=seed),
        )
        for name, seed in (("first", 42), ("again", 42), ("other", 7))
    )
    assert again.history == first.history
    assert other.history["loss"] != first.history["loss"]


def test_a_steps_parameters_become_the_config_by_name():
    parameters = {"backbone": "vgg16", "epochs": 4, "model": object(), "logging": None}
    config = TrainConfig.from_parameters(parameters, checkpoint_dir="gs://b/c")
    assert (config.backbone, config.epochs, config.checkpoint_dir) == ("vgg16", 4, "gs://b/c")
    assert config.alpha == TrainConfig().alpha
