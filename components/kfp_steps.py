"""Thin KFP lightweight components, one per step.

Each body unpacks artifacts, calls the step's logic from this package and records metadata for
the KFP UI. KFP ships only the function's source to the container, so imports live inside the
bodies and the step image must have this package installed (``containers/``). Locally,
``kfp.local.SubprocessRunner(use_venv=False)`` runs the same bodies in the current environment.
"""

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
def ingest(
    data_uri: str,
    data_snapshot: str,
    scheduled_at: str,
    train_fraction: float,
    validation_fraction: float,
    manifest: Output[Dataset],
    metrics: Output[Metrics],
):
    """Lists the images under data_uri, as of the data snapshot, into a manifest with labels
    and splits."""
    import logging

    from components import manifest as manifest_schema
    from components.ingest import ingest as ingest_images
    from components.ingest import snapshot_of_run

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    snapshot = snapshot_of_run(data_snapshot, scheduled_at)
    frame = ingest_images(
        data_uri, manifest.path, manifest.uri, train_fraction, validation_fraction, snapshot
    )
    for split, count in manifest_schema.counts_by_split(frame).items():
        metrics.log_metric(f"{split}_images", count)
    manifest.metadata.update(images=len(frame), data_snapshot=snapshot)


@_component
def validate(
    manifest: Input[Dataset],
    min_side: int,
    min_images_per_class: int,
    max_invalid_fraction: float,
    max_pixels: int,
    max_imbalance_ratio: float,
    serving_root: str,
    model_name: str,
    drift_warning: float,
    max_label_drift: float,
    train_fraction: float,
    validation_fraction: float,
    validated_manifest: Output[Dataset],
    report: Output[HTML],
    metrics: Output[Metrics],
):
    """Runs the great-expectations suite, quarantines files that do not decode, and compares
    the data with the served model's (drift)."""
    import logging
    import shutil
    from pathlib import Path

    from components.validate import validate as validate_manifest

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    report_file = str(Path(validated_manifest.path) / "report.html")
    result = validate_manifest(
        manifest.path,
        validated_manifest.path,
        report_file,
        min_side,
        min_images_per_class,
        max_invalid_fraction,
        max_pixels,
        max_imbalance_ratio,
        serving_root,
        model_name,
        drift_warning,
        max_label_drift,
        train_fraction,
        validation_fraction,
    )
    shutil.copyfile(report_file, report.path)
    for split, count in result.images.items():
        metrics.log_metric(f"{split}_images", count)
    metrics.log_metric("quarantined", result.quarantined)
    metrics.log_metric("duplicates_dropped", result.duplicates_dropped)
    for measure, value in (result.drift or {}).items():
        metrics.log_metric(f"drift_{measure}", value)
    validated_manifest.metadata.update(images=result.images, quarantined=result.quarantined)


@_component
def preprocess(
    validated_manifest: Input[Dataset],
    image_size: int,
    resize_policy: str,
    rebalance_to: int,
    beam_pipeline_args: list,
    examples: Output[Dataset],
    transform_graph: Output[Artifact],
):
    """tensorflow-transform on Beam: decoded, resized images and label ids as TFRecords."""
    import logging

    from components.preprocess import preprocess as transform_images

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    counts = transform_images(
        validated_manifest.path,
        examples.path,
        transform_graph.path,
        image_size,
        beam_pipeline_args,
        resize_policy,
        rebalance_to,
    )
    examples.metadata["images"] = counts


