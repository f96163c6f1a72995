"""Loss, optimizer schedule and class weights."""

import keras
import numpy as np
import pytest

from imgclf.components.training import objectives
from imgclf.components.training.config import TrainConfig


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = TrainConfig(optimizer="sgd", learning_rate_schedule="cosine", warmup_epochs=1)
    optimizer = objectives.make_optimizer(config, 0.1, total_steps=50, steps_per_epoch=10)
    schedule = optimizer._learning_rate
    assert optimizer.momentum == 0.9
    assert float(schedule(0)) == pytest.approx(0.0)
    assert float(schedule(10)) == pytest.approx(0.1)  # warmup ends at the target
    assert float(schedule(30)) == pytest.approx(0.05)  # half way through the decay
    assert float(schedule(50)) == pytest.approx(0.0, abs=1e-7)


def test_balanced_class_weights_follow_scikit_learn():
    assert objectives.balanced_class_weights([30, 10, 20]) == pytest.approx(
        {0: 2 / 3, 1: 2.0, 2: 1.0}
    )
    assert objectives.balanced_class_weights([4, 0])[1] == 0.0


def test_focal_loss_down_weights_the_images_the_model_already_gets_right():
    truth = np.array([[1.0, 0.0], [1.0, 0.0]])
    scores = np.array([[0.9, 0.1], [0.4, 0.6]])  # one easy image, one hard
    focal = objectives.make_loss(TrainConfig(loss="focal", focal_gamma=2.0), multi_label=False)
    plain = objectives.make_loss(TrainConfig(), multi_label=False)
    per_image = [
        (
            float(focal(truth[i : i + 1], scores[i : i + 1])),
            float(plain(truth[i : i + 1], scores[i : i + 1])),
        )
        for i in range(2)
    ]
    for (focal_loss, cross_entropy), p in zip(per_image, (0.9, 0.4), strict=True):
        assert focal_loss == pytest.approx((1 - p) ** 2 * cross_entropy, rel=1e-5)
    binary = objectives.make_loss(TrainConfig(loss="focal"), multi_label=True)
    assert isinstance(binary, keras.losses.BinaryFocalCrossentropy)
