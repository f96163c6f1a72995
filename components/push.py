"""Push: publish a blessed SavedModel as the next TF Serving version, with warmup requests."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from components import (
    infra_validation,
    manifest,
    profile,
    serving,
    serving_config,
    serving_layout,
    storage,
)
from components.validate import VALIDATION_FILE

log = logging.getLogger(__name__)

MODEL_CARD_FILE = "model_card.json"
_WARMUP_IMAGES = 4


@dataclass
class PushResult:
    version: int
    path: str
    removed_versions: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def push(
    model_dir: str,
    serving_root: str,
    model_name: str,
    manifest_dir: str,
    evaluation_dir: str | None = None,
    keep_versions: int = 0,
) -> PushResult:
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
        extra = staged / "assets.extra"
        write_warmup_requests(extra / serving.WARMUP_FILE, warmup_images(manifest_dir), model_name)
        # The next run's validate compares its data with this profile (drift).
        if (Path(manifest_dir) / profile.PROFILE_FILE).exists():
            shutil.copy(Path(manifest_dir) / profile.PROFILE_FILE, extra)
        card = model_card(model_name, manifest_dir, evaluation_dir, extra)
        (extra / MODEL_CARD_FILE).write_text(json.dumps(card, indent=2))
        infra_validation.check_in_fresh_process(str(staged))
        version, path = serving_layout.publish(str(staged), serving_root, model_name)
    except BaseException:
        serving_layout.discard(staged)
        raise
    state = serving_config.record_push(serving_root, model_name, version)
    log.info(
        "Pushed %s as version %d (%s): %s",
        model_name,
        version,
        "canary beside pinned stable" if state.pinned else "stable",
        path,
    )
    removed = serving_layout.prune(
        serving_root,
        model_name,
        keep_versions,
        frozenset(serving_config.protected_versions(serving_root, model_name)),
    )
    if removed:
        log.info("Removed versions %s, keeping the newest %d", removed, keep_versions)
    return PushResult(version=version, path=path, removed_versions=removed)


def model_card(model_name: str, manifest_dir: str, evaluation_dir: str | None, extra: Path) -> dict:
    """What a person auditing a served version wants in one file: when, on what data, how
    it was trained, how it scored and why it was blessed."""

    def load(path: Path) -> dict | None:
        return json.loads(path.read_text()) if path.exists() else None

    evaluation = load(Path(evaluation_dir) / "evaluation.json") if evaluation_dir else None
    return {
        "model_name": model_name,
        "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": load(Path(manifest_dir) / VALIDATION_FILE),
        "training": load(extra / serving.TRAINING_FILE),
        "evaluation": evaluation
        and {
            key: evaluation[key]
            for key in ("candidate", "baseline", "baseline_version", "blessed", "checks")
        },
    }


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
