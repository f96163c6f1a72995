"""bench.gpu_training_speed builds train.build_model's classifier without TensorFlow."""

import argparse

import keras
import pytest

from bench.gpu_training_speed import CLASSES, IMAGE_SIZE, fine_tuning_model, images_per_second
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.network import build_model


@pytest.mark.parametrize("backbone, alpha", [("mobilenet", 0.25), ("efficientnetv2b0", 1.0)])
def test_the_benchmark_model_is_the_train_steps_model(backbone, alpha):
    config = TrainConfig(backbone=backbone, weights="none", alpha=alpha, image_size=IMAGE_SIZE)
    ours, _ = build_model(config, CLASSES)
    benchmarked = fine_tuning_model(backbone, None, alpha, "float32")
    assert [type(layer) for layer in benchmarked.layers] == [type(layer) for layer in ours.layers]
    assert benchmarked.count_params() == ours.count_params()


def test_mixed_float16_computes_in_float16_with_float32_scores_and_loss_scaling():
    model = fine_tuning_model("mobilenet", None, 0.25, "mixed_float16")
    backbone = model.layers[-4]
    assert backbone.compute_dtype == "float16" and model.layers[-1].compute_dtype == "float32"
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert keras.mixed_precision.global_policy().name == "float32"


def test_stage_two_trains_every_backbone_layer_but_batch_normalization():
    backbone = fine_tuning_model("mobilenet", None, 0.25, "float32").layers[-4]
    for layer in backbone.layers:
        if layer.weights:
            batch_norm = isinstance(layer, keras.layers.BatchNormalization)
            assert layer.trainable != batch_norm, layer.name


def test_it_times_every_epoch_after_the_warm_up():
    args = argparse.Namespace(backbone="mobilenet", weights=None, alpha=0.25)
    speeds = images_per_second("float32", batch_size=4, images=8, epochs=2, args=args)
    assert len(speeds) == 2 and all(speed > 0 for speed in speeds)
