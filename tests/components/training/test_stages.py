import keras
import numpy as np
import tensorflow_transform as tft

from conftest import IMAGE_SIZE, MOBILENET_WEIGHTS, needs_weights
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.curves import training_curves_page
from imgclf.components.training.dataset import make_dataset
from imgclf.components.training.network import build_model
from imgclf.components.training.stages import (
    TrainResult,
    best_epoch,
    fine_tunes,
    fit_stages,
    head_schedule,
    new_result,
)
from imgclf.components.transform import features


def test_the_best_epoch_is_the_lowest_validation_loss_and_a_tie_keeps_the_earlier():
    result = TrainResult(
        class_names=["a", "b"],
        history={"val_loss": [0.5, 0.4, 0.45, 0.3], "loss": [1, 1, 1, 1]},
        stages=["head", "head", "fine_tune", "fine_tune"],
    )
    assert best_epoch(result) == {"stage": "fine_tune", "epoch": 4, "val_loss": 0.3}
    result.history["val_loss"] = [0.5, 0.4, 0.4, 0.6]
    assert best_epoch(result) == {"stage": "head", "epoch": 2, "val_loss": 0.4}
    result.history = {"loss": [1, 1, 1, 1]}
    assert best_epoch(result) is None


def test_small_data_gets_head_epochs_enough_for_min_head_steps_before_any_is_picked():
    result = TrainResult(class_names=["a", "b"], train_images=54)
    # 54 images in batches of 32: 2 steps an epoch, so 150 steps take 75 epochs, and early
    # stopping may keep only the 75th (index 74) or later.
    assert head_schedule(TrainConfig(epochs=2, min_head_steps=150), result) == (75, 74)
    assert head_schedule(TrainConfig(epochs=2, min_head_steps=0), result) == (2, 0)
    assert head_schedule(TrainConfig(epochs=0, min_head_steps=150), result) == (0, 0)
    assert head_schedule(TrainConfig(epochs=90, min_head_steps=150), result) == (90, 74)
    # The clothing photos' 3,068 train images make 96 steps an epoch: epochs stands.
    result.train_images = 3068
    assert head_schedule(TrainConfig(epochs=2, min_head_steps=150), result) == (2, 1)


def test_epochs_before_min_head_steps_are_never_the_best():
    result = TrainResult(
        class_names=["a", "b"],
        history={"val_loss": [0.2, 0.5, 0.4, 0.3]},
        stages=["head", "head", "head", "fine_tune"],
        head_selectable_from=2,
    )
    assert best_epoch(result) == {"stage": "fine_tune", "epoch": 4, "val_loss": 0.3}


class _HeadPredictions(keras.callbacks.Callback):
    """At the end of the head stage, after early stopping restored its best epoch (early
    stopping's callback runs first), the predictions on the validation images."""

    def __init__(self, images):
        super().__init__()
        self.images, self.predictions, self.stages_ended = images, None, 0

    def on_train_end(self, logs=None):
        self.stages_ended += 1
        if self.stages_ended == 1:
            self.predictions = self.model.predict(self.images, verbose=0)


class _WreckFineTuning(keras.callbacks.Callback):
    """Scrambles every weight when the second stage starts: a fine-tuning stage that can only
    do worse on validation than the head stage."""

    def __init__(self):
        super().__init__()
        self.stages_begun = 0

    def on_train_begin(self, logs=None):
        self.stages_begun += 1
        if self.stages_begun == 2:
            rng = np.random.default_rng(0)
            for variable in self.model.trainable_weights:
                variable.assign(rng.normal(0, 5, variable.shape).astype(variable.dtype))


def test_fine_tuning_runs_only_on_enough_images_a_class_and_says_why_not():
    """The few-per-class data set of bench.quality: 54 train images of 3 classes (18 a class)
    is below min_fine_tune_images_per_class, the two-class one (225 of 2) above it."""
    few = TrainResult(class_names=["dress", "shirt", "shorts"], train_images=54)
    assert not fine_tunes(TrainConfig(fine_tune_epochs=30), few)
    assert few.fine_tune_skipped == (
        "54 train images make 18 a class, fewer than min_fine_tune_images_per_class=50"
    )
    page = training_curves_page({"loss": [1.0, 0.5]}, ["head", "head"], None, few.fine_tune_skipped)
    assert "Fine-tuning skipped: 54 train images make 18 a class" in page

    asked_for_anyway = TrainResult(class_names=["dress", "shirt", "shorts"], train_images=54)
    assert fine_tunes(
        TrainConfig(fine_tune_epochs=30, min_fine_tune_images_per_class=0), asked_for_anyway
    )
    assert asked_for_anyway.fine_tune_skipped is None

    two_class = TrainResult(class_names=["longsleeve", "t-shirt"], train_images=225)
    assert fine_tunes(TrainConfig(fine_tune_epochs=30), two_class)
    not_asked = TrainResult(class_names=["longsleeve", "t-shirt"], train_images=225)
    assert not fine_tunes(TrainConfig(fine_tune_epochs=0), not_asked)
    assert not_asked.fine_tune_skipped is None


@needs_weights
def test_a_fine_tuning_stage_that_does_worse_leaves_the_head_stages_best(prepared):
    config = TrainConfig(
        backbone="mobilenet",
        weights=str(MOBILENET_WEIGHTS),
        alpha=0.25,
        image_size=IMAGE_SIZE,
        epochs=2,
        min_head_steps=0,
        fine_tune_epochs=2,
        min_fine_tune_images_per_class=0,
        learning_rate=0.003,
        learning_rate_schedule="constant",
        augmentations="none",
    )
    keras.utils.set_random_seed(config.seed)
    tft_output = tft.TFTransformOutput(prepared["transform"])
    classes = features.class_names(tft_output)
    examples = prepared["examples"]
    train_data = make_dataset(examples, "train", tft_output, config, training=True)
    validation_data = make_dataset(examples, "validation", tft_output, config, training=False)
    images = np.concatenate([batch.numpy() for batch, _ in validation_data])
    model, backbone = build_model(config, len(classes))
    result = new_result(examples, classes, False, config)
    head = _HeadPredictions(images)

    fit_stages(
        model, backbone, train_data, validation_data, config, result, [head, _WreckFineTuning()]
    )

    assert result.stages == ["head", "head", "fine_tune", "fine_tune"]
    assert result.kept["stage"] == "head"
    assert min(result.history["val_loss"][2:]) > result.kept["val_loss"]
    np.testing.assert_array_equal(model.predict(images, verbose=0), head.predictions)
    page = training_curves_page(result.history, result.stages, result.kept)
    assert f"Exported: the weights of epoch {result.kept['epoch']} (head stage)" in page
