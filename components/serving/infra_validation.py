"""Infra validation: would TF Serving load this model and answer?

Run in a fresh process (``python -m imgclf.components.serving.infra_validation MODEL_DIR``)
before a push, as TF Serving would meet the model: load the SavedModel alone, replay its warmup
requests, check the outputs of the serving contract, and check that bytes that are not an image
are refused with an error rather than crashing the server.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from imgclf.components import artifacts
from imgclf.components.serving import signature

_EXPECTED_OUTPUTS = {
    signature.SCORES_KEY: (tf.float32, 2),
    signature.CLASSES_KEY: (tf.string, 2),
    signature.LABEL_KEY: (tf.string, 1),
}


class InfraValidationError(RuntimeError):
    """The model would not load or answer in TF Serving."""


def check_servable(model_dir: str) -> int:
    """Runs the checks in this process; returns how many warmup requests were replayed."""
    serve = tf.saved_model.load(model_dir).signatures[signature.SIGNATURE_NAME]
    replayed = 0
    for record in tf.data.TFRecordDataset(
        str(Path(model_dir) / artifacts.ASSETS_EXTRA / artifacts.WARMUP_REQUESTS)
    ):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        images = tf.make_ndarray(request.inputs[signature.INPUT_KEY])
        outputs = serve(**{signature.INPUT_KEY: tf.constant(images)})
        _check_outputs(outputs, batch=len(images))
        replayed += 1
    if replayed == 0:
        raise InfraValidationError("No warmup requests to replay.")
    try:
        serve(**{signature.INPUT_KEY: tf.constant([b"these bytes are not an image"])})
    except tf.errors.InvalidArgumentError:
        pass  # TF Serving answers INVALID_ARGUMENT to the client and keeps serving
    else:
        raise InfraValidationError("Bytes that are not an image were not refused.")
    return replayed


def check_in_fresh_process(model_dir: str, timeout_s: int = 300) -> None:
    """:func:`check_servable` in a new Python process, the way a server meets the model."""
    completed = subprocess.run(
        [sys.executable, "-m", "imgclf.components.serving.infra_validation", model_dir],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
        raise InfraValidationError(f"{model_dir} failed infra validation: {' / '.join(detail)}")


def _check_outputs(outputs: dict, batch: int) -> None:
    expected = dict(_EXPECTED_OUTPUTS)
    if signature.POSITIVES_KEY in outputs:
        expected[signature.POSITIVES_KEY] = (tf.bool, 2)
    for key, (dtype, rank) in expected.items():
        if key not in outputs:
            raise InfraValidationError(f"The signature has no {key!r} output.")
        value = outputs[key]
        if value.dtype != dtype or value.shape.rank != rank or value.shape[0] != batch:
            raise InfraValidationError(
                f"Output {key!r} is {value.dtype.name} {value.shape}, expected {dtype.name} "
                f"of rank {rank} with {batch} rows."
            )


if __name__ == "__main__":
    print(f"{check_servable(sys.argv[1])} warmup requests replayed; invalid bytes refused")
