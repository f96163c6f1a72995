"""The trainer config: declared settings, checked when made."""

import pytest

from imgclf.components.training.config import TrainConfig


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
        ({"l2": -1.0}, "l2 must not be negative"),
        ({"focal_gamma": -1.0}, "focal_gamma must not be negative"),
        ({"xla": True, "augmentations": "flip,zoom"}, "xla cannot compile the zoom augmentation"),
    ],
)
def test_unknown_training_options_are_refused(option, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**option)


def test_a_steps_settings_become_the_config_by_name_and_type():
    """KFP hands the step its settings dict with every value as text (the launcher substitutes
    "4" for 4, kfp.local "4.0"); other steps' settings in it are left out."""
    settings = {"backbone": "vgg16", "epochs": "4.0", "xla": "false", "tune_trials": "3"}
    config = TrainConfig.from_step_input(settings)
    assert (config.backbone, config.epochs, config.xla) == ("vgg16", 4, False)
    assert config.alpha == TrainConfig().alpha
