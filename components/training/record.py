"""The training record: how a model was trained, written beside its SavedModel
(``assets.extra/training.json``) for the model card and the evaluation report."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from imgclf.components import artifacts, storage


def write(extra: Path, config, result, preprocessing) -> None:
    """The config (a TrainConfig), the preprocessing its inputs went through and the result
    (a TrainResult), as JSON in the model's ``assets.extra`` folder."""
    extra.mkdir(parents=True, exist_ok=True)
    record = {"config": asdict(config), "preprocessing": asdict(preprocessing), **asdict(result)}
    (extra / artifacts.TRAINING_RECORD).write_text(json.dumps(record, indent=2))


def read(model_dir: str) -> dict | None:
    """What train wrote beside a SavedModel (local or ``gs://``), if anything."""
    path = storage.join(model_dir, artifacts.ASSETS_EXTRA, artifacts.TRAINING_RECORD)
    return json.loads(storage.read_bytes(path)) if storage.exists(path) else None
