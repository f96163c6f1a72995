"""The network train fits: the head on a backbone, its weights, its precision."""

import keras
import numpy as np
import pytest

from conftest import MOBILENET_WEIGHTS, needs_weights
from imgclf.components.model.classifier import unfreeze_top
from imgclf.components.training import hardware, objectives
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.network import build_model


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
def test_weights_staged_in_a_bucket_load_as_the_local_file_does(bucket):
    """An air-gapped cluster reads the ImageNet weights from its own store."""
    bucket.put("weights/mobilenet.h5", MOBILENET_WEIGHTS.read_bytes())
    staged = TrainConfig(weights=f"{bucket.root}/weights/mobilenet.h5", alpha=0.25, image_size=32)
    local = TrainConfig(weights=str(MOBILENET_WEIGHTS), alpha=0.25, image_size=32)
    _, from_bucket = build_model(staged, num_classes=2)
    _, from_disk = build_model(local, num_classes=2)
    assert _same(_weights(from_bucket.layers), _weights(from_disk.layers))


@needs_weights
def test_weights_of_another_alpha_are_a_clear_error():
    config = TrainConfig(weights=str(MOBILENET_WEIGHTS), alpha=0.5, image_size=32)
    with pytest.raises(RuntimeError, match="must hold weights of this backbone and alpha"):
        build_model(config, num_classes=2)


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
    model.compile(keras.optimizers.SGD(0.01), objectives.make_loss(config, multi_label=False))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    images = np.full((4, 32, 32, 3), 128, np.uint8)
    loss = model.train_on_batch(images, np.eye(3)[[0, 1, 2, 0]])
    assert np.isfinite(loss)
    assert model.predict(images, verbose=0).dtype == np.float32
    assert hardware.precision_policy("auto") == "float32"  # no GPU here


def test_xla_compiles_the_train_step():
    config = TrainConfig(
        weights="none", alpha=0.25, image_size=32, xla=True, augmentations="flip,contrast"
    )
    model, _ = build_model(config, num_classes=2)
    model.compile(keras.optimizers.SGD(0.01), "categorical_crossentropy", jit_compile=config.xla)
    loss = model.train_on_batch(np.full((4, 32, 32, 3), 90, np.uint8), np.eye(2)[[0, 1, 1, 0]])
    assert np.isfinite(loss) and model.jit_compile
