"""What each pod of a multi-worker training job runs: the train step's work on its inputs'
URIs, as one of the processes ``TF_CONFIG`` names (Kubeflow's TFJob sets it in every pod).

Every worker reads the examples and the transform graph, checkpoints to its own disk and
restores from the chief's mirror on the store; the chief alone uploads the model. Its last
line on stdout is a JSON summary (``SUMMARY_PREFIX``), for whoever watches the job's logs.

    python -m imgclf.components.training.job_worker --examples URI --transform URI \\
        --model URI --keras-model URI --checkpoints URI --settings JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

from imgclf.components import artifacts, failures, logs, storage
from imgclf.components.training import workers
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.stages import TrainResult
from imgclf.components.training.train import train

SUMMARY_PREFIX = "imgclf training worker finished: "


def run(
    examples_uri: str,
    transform_uri: str,
    model_uri: str,
    keras_model_uri: str,
    checkpoints_uri: str,
    settings: dict,
) -> TrainResult:
    """Trains as this process's worker; the chief uploads the SavedModel to ``model_uri`` and
    the Keras model to ``keras_model_uri``."""
    work = Path(tempfile.mkdtemp(prefix="imgclf-train-"))
    try:
        return _run_in(
            work, examples_uri, transform_uri, model_uri, keras_model_uri, checkpoints_uri, settings
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _run_in(
    work: Path, examples_uri, transform_uri, model_uri, keras_model_uri, checkpoints_uri, settings
) -> TrainResult:
    config = dataclasses.replace(
        TrainConfig.from_step_input(settings),
        checkpoint_dir=str(work / "checkpoints"),
        checkpoint_mirror=checkpoints_uri,
    )
    model_dir, keras_dir = work / "model", work / "keras"
    result = train(
        _readable(examples_uri, work / "examples"),
        _readable(transform_uri, work / "transform"),
        str(model_dir),
        config,
        keras_model_path=str(keras_dir / artifacts.KERAS_MODEL),
    )
    if workers.from_environment().is_chief:
        # saved_model.pb last: a reader that finds it finds the variables it needs.
        storage.upload_folder(model_dir, model_uri, last="saved_model.pb")
        storage.upload_folder(keras_dir, keras_model_uri)
    return result


def _readable(uri: str, local_dir: Path) -> str:
    """A local folder holding what ``uri`` holds: TensorFlow's file system reads no S3."""
    if not storage.is_remote(uri):
        return uri
    storage.download_folder(uri, local_dir)
    if not local_dir.is_dir():
        raise FileNotFoundError(f"Nothing at {uri}: the step's input has no files there.")
    return str(local_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("examples", "transform", "model", "keras-model", "checkpoints"):
        parser.add_argument(f"--{name}", required=True, metavar="URI")
    parser.add_argument("--settings", required=True, type=json.loads, metavar="JSON")
    arguments = parser.parse_args(argv)
    logs.configure()
    failures.report_uncaught("train")
    result = run(
        arguments.examples,
        arguments.transform,
        arguments.model,
        arguments.keras_model,
        arguments.checkpoints,
        arguments.settings,
    )
    summary = {
        "worker": workers.from_environment().describe(),
        "stages": result.stages,
        "history": result.history,
        "kept": result.kept,
    }
    print(SUMMARY_PREFIX + json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
