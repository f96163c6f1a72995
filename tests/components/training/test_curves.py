"""Training curves: loss and each metric per epoch, across both stages, as SVG."""

from imgclf.components.training.curves import training_curves

_HISTORY = {
    "loss": [1.2, 0.9, 0.7],
    "val_loss": [1.3, 1.0, 0.8],
    "accuracy": [0.4, 0.6, 0.7],
    "val_accuracy": [0.35, 0.5, 0.65],
    "learning_rate": [0.001, 0.001, 0.0001],
}


_STAGES = ["head", "head", "fine_tune"]


def test_training_curves_draw_loss_then_each_metric_and_mark_fine_tuning():
    svg = training_curves(_HISTORY, _STAGES)
    assert svg.count("<svg") == 2
    assert svg.index(">loss<") < svg.index(">accuracy<")
    assert "learning_rate" not in svg
    assert svg.count("<polyline") == 4  # train and validation for both metrics
    assert svg.count("<circle") == 12
    assert svg.count("stroke-dasharray") == 2 and "fine_tune starts" in svg
    assert "validation loss, epoch 3: 0.8000" in svg


def test_training_curves_without_a_validation_split_draw_train_only():
    svg = training_curves({"loss": [0.9, 0.5]}, ["full", "full"])
    assert svg.count("<polyline") == 1 and "stroke-dasharray" not in svg
