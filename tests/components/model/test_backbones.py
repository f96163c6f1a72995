import keras
import numpy as np
import pytest

from conftest import IMAGE_SIZE, _prepare, colour_image
from imgclf.components.model.backbones import BACKBONES, SCALINGS, CaffeScaling, get_backbone
from imgclf.components.serving import signature
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.network import build_model

# One size above every architecture's minimum, for those whose minimum exceeds IMAGE_SIZE.
LARGER_SIZE = max(backbone.min_image_size for backbone in BACKBONES.values())


@pytest.fixture(scope="module")
def transforms(tmp_path_factory, colour_tree) -> dict[int, str]:
    """Transform graphs at IMAGE_SIZE and LARGER_SIZE, for the serving export."""
    work = tmp_path_factory.mktemp("backbone-transforms")
    return {
        size: _prepare(work / str(size), str(colour_tree), image_size=size)["transform"]
        for size in (IMAGE_SIZE, LARGER_SIZE)
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_trains_a_step_and_exports_for_serving(name, transforms, tmp_path):
    size = IMAGE_SIZE if BACKBONES[name].min_image_size <= IMAGE_SIZE else LARGER_SIZE
    alpha = 0.25 if BACKBONES[name].width_multiplier else 1.0
    config = TrainConfig(
        backbone=name, weights="none", alpha=alpha, image_size=size, augmentations="none"
    )
    model, _ = build_model(config, num_classes=3)
    # Eagerly: tracing a train step takes 15 to 20 s on the large backbones, while the export
    # below traces the model anyway; graph-mode training is test_train's and the DAG runs' job.
    model.compile(keras.optimizers.SGD(0.001), "categorical_crossentropy", run_eagerly=True)
    before = [w.copy() for w in model.get_layer("scores").get_weights()]
    images = np.random.default_rng(0).integers(0, 256, (4, size, size, 3), np.uint8)
    loss = model.train_on_batch(images, np.eye(3)[[0, 2, 1, 0]])
    assert np.isfinite(loss)
    assert not np.array_equal(before[0], model.get_layer("scores").get_weights()[0])

    signature.export(model, transforms[size], ["blue", "green", "red"], size, str(tmp_path))
    served = signature.ServedModel(str(tmp_path)).predict([colour_image((200, 30, 30), 0)])
    assert served[signature.SCORES_KEY].shape == (1, 3)
    np.testing.assert_allclose(served[signature.SCORES_KEY].sum(), 1.0, rtol=1e-5)


def test_an_input_below_the_architectures_minimum_is_a_clear_error():
    config = TrainConfig(backbone="inceptionv3", weights="none", image_size=64)
    with pytest.raises(ValueError, match="image_size 64 is below inceptionv3's smallest input, 75"):
        build_model(config, num_classes=2)


@pytest.mark.parametrize(
    "name", sorted(name for name, spec in BACKBONES.items() if spec.min_image_size > IMAGE_SIZE)
)
def test_a_raised_minimum_size_is_the_smallest_the_architecture_builds_at(name):
    spec = BACKBONES[name]
    spec.build((spec.min_image_size, spec.min_image_size, 3), None, 1.0)
    with pytest.raises(ValueError):
        spec.build((spec.min_image_size - 1, spec.min_image_size - 1, 3), None, 1.0)


def test_caffe_scaling_is_bgr_minus_the_imagenet_mean():
    pixel = np.array([[[[10.0, 20.0, 30.0]]]], np.float32)
    expected = [[[[30 - 103.939, 20 - 116.779, 10 - 123.68]]]]
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(CaffeScaling()(pixel)), expected, rtol=1e-6
    )


def test_unknown_backbone_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of: alexnet, convnext_tiny, densenet121, "):
        get_backbone("vgg99")


def test_every_backbone_names_a_known_scaling():
    assert {backbone.scaling for backbone in BACKBONES.values()} <= set(SCALINGS)


@pytest.mark.parametrize("name", ["alexnet", "squeezenet1_1"])
def test_the_classic_nets_refuse_imagenet_and_load_a_users_weights_file(name, tmp_path):
    with pytest.raises(ValueError, match=f"no ImageNet weights exist for {name}; pass"):
        build_model(TrainConfig(backbone=name, weights="imagenet", image_size=64), 2)

    shape = (64, 64, 3)
    trained = BACKBONES[name].build(shape, None, 1.0)
    weights_file = tmp_path / f"{name}.weights.h5"
    trained.save_weights(weights_file)
    config = TrainConfig(backbone=name, weights=str(weights_file), image_size=64)
    _, loaded = build_model(config, num_classes=2)
    for expected, actual in zip(trained.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(expected, actual)


def test_squeezenet_has_squeezenet_1_1s_parameter_count():
    # torchvision's squeezenet1_1 has 1,235,496 parameters, of which its 1000-class
    # classifier convolution holds 513,000.
    assert BACKBONES["squeezenet1_1"].build((224, 224, 3), None, 1.0).count_params() == 722_496


def test_alexnet_has_alexnets_convolutional_parameter_count():
    # torchvision's alexnet features: 2,469,696 parameters.
    assert BACKBONES["alexnet"].build((224, 224, 3), None, 1.0).count_params() == 2_469_696
