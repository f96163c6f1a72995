"""Thin KFP lightweight components, one per step.

Each body unpacks artifacts, builds the step's settings from its ``settings`` dict, calls the
step's logic and records metadata for the KFP UI. KFP ships only the function's source to the
container, so imports live inside the bodies and the step image must have this package
installed (``containers/``). Locally, ``kfp.local.SubprocessRunner(use_venv=False)`` runs the
same bodies in the current environment.

A step's parameters travel as one ``settings`` dict, made by the pipeline from the declarations
in ``imgclf.components.parameters``; KFP substitutes its values as text, and each settings class
parses them back (``Settings.from_step_input``). A list cannot travel inside that dict (the
launcher would write its JSON into a string), so ``beam_pipeline_args`` has its own parameter.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

# Each task's image comes from pipelines/cluster.yaml; this one is the components' own default.
STEP_IMAGE = "ghcr.io/imgclf/imgclf:0.1.0"

_component = dsl.component(base_image=STEP_IMAGE, install_kfp_package=False)


@_component
def preflight(settings: dict, beam_pipeline_args: list):
    """Checks every setting, the data, the serving root and the weights before any step reads
    an image, and fails with every problem found, each in one sentence."""
    from imgclf.components import failures, logs
    from imgclf.components import preflight as checks

    logs.configure()
    failures.report_uncaught("preflight")
    arguments = checks.arguments_from_step_input(settings)
    checks.check({**arguments, "beam_pipeline_args": beam_pipeline_args})


@_component
def fingerprint(settings: dict, scheduled_at: str) -> NamedTuple(
    "Fingerprint", digest=str, snapshot=str
):
    """Fingerprints the files under data_uri as of the run's data snapshot (names, labels,
    sizes, versions; no image is read): ingest and the steps after it are cached on it."""
    import dataclasses
    from collections import namedtuple

    from imgclf.components import failures, logs
    from imgclf.components.data.ingest import fingerprint as fingerprint_data
    from imgclf.components.data.snapshot import snapshot_of_run
    from imgclf.components.parameters import IngestSettings

    logs.configure()
    failures.report_uncaught("fingerprint")
    asked = IngestSettings.from_step_input(settings)
    snapshot = snapshot_of_run(asked.data_snapshot, scheduled_at)
    found = fingerprint_data(dataclasses.replace(asked, data_snapshot=snapshot))
    print(f"{found.files} files, fingerprint {found.digest}, newest change {found.snapshot}")
    return namedtuple("Fingerprint", ["digest", "snapshot"])(found.digest, found.snapshot)


@_component
def ingest(
    settings: dict,
    data_fingerprint: str,
    data_snapshot: str,
    manifest: Output[Dataset],
    metrics: Output[Metrics],
):
    """Lists the images the fingerprint step fingerprinted (as of its snapshot, the newest
    change among them) into a manifest with labels and splits."""
    import dataclasses

    from imgclf.components import failures, logs
    from imgclf.components import manifest as manifest_table
    from imgclf.components.data.ingest import ingest as ingest_images
    from imgclf.components.parameters import IngestSettings

    logs.configure()
    failures.report_uncaught("ingest")
    asked = dataclasses.replace(
        IngestSettings.from_step_input(settings), data_snapshot=data_snapshot
    )
    frame = ingest_images(asked, manifest.path, manifest.uri, expected_fingerprint=data_fingerprint)
    for split, count in manifest_table.counts_by_split(frame).items():
        metrics.log_metric(f"{split}_images", count)
    manifest.metadata.update(
        images=len(frame), data_snapshot=data_snapshot, data_fingerprint=data_fingerprint
    )


@_component
def validate(
    manifest: Input[Dataset],
    settings: dict,
    validated_manifest: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
):
    """Runs the great-expectations suite, quarantines files that do not decode, and compares
    the data with the served model's (drift)."""
    import shutil
    from pathlib import Path

    from imgclf.components import artifacts, failures, logs
    from imgclf.components.data.validate import validate as validate_manifest
    from imgclf.components.parameters import ServingTarget, ValidationRules

    logs.configure()
    failures.report_uncaught("validate")
    report_file = str(Path(validated_manifest.path) / artifacts.VALIDATION_REPORT)
    result = validate_manifest(
        manifest.path,
        validated_manifest.path,
        report_file,
        rules=ValidationRules.from_step_input(settings),
        serving=ServingTarget.from_step_input(settings),
    )
    shutil.copyfile(report_file, report.path)
    for split, count in result.images.items():
        metrics.log_metric(f"{split}_images", count)
    metrics.log_metric("quarantined", result.quarantined)
    metrics.log_metric("duplicates_dropped", result.duplicates_dropped)
    for measure, value in (result.drift or {}).items():
        metrics.log_metric(f"drift_{measure}", value)
    validated_manifest.metadata.update(
        images=result.images,
        quarantined=result.quarantined,
        drift_baseline_version=result.drift_baseline_version,
    )


