"""The DAG: ingest -> validate -> preprocess -> [tune] -> train (GPU) -> evaluate -> [blessed]
push."""

from kfp import dsl

from components import kfp_steps
from components.augmentation import DEFAULT_AUGMENTATIONS
from pipelines.cluster import ClusterSettings

PIPELINE_NAME = "imgclf"


def create_pipeline(cluster: ClusterSettings | None = None):
    """The pipeline function, with where each step runs on a cluster (``cluster.yaml``'s
    defaults unless given)."""
    cluster = cluster or ClusterSettings.load()

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Image classification: ingest, validate, TFT preprocess, Keras transfer "
        "learning, evaluate against the served model, push to TF Serving when blessed.",
    )
    def imgclf(
        serving_root: str,
        data_uri: str = "sample:digits",
        data_snapshot: str = "",
        model_name: str = "imgclf",
        train_fraction: float = 0.8,
        validation_fraction: float = 0.1,
        min_side: int = 16,
        min_images_per_class: int = 5,
        max_invalid_fraction: float = 0.05,
        max_pixels: int = 50_000_000,
        max_imbalance_ratio: float = 10.0,
        drift_warning: float = 0.15,
        max_label_drift: float = 0.5,
        image_size: int = 224,
        resize_policy: str = "stretch",
        rebalance_to: int = 0,
        beam_pipeline_args: list = ["--runner=DirectRunner"],  # noqa: B006 - a KFP default
        backbone: str = "mobilenet",
        weights: str = "imagenet",
        alpha: float = 1.0,
        epochs: int = 2,
        fine_tune_epochs: int = 6,
        batch_size: int = 32,
        learning_rate: float = 3e-3,
        augmentations: str = DEFAULT_AUGMENTATIONS,
        early_stopping_patience: int = 3,
        optimizer: str = "adam",
        learning_rate_schedule: str = "constant",
        warmup_epochs: int = 0,
        label_smoothing: float = 0.0,
        class_weight: str = "none",
        dropout: float = 0.2,
        unfreeze_fraction: float = 1.0,
        loss: str = "crossentropy",
        focal_gamma: float = 2.0,
        l2: float = 0.0,
        mixed_precision: str = "auto",
        xla: bool = False,
        tflite: str = "none",
        tune_trials: int = 0,
        tune_algorithm: str = "random",
        min_accuracy: float = 0.5,
        min_macro_f1: float = 0.0,
        max_regression: float = 0.0,
        regression_metric: str = "accuracy",
        max_class_recall_drop: float = 0.1,
        keep_versions: int = 0,
    ) -> dsl.Artifact:
        ingested = kfp_steps.ingest(
            data_uri=data_uri,
            data_snapshot=data_snapshot,
            scheduled_at=dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
            train_fraction=train_fraction,
            validation_fraction=validation_fraction,
        )
        # New data must be seen on every scheduled run; data_snapshot makes a rerun read the
        # same images.
        cluster.apply(ingested, "ingest").set_caching_options(False)

        validated = kfp_steps.validate(
            manifest=ingested.outputs["manifest"],
            min_side=min_side,
            min_images_per_class=min_images_per_class,
            max_invalid_fraction=max_invalid_fraction,
            max_pixels=max_pixels,
            max_imbalance_ratio=max_imbalance_ratio,
            serving_root=serving_root,
            model_name=model_name,
            drift_warning=drift_warning,
            max_label_drift=max_label_drift,
            train_fraction=train_fraction,
            validation_fraction=validation_fraction,
        )
        cluster.apply(validated, "validate")
        preprocessed = kfp_steps.preprocess(
            validated_manifest=validated.outputs["validated_manifest"],
            image_size=image_size,
            resize_policy=resize_policy,
            rebalance_to=rebalance_to,
            beam_pipeline_args=beam_pipeline_args,
        )
        cluster.apply(preprocessed, "preprocess")
        training = dict(
            examples=preprocessed.outputs["examples"],
            transform_graph=preprocessed.outputs["transform_graph"],
            backbone=backbone,
            weights=weights,
            alpha=alpha,
            image_size=image_size,
            epochs=epochs,
            fine_tune_epochs=fine_tune_epochs,
            batch_size=batch_size,
            learning_rate=learning_rate,
            augmentations=augmentations,
            early_stopping_patience=early_stopping_patience,
            optimizer=optimizer,
            learning_rate_schedule=learning_rate_schedule,
            warmup_epochs=warmup_epochs,
            label_smoothing=label_smoothing,
            class_weight=class_weight,
            dropout=dropout,
            unfreeze_fraction=unfreeze_fraction,
            loss=loss,
            focal_gamma=focal_gamma,
            l2=l2,
            mixed_precision=mixed_precision,
            xla=xla,
        )
        with dsl.If(tune_trials > 0, name="tuning-requested"):
            tuned = kfp_steps.tune(**training, max_trials=tune_trials, algorithm=tune_algorithm)
            cluster.apply(tuned, "tune")
        with dsl.Else(name="no-tuning"):
            untuned = cluster.apply(kfp_steps.untuned(), "untuned")

        trained = kfp_steps.train(
            **training,
            tflite=tflite,
            hyperparameters=dsl.OneOf(tuned.outputs["Output"], untuned.output),
        )
        cluster.apply(trained, "train")

        evaluated = kfp_steps.evaluate(
            model=trained.outputs["model"],
            keras_model=trained.outputs["keras_model"],
            validated_manifest=validated.outputs["validated_manifest"],
            resize_policy=resize_policy,
            serving_root=serving_root,
            model_name=model_name,
            min_accuracy=min_accuracy,
            min_macro_f1=min_macro_f1,
            max_regression=max_regression,
            regression_metric=regression_metric,
            max_class_recall_drop=max_class_recall_drop,
        )
        # The baseline is whatever is served now: never reuse a cached verdict.
        cluster.apply(evaluated, "evaluate").set_caching_options(False)

        with dsl.If(evaluated.outputs["Output"] == True):  # noqa: E712 - KFP condition
            pushed = kfp_steps.push(
                model=trained.outputs["model"],
                validated_manifest=validated.outputs["validated_manifest"],
                evaluation=evaluated.outputs["evaluation"],
                serving_root=serving_root,
                model_name=model_name,
                keep_versions=keep_versions,
            )
            cluster.apply(pushed, "push").set_caching_options(False)
        return evaluated.outputs["evaluation"]

    return imgclf
