"""TF Serving's warmup requests: ``PredictionLog`` records of real images in the version's
``assets.extra/``, which TF Serving replays at load, before the version takes traffic."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from imgclf.components import manifest, storage
from imgclf.components.serving import signature

_WARMUP_IMAGES = 4


def warmup_images(manifest_dir: str, count: int = _WARMUP_IMAGES) -> list[bytes]:
    """Real images from the test split (train if there is none) for TF Serving to warm up on."""
    frame = manifest.read(manifest_dir)
    rows = manifest.split_rows(frame, "test")
    if rows.empty:
        rows = frame
    return [storage.read_bytes(uri) for uri in rows["uri"].head(count)]


def write_warmup_requests(path: Path, images: list[bytes], model_name: str) -> None:
    """TF Serving replays these ``PredictionLog`` records at load, before it takes traffic,
    so the first real request does not pay for graph initialisation."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in ([images[0]], images):
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(
                    name=model_name, signature_name=signature.SIGNATURE_NAME
                ),
            )
            request.inputs[signature.INPUT_KEY].CopyFrom(tf.make_tensor_proto(batch, tf.string))
            log_record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log_record.SerializeToString())