@_component
def preprocess(
    validated_manifest: Input[Dataset],
    settings: dict,
    beam_pipeline_args: list,
    examples: Output[Dataset],
    transform_graph: Output[Artifact],
):
    """tensorflow-transform on Beam: decoded, resized images and label ids as TFRecords.

    On a remote runner (Dataflow) the workers write the outputs straight to the artifacts'
    URIs, where the launcher's upload of the (empty) local folders finds nothing to add."""
    import os
    import posixpath

    from imgclf.components import failures, logs
    from imgclf.components.environment import STEP_IMAGE_VARIABLE
    from imgclf.components.parameters import PreprocessSettings
    from imgclf.components.transform import preprocess as step

    logs.configure()
    failures.report_uncaught("preprocess")
    outputs = (examples.path, transform_graph.path)
    if step.runs_remotely(beam_pipeline_args):
        outputs = (examples.uri, transform_graph.uri)
        beam_pipeline_args = step.remote_runner_args(
            beam_pipeline_args,
            posixpath.dirname(examples.uri),
            os.environ.get(STEP_IMAGE_VARIABLE, ""),
        )
    counts = step.preprocess(
        validated_manifest.path,
        *outputs,
        PreprocessSettings.from_step_input({**settings, "beam_pipeline_args": beam_pipeline_args}),
    )
    examples.metadata["images"] = counts


@_component
def tune(
    examples: Input[Dataset],
    transform_graph: Input[Artifact],
    settings: dict,
    trials: Output[Artifact],
    report: Output[Markdown],
) -> dict:
    """A KerasTuner search of tune_trials trials; returns the best hyperparameters for train."""
    import json
    from pathlib import Path

    from imgclf.components import artifacts, failures, logs
    from imgclf.components.parameters import TuneSettings
    from imgclf.components.training.config import TrainConfig
    from imgclf.components.training.tune import trials_markdown
    from imgclf.components.training.tune import tune as search

    logs.configure()
    failures.report_uncaught("tune")
    config = TrainConfig.from_step_input(settings)
    wanted = TuneSettings.from_step_input(settings)
    best = search(
        examples.path,
        transform_graph.path,
        trials.path,
        config,
        wanted.tune_trials,
        wanted.tune_algorithm,
    )
    found = json.loads((Path(trials.path) / artifacts.TRIALS).read_text())
    Path(report.path).write_text(
        f"# Tuning: {len(found)} {wanted.tune_algorithm} trials, best first\n\n"
        f"{trials_markdown(found)}"
    )
    return best


@_component
def untuned() -> dict:
    """No search (tune_trials=0): train keeps the pipeline's values."""
    return {}