@_component
def tune(
    examples: Input[Dataset],
    transform_graph: Input[Artifact],
    max_trials: int,
    algorithm: str,
    backbone: str,
    weights: str,
    alpha: float,
    image_size: int,
    epochs: int,
    fine_tune_epochs: int,
    batch_size: int,
    learning_rate: float,
    augmentations: str,
    early_stopping_patience: int,
    optimizer: str,
    learning_rate_schedule: str,
    warmup_epochs: int,
    label_smoothing: float,
    class_weight: str,
    dropout: float,
    unfreeze_fraction: float,
    loss: str,
    focal_gamma: float,
    l2: float,
    mixed_precision: str,
    xla: bool,
    seed: int,
    trials: Output[Artifact],
    report: Output[Markdown],
) -> dict:
    """A KerasTuner search of max_trials trials; returns the best hyperparameters for train."""
    import json
    import logging
    from pathlib import Path

    from components.train import TrainConfig
    from components.tune import TRIALS_FILE, trials_markdown
    from components.tune import tune as search

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The step's parameters are named as TrainConfig's fields.
    config = TrainConfig.from_parameters(locals())
    best = search(examples.path, transform_graph.path, trials.path, config, max_trials, algorithm)
    found = json.loads((Path(trials.path) / TRIALS_FILE).read_text())
    Path(report.path).write_text(
        f"# Tuning: {len(found)} {algorithm} trials, best first\n\n{trials_markdown(found)}"
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
    hyperparameters: dict,
    backbone: str,
    weights: str,
    alpha: float,
    image_size: int,
    epochs: int,
    fine_tune_epochs: int,
    batch_size: int,
    learning_rate: float,
    augmentations: str,
    early_stopping_patience: int,
    optimizer: str,
    learning_rate_schedule: str,
    warmup_epochs: int,
    label_smoothing: float,
    class_weight: str,
    dropout: float,
    unfreeze_fraction: float,
    loss: str,
    focal_gamma: float,
    l2: float,
    mixed_precision: str,
    xla: bool,
    seed: int,
    tflite: str,
    model: Output[Model],
    keras_model: Output[Model],
    metrics: Output[Metrics],
    checkpoints: Output[Artifact],
    tensorboard_logs: Output[Artifact],
    training_curves: Output[HTML],
):
    """Keras transfer learning; exports the serving SavedModel.

    ``hyperparameters`` (from tune, or empty) override the matching parameters. Epoch backups
    go straight to the ``checkpoints`` artifact's URI (object storage on a cluster), so a
    retried or preempted step resumes from them; TensorBoard logs are uploaded with the step's
    outputs.
    """
    import dataclasses
    import logging
    from pathlib import Path

    from components import report, storage
    from components.train import KERAS_MODEL_FILE, TrainConfig
    from components.train import train as train_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # The step's parameters are named as TrainConfig's fields.
    config = TrainConfig.from_parameters(
        locals(),
        checkpoint_dir=storage.durable_location(checkpoints.uri, checkpoints.path),
        tensorboard_dir=tensorboard_logs.path,
    )
    config = dataclasses.replace(config, **hyperparameters)
    result = train_model(
        examples.path,
        transform_graph.path,
        model.path,
        config,
        keras_model_path=str(Path(keras_model.path) / KERAS_MODEL_FILE),
    )
    for name, value in result.final_metrics.items():
        metrics.log_metric(name, value)
    Path(training_curves.path).write_text(
        report.training_curves_page(result.history, result.stages)
    )
    model.metadata.update(backbone=backbone, classes=result.class_names, epochs=len(result.stages))


@_component
def evaluate(
    model: Input[Model],
    keras_model: Input[Model],
    validated_manifest: Input[Dataset],
    resize_policy: str,
    serving_root: str,
    model_name: str,
    min_accuracy: float,
    min_macro_f1: float,
    max_regression: float,
    regression_metric: str,
    max_class_recall_drop: float,
    evaluation: Output[Artifact],
    report: Output[HTML],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    confusion: Output[ClassificationMetrics],
) -> bool:
    """Scores the candidate and the served baseline on the test split; returns the blessing.

    A single unnamed output: kfp.local resolves conditions on it, not on named outputs.
    """
    import logging
    import shutil
    from pathlib import Path

    from components.evaluate import BlessingRules
    from components.evaluate import evaluate as evaluate_models
    from components.train import KERAS_MODEL_FILE

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    rules = BlessingRules(
        min_accuracy, min_macro_f1, max_regression, regression_metric, max_class_recall_drop
    )
    result = evaluate_models(
        model.path,
        validated_manifest.path,
        serving_root,
        model_name,
        rules,
        output_dir=evaluation.path,
        keras_model_path=str(Path(keras_model.path) / KERAS_MODEL_FILE),
        resize_policy=resize_policy,
    )
    shutil.copyfile(Path(evaluation.path) / "report.html", report.path)
    shutil.copyfile(Path(evaluation.path) / "summary.md", summary.path)
    for prefix, scored in (("", result.candidate), ("baseline_", result.baseline)):
        for name in (
            "accuracy",
            "macro_f1",
            "weighted_f1",
            "top_k_accuracy",
            "roc_auc_macro",
            "macro_average_precision",
            "expected_calibration_error",
        ):
            value = getattr(scored, name) if scored else None
            if value is not None:
                metrics.log_metric(prefix + name, value)
    metrics.log_metric("blessed", int(result.blessed))
    if result.candidate.confusion_matrix:
        confusion.log_confusion_matrix(result.candidate.labels, result.candidate.confusion_matrix)
    evaluation.metadata["blessed"] = result.blessed
    return result.blessed


@_component
def push(
    model: Input[Model],
    validated_manifest: Input[Dataset],
    evaluation: Input[Artifact],
    serving_root: str,
    model_name: str,
    keep_versions: int,
    pushed: Output[Artifact],
):
    """Checks the blessed model loads and answers in a fresh process, then publishes it as
    the next TF Serving version with its warmup requests, data profile and model card."""
    import json
    import logging

    from components.push import push as push_model

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = push_model(
        model.path,
        serving_root,
        model_name,
        validated_manifest.path,
        evaluation.path,
        keep_versions,
    )
    with open(pushed.path, "w") as file:
        json.dump(result.to_dict(), file)
    pushed.metadata.update(result.to_dict())
