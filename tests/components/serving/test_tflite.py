import json
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import IMAGE_SIZE, keras_model_of
from imgclf.components import artifacts, manifest
from imgclf.components.serving import signature, tflite
from imgclf.components.transform import features


def test_quantisations_parse_and_unknown_ones_are_refused():
    assert tflite.parse_quantizations("float16, int8") == ["float16", "int8"]
    assert tflite.parse_quantizations("none") == []
    with pytest.raises(ValueError, match="Unknown TFLite quantisation int4; choose from"):
        tflite.parse_quantizations("int4")


def test_both_quantisations_agree_with_the_model_they_came_from(trained_model, prepared, tmp_path):
    model = keras.models.load_model(keras_model_of(trained_model), compile=False)
    test = manifest.split_rows(manifest.read(prepared["validated"]), "test")
    images = np.stack(
        [
            features.decode_and_resize(Path(uri).read_bytes(), IMAGE_SIZE).numpy()
            for uri in test["uri"]
        ]
    )
    report = tflite.export(model, str(tmp_path), ["float16", "int8"], images)

    expected = model.predict(images.astype(np.float32), verbose=0)
    for quantization in ("float16", "int8"):
        flat = (tmp_path / f"model_{quantization}.tflite").read_bytes()
        scores = tflite.run(flat, images)
        assert scores.shape == expected.shape
        assert report[quantization]["top1_agreement"] >= 0.9
        assert report[quantization]["max_score_difference"] == pytest.approx(
            float(np.abs(scores - expected).max())
        )
    assert report["float16"]["max_score_difference"] < 0.01
    # And against the serving SavedModel on the encoded files, as TF Serving answers.
    served = signature.ServedModel(trained_model).predict(
        [Path(uri).read_bytes() for uri in test["uri"]]
    )
    float16 = tflite.run((tmp_path / "model_float16.tflite").read_bytes(), images)
    assert abs(float16 - served[signature.SCORES_KEY]).max() < 0.01
    assert report["int8"]["bytes"] < report["float16"]["bytes"]
    assert json.loads((tmp_path / artifacts.TFLITE_RECORD).read_text()) == report