@_component
def train(
    examples: Input[Dataset],
    transform_graph: Input[Artifact],
    settings: dict,
    hyperparameters: dict,
    worker_job: dict,
    model: Output[Model],
    keras_model: Output[Model],
    metrics: Output[Metrics],
    checkpoints: Output[Artifact],
    tensorboard_logs: Output[Artifact],
    training_curves: Output[HTML],
):
    """Keras transfer learning; exports the serving SavedModel.

    ``hyperparameters`` (from tune, or empty) override the matching settings. Epoch backups
    are copied to the ``checkpoints`` artifact's URI as they are made (KFP uploads outputs only
    after a step succeeds), so a retried or preempted step resumes from them; TensorBoard logs
    are uploaded with the step's outputs. With ``workers`` above 1 the training runs in a
    TFJob of that many pods (``worker_job``: their pod and restarts, from the compiler), whose
    chief writes the models to this step's output URIs; this step then holds them too.
    """
    import dataclasses
    from pathlib import Path

    from imgclf.components import artifacts, failures, logs, storage
    from imgclf.components.training.config import TrainConfig
    from imgclf.components.training.curves import training_curves_page
    from imgclf.components.training.train import train as train_model

    logs.configure()
    failures.report_uncaught("train")
    config = dataclasses.replace(
        TrainConfig.from_step_input(settings),
        checkpoint_dir=checkpoints.path,
        checkpoint_mirror=checkpoints.uri if storage.is_remote(checkpoints.uri) else "",
        tensorboard_dir=tensorboard_logs.path,
        **hyperparameters,
    )
    if config.workers > 1:
        from imgclf.components.training import launcher

        result = launcher.train_on_workers(
            worker_job["pod"],
            config,
            {"examples": examples.uri, "transform": transform_graph.uri},
            {"model": model.uri, "keras_model": keras_model.uri, "checkpoints": checkpoints.uri},
            int(worker_job["restarts"]),
            launcher.api_client(),
        )
        # KFP uploads what the local paths hold once the step ends: the chief's own files.
        storage.download_folder(model.uri, model.path)
        storage.download_folder(keras_model.uri, keras_model.path)
    else:
        result = train_model(
            examples.path,
            transform_graph.path,
            model.path,
            config,
            keras_model_path=str(Path(keras_model.path) / artifacts.KERAS_MODEL),
        )
    for name, value in result.final_metrics.items():
        metrics.log_metric(name, value)
    Path(training_curves.path).write_text(
        training_curves_page(result.history, result.stages, result.kept, result.fine_tune_skipped)
    )
    model.metadata.update(
        backbone=config.backbone, classes=result.class_names, epochs=len(result.stages)
    )


@_component
def evaluate(
    model: Input[Model],
    keras_model: Input[Model],
    validated_manifest: Input[Dataset],
    settings: dict,
    evaluation: Output[Artifact],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> bool:
    """Scores the candidate and the served baseline on the test split; returns the blessing.

    A single unnamed output: kfp.local resolves conditions on it, not on named outputs.
    """
    import shutil
    from pathlib import Path

    from imgclf.components import artifacts, failures, logs
    from imgclf.components.evaluation.evaluate import evaluate as evaluate_models
    from imgclf.components.evaluation.report import HEADLINE_METRICS
    from imgclf.components.parameters import BlessingRules, ServingTarget

    logs.configure()
    failures.report_uncaught("evaluate")
    result = evaluate_models(
        model.path,
        validated_manifest.path,
        ServingTarget.from_step_input(settings),
        BlessingRules.from_step_input(settings),
        output_dir=evaluation.path,
        keras_model_path=str(Path(keras_model.path) / artifacts.KERAS_MODEL),
    )
    shutil.copyfile(Path(evaluation.path) / artifacts.EVALUATION_REPORT, report.path)
    shutil.copyfile(Path(evaluation.path) / artifacts.EVALUATION_SUMMARY, summary.path)
    for prefix, scored in (("", result.candidate), ("baseline_", result.baseline)):
        for _, name in HEADLINE_METRICS:
            value = getattr(scored, name) if scored else None
            if value is not None:
                metrics.log_metric(prefix + name, value)
    for prefix, robustness in (("", result.robustness), ("baseline_", result.baseline_robustness)):
        for name, value in robustness.metrics().items() if robustness else ():
            metrics.log_metric(prefix + name, value)
    metrics.log_metric("blessed", int(result.blessed))
    if result.candidate.confusion_matrix:
        confusion.log_confusion_matrix(result.candidate.labels, result.candidate.confusion_matrix)
    evaluation.metadata.update(blessed=result.blessed, baseline_version=result.baseline_version)
    return result.blessed


@_component
def push(
    model: Input[Model],
    validated_manifest: Input[Dataset],
    evaluation: Input[Artifact],
    settings: dict,
    pushed: Output[Artifact],
):
    """Checks the blessed model loads and answers in a fresh process, then publishes it as
    the next TF Serving version with its warmup requests, data profile and model card."""
    import json

    from imgclf.components import failures, logs
    from imgclf.components.parameters import PushSettings, ServingTarget
    from imgclf.components.serving.push import push as push_model

    logs.configure()
    failures.report_uncaught("push")
    result = push_model(
        model.path,
        ServingTarget.from_step_input(settings),
        validated_manifest.path,
        evaluation.path,
        PushSettings.from_step_input(settings),
    )
    with open(pushed.path, "w") as file:
        json.dump(result.to_dict(), file)
    pushed.metadata.update(result.to_dict())
