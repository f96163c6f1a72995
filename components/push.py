"""Push: publish a blessed SavedModel as the next TF Serving version, with warmup requests."""

from __future__ import annotations

import logging
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from components import manifest, profile, serving, serving_layout, storage

log = logging.getLogger(__name__)

WARMUP_FILE = "tf_serving_warmup_requests"
_WARMUP_IMAGES = 4


@dataclass
class PushResult:
    version: int
    path: str

    def to_dict(self) -> dict:
        return asdict(self)


def push(model_dir: str, serving_root: str, model_name: str, manifest_dir: str) -> PushResult:
    """Copies ``model_dir`` to ``<serving_root>/<model_name>/<next version>/``.

    The copy, with ``assets.extra/tf_serving_warmup_requests`` built from a few of the
    manifest's images and the data profile validate wrote beside the manifest, is assembled in
    a staging folder and published so that TF Serving never loads it half-written (see
    :mod:`components.serving_layout`). ``serving_root`` may be a local path or ``gs://``.
    """
    if not serving.is_saved_model(model_dir):
        raise FileNotFoundError(f"{model_dir} is not a SavedModel (no saved_model.pb).")
    staged = serving_layout.staging_dir(serving_root, model_name)
    try:
        shutil.copytree(model_dir, staged, dirs_exist_ok=True)
        write_warmup_requests(
            staged / "assets.extra" / WARMUP_FILE, warmup_images(manifest_dir), model_name
        )
        # The next run's validate compares its data with this profile (drift).
        if (Path(manifest_dir) / profile.PROFILE_FILE).exists():
            shutil.copy(Path(manifest_dir) / profile.PROFILE_FILE, staged / "assets.extra")
        version, path = serving_layout.publish(str(staged), serving_root, model_name)
    except BaseException:
        serving_layout.discard(staged)
        raise
    log.info("Pushed %s as version %d: %s", model_name, version, path)
    return PushResult(version=version, path=path)


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
                    name=model_name, signature_name=serving.SIGNATURE_NAME
                ),
            )
            request.inputs[serving.INPUT_KEY].CopyFrom(tf.make_tensor_proto(batch, tf.string))
            log_record = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log_record.SerializeToString())
