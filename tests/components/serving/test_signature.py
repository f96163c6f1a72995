import base64
import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import CLASS_COLOURS, IMAGE_SIZE, colour_image
from imgclf.components.serving import signature
from imgclf.pipelines import cli


@pytest.fixture(scope="module")
def served(trained_model):
    return signature.ServedModel(trained_model)


def test_signature_matches_the_serving_contract(trained_model):
    serve = tf.saved_model.load(trained_model).signatures[signature.SIGNATURE_NAME]
    (inputs,) = serve.structured_input_signature[1].values()
    assert inputs.name == "image_bytes" and inputs.dtype == tf.string
    assert inputs.shape.as_list() == [None]
    outputs = serve.structured_outputs
    assert outputs["scores"].dtype == tf.float32 and outputs["scores"].shape.as_list() == [None, 3]
    assert outputs["classes"].dtype == tf.string and outputs["classes"].shape.as_list() == [
        None,
        3,
    ]
    assert outputs["label"].dtype == tf.string and outputs["label"].shape.as_list() == [None]


def test_the_pixel_signatures_split_serving_default_in_two(trained_model, served):
    loaded = tf.saved_model.load(trained_model)
    preprocess = loaded.signatures[signature.PREPROCESS_SIGNATURE]
    (image_bytes,) = preprocess.structured_input_signature[1].values()
    assert image_bytes.name == "image_bytes" and image_bytes.dtype == tf.string
    pixels = preprocess.structured_outputs["pixels"]
    assert pixels.dtype == tf.uint8 and pixels.shape.as_list() == [None, IMAGE_SIZE, IMAGE_SIZE, 3]
    score_pixels = loaded.signatures[signature.SCORE_PIXELS_SIGNATURE]
    (pixel_input,) = score_pixels.structured_input_signature[1].values()
    assert pixel_input.name == "pixels" and pixel_input.dtype == tf.float32
    assert score_pixels.structured_outputs["scores"].shape.as_list() == [None, 3]
    assert served.scores_pixels


def test_raw_bytes_of_any_format_give_scores_classes_and_label(served):
    images = [
        colour_image(CLASS_COLOURS["red"], seed=900, image_format=fmt)
        for fmt in ("PNG", "JPEG", "GIF", "BMP")
    ]
    outputs = served.predict(images)
    assert outputs["scores"].shape == (4, 3)
    np.testing.assert_allclose(outputs["scores"].sum(axis=1), 1.0, rtol=1e-5)
    classes = [c.decode() for c in outputs["classes"][0]]
    assert sorted(classes) == sorted(CLASS_COLOURS)
    best = [classes[i] for i in outputs["scores"].argmax(axis=1)]
    assert [label.decode() for label in outputs["label"]] == best


def _decode_rest_instances(body: str) -> list[bytes]:
    """What TF Serving's REST API does with a row-format body for a one-input signature:
    each instance is the input's value, and ``{"b64": ...}`` is base64-decoded to bytes."""
    return [base64.b64decode(instance["b64"]) for instance in json.loads(body)["instances"]]


def test_rest_body_with_b64_gives_the_same_scores_as_raw_bytes(served):
    images = [colour_image(colour, seed=901) for colour in CLASS_COLOURS.values()]
    body = json.dumps(
        {"instances": [{"b64": base64.b64encode(image).decode("ascii")} for image in images]}
    )
    from_rest = served.predict(_decode_rest_instances(body))
    from_raw = served.predict(images)
    np.testing.assert_allclose(from_rest["scores"], from_raw["scores"], atol=1e-6)


def test_predict_cli_names_the_class(trained_model, tmp_path, capsys):
    image = tmp_path / "blue.png"
    image.write_bytes(colour_image(CLASS_COLOURS["blue"], seed=902))
    assert cli.main(["predict", "--model", trained_model, str(image)]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert line["image"] == str(image)
    assert line["label"] in CLASS_COLOURS
    assert list(line["top"])[0] == line["label"]


@pytest.mark.parametrize("images", ["prepared", "prepared_photos"])
def test_no_skew_between_the_tfrecords_and_the_serving_signature(images, request, tmp_path):
    """Scores of the TFRecords' images through the Keras model equal the scores of the raw
    files through the exported signature: training and serving see the same pixels. On
    small PNGs, and on JPEG photos from 12 megapixels (decoded at reduced scale, one stored
    sideways) down to smaller than the square. The preprocess signature gives the records'
    pixels exactly, and score_pixels on them the same scores."""
    import tensorflow_transform as tft

    from imgclf.components import manifest, storage
    from imgclf.components.training.config import TrainConfig
    from imgclf.components.training.dataset import make_dataset
    from imgclf.components.training.network import build_model
    from imgclf.components.transform import features

    prepared = request.getfixturevalue(images)
    config = TrainConfig(weights="none", alpha=0.25, image_size=IMAGE_SIZE, batch_size=64)
    model, _ = build_model(config, num_classes=3)
    transform = tft.TFTransformOutput(prepared["transform"])
    class_names = [c.decode() for c in transform.vocabulary_by_name("label")]
    signature.export(model, prepared["transform"], class_names, IMAGE_SIZE, str(tmp_path / "m"))
    served = signature.ServedModel(str(tmp_path / "m"))

    frame = manifest.read(prepared["validated"])
    raw = {uri: storage.read_bytes(uri) for uri in frame["uri"]}
    uri_of_pixels = {
        features.decode_and_resize(data, IMAGE_SIZE).numpy().tobytes(): uri
        for uri, data in raw.items()
    }
    for split, count in manifest.counts_by_split(frame).items():
        batches = make_dataset(prepared["examples"], split, transform, config, False)
        images, _ = next(iter(batches))
        from_records = model.predict(images, verbose=0)
        uris = [uri_of_pixels[image.numpy().astype(np.uint8).tobytes()] for image in images]
        from_serving = served.predict([raw[u] for u in uris])
        assert len(uris) == count
        np.testing.assert_allclose(from_serving["scores"], from_records, atol=1e-5)
        pixels = served.pixels([raw[u] for u in uris])
        np.testing.assert_array_equal(pixels, images.numpy().astype(np.uint8))
        from_pixels = served.score_pixels(pixels).numpy()
        np.testing.assert_allclose(from_pixels, from_serving["scores"], atol=1e-5)


def test_grpc_predict_request_gives_the_same_answer_as_rest(served):
    """A PredictRequest built with tensorflow-serving-api, decoded as TF Serving decodes it."""
    from tensorflow_serving.apis import predict_pb2

    images = [colour_image(colour, seed=903) for colour in CLASS_COLOURS.values()]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "colours"
    request.model_spec.signature_name = signature.SIGNATURE_NAME
    request.inputs[signature.INPUT_KEY].CopyFrom(tf.make_tensor_proto(images, tf.string))
    wire = predict_pb2.PredictRequest.FromString(request.SerializeToString())

    from_grpc = served.predict(tf.make_ndarray(wire.inputs[signature.INPUT_KEY]).tolist())
    body = json.dumps({"instances": [{"b64": base64.b64encode(i).decode()} for i in images]})
    from_rest = served.predict(_decode_rest_instances(body))
    np.testing.assert_allclose(from_grpc["scores"], from_rest["scores"], atol=1e-6)
    assert from_grpc["label"].tolist() == from_rest["label"].tolist()
