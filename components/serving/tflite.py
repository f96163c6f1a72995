"""TFLite export for phones and edge devices, checked against the model it came from.

The converted model takes what a device camera gives: uint8 RGB ``[N, size, size, 3]``, already
resized (JPEG decoding is not a TFLite builtin op); it returns the same scores as the serving
model. Two quantisations, as the seeds ship them: ``float16`` (weights stored in half
precision, half the size) and ``int8`` (dynamic-range: int8 weights, float activations, a
quarter of the size). Each file is run on sample images and compared with the Keras model;
the agreement is written beside the files.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from imgclf.components import artifacts
from imgclf.components.parameters import QUANTIZATIONS, comma_separated

log = logging.getLogger(__name__)

# Below this share of sample images with the same top class, the export is flagged.
MIN_TOP1_AGREEMENT = 0.9


def parse_quantizations(spec: str) -> list[str]:
    """``"float16,int8"`` -> both; ``""`` or ``none`` -> none."""
    return comma_separated(spec, QUANTIZATIONS, "TFLite quantisation")


def export(
    model: keras.Model, output_dir: str, quantizations: list[str], sample_images: np.ndarray
) -> dict[str, dict]:
    """Writes ``model_<quantisation>.tflite`` for each and ``tflite.json`` with each file's
    bytes and its agreement with ``model`` on ``sample_images`` (uint8)."""
    size = model.input_shape[1]
    serve = tf.function(lambda images: model(tf.cast(images, tf.float32), training=False))
    concrete = serve.get_concrete_function(tf.TensorSpec([None, size, size, 3], tf.uint8))
    expected = model.predict(sample_images.astype(np.float32), verbose=0)
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    report = {}
    for quantization in quantizations:
        converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], serve)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        flat = converter.convert()
        path = output / f"model_{quantization}.tflite"
        path.write_bytes(flat)
        scores = run(flat, sample_images)
        report[quantization] = {
            "file": path.name,
            "bytes": len(flat),
            "sample_images": len(sample_images),
            "max_score_difference": float(np.abs(scores - expected).max()),
            "top1_agreement": float((scores.argmax(1) == expected.argmax(1)).mean()),
        }
        log.info("TFLite %s: %s", quantization, report[quantization])
        if report[quantization]["top1_agreement"] < MIN_TOP1_AGREEMENT:
            log.warning(
                "TFLite %s agrees with the model on the top class of only %.0f%% of the "
                "sample images",
                quantization,
                100 * report[quantization]["top1_agreement"],
            )
    (output / artifacts.TFLITE_RECORD).write_text(json.dumps(report, indent=2))
    return report


def run(flat_model: bytes, images: np.ndarray) -> np.ndarray:
    """Scores of a TFLite model for uint8 ``images``, run by LiteRT as a device runs it."""
    # Imported here: only exports load LiteRT, not every import of the trainer.
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flat_model)
    input_index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(input_index, images.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_index, images.astype(np.uint8))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
