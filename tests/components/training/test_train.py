import dataclasses
import json
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from conftest import IMAGE_SIZE, REPO
from imgclf.components import artifacts, manifest, storage
from imgclf.components.serving import signature
from imgclf.components.training import train
from imgclf.components.training.config import TrainConfig


def test_a_multi_label_model_learns_which_labels_are_present(
    multi_label_model, multi_label_prepared
):
    training = json.loads(
        (Path(multi_label_model) / "assets.extra" / artifacts.TRAINING_RECORD).read_text()
    )
    assert training["multi_label"] is True
    assert len(training["thresholds"]) == 3 and "average_precision" in training["history"]

    model = signature.ServedModel(multi_label_model)
    test = manifest.split_rows(manifest.read(multi_label_prepared["validated"]), "test")
    outputs = model.predict([storage.read_bytes(uri) for uri in test["uri"]])
    classes = [name.decode() for name in outputs[signature.CLASSES_KEY][0]]
    assert outputs[signature.POSITIVES_KEY].dtype == bool
    # Independent sigmoids: a row's scores need not sum to one.
    assert not np.allclose(outputs[signature.SCORES_KEY].sum(axis=1), 1.0)
    predicted = [
        {name for name, present in zip(classes, row, strict=True) if present}
        for row in outputs[signature.POSITIVES_KEY]
    ]
    truth = [set(labels) for labels in manifest.label_sets(test)]
    exact = np.mean([p == t for p, t in zip(predicted, truth, strict=True)])
    assert exact >= 0.6, list(zip(predicted, truth, strict=True))


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
    saved = json.loads((tmp_path / "m" / "assets.extra" / artifacts.TRAINING_RECORD).read_text())
    assert saved["config"]["optimizer"] == "sgd" and saved["config"]["label_smoothing"] == 0.1
    assert saved["config"]["loss"] == "focal" and saved["precision_policy"] == "float32"


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
    from imgclf.components.evaluation.metrics import classification_metrics, predict

    test = manifest.split_rows(manifest.read(prepared["validated"]), "test")
    images = [Path(uri).read_bytes() for uri in test["uri"]]
    predictions = predict(signature.ServedModel(model_dir), images, batch_size=32)
    return classification_metrics(test["label"].tolist(), predictions).accuracy


def _resumable(epochs: int, **where) -> TrainConfig:
    return TrainConfig(
        weights="none",
        alpha=0.25,
        image_size=IMAGE_SIZE,
        epochs=epochs,
        early_stopping_patience=epochs,
        fine_tune_epochs=0,
        batch_size=16,
        augmentations="none",
        **where,
    )


def _kill_training_when(done, prepared, model_dir: Path, config: TrainConfig) -> None:
    """Trains in a fresh process, as a pod does, and kills it with SIGKILL once ``done()``."""
    code = (
        "from imgclf.components.training.train import TrainConfig, train\n"
        f"train({prepared['examples']!r}, {prepared['transform']!r}, "
        f"{str(model_dir)!r}, TrainConfig(**{asdict(config)!r}))\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO)
    deadline = time.monotonic() + 180
    while not done() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # into the next epoch
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_killed_train_step_resumes_from_its_last_epoch(prepared, tmp_path):
    """kill -9 once an epoch has been backed up, during the next; the rerun continues from
    the backup and ends as accurate as a run that was never interrupted."""
    config = _resumable(12, checkpoint_dir=str(tmp_path / "checkpoints"))
    backup = tmp_path / "checkpoints" / "full" / "training_metadata.json"
    _kill_training_when(backup.exists, prepared, tmp_path / "killed", config)
    assert backup.exists(), "no epoch was backed up before the kill"
    assert not (tmp_path / "killed").exists()

    result = train.train(
        prepared["examples"], prepared["transform"], str(tmp_path / "resumed"), config
    )
    assert 0 < len(result.stages) < config.epochs  # it started after the backed-up epochs
    assert signature.is_saved_model(tmp_path / "resumed")
    assert (tmp_path / "checkpoints" / "full-finished.weights.h5").exists()

    again = train.train(prepared["examples"], prepared["transform"], str(tmp_path / "3"), config)
    assert again.stages == result.stages  # the finished stage is restored, not retrained

    uninterrupted = dataclasses.replace(config, checkpoint_dir="")
    train.train(prepared["examples"], prepared["transform"], str(tmp_path / "whole"), uninterrupted)
    resumed_accuracy = _test_accuracy(str(tmp_path / "resumed"), prepared)
    assert resumed_accuracy == pytest.approx(
        _test_accuracy(str(tmp_path / "whole"), prepared), abs=0.02
    )


def test_a_killed_train_pod_resumes_on_a_fresh_disk_from_its_s3_checkpoints(
    prepared, tmp_path, s3_bucket
):
    """A retried pod starts with an empty disk: the backups mirrored to the store after each
    epoch bring it back to where the killed pod was."""
    mirror = f"{s3_bucket.root}/run/train/checkpoints"
    config = _resumable(8, checkpoint_dir=str(tmp_path / "first-pod"), checkpoint_mirror=mirror)
    backup = f"{mirror}/full/training_metadata.json"
    _kill_training_when(lambda: storage.exists(backup), prepared, tmp_path / "killed", config)
    assert storage.exists(backup), "nothing was mirrored before the kill"

    second_pod = dataclasses.replace(config, checkpoint_dir=str(tmp_path / "second-pod"))
    result = train.train(
        prepared["examples"], prepared["transform"], str(tmp_path / "resumed"), second_pod
    )
    assert 0 < len(result.stages) < config.epochs  # it started after the mirrored epochs
    assert signature.is_saved_model(tmp_path / "resumed")
    assert storage.list_files(mirror) == ["full-finished.history.json", "full-finished.weights.h5"]


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
