"""The DAG: ingest -> validate -> preprocess -> [tune] -> train (GPU) -> evaluate -> [blessed]
push."""

from kfp import dsl

from components import kfp_steps
from components.augmentation import DEFAULT_AUGMENTATIONS
from pipelines.cluster import ClusterSettings

PIPELINE_NAME = "imgclf"


def create_pipeline(
    cluster: ClusterSettings | None = None,
    scheduled_at: str = dsl.PIPELINE_JOB_SCHEDULE_TIME_UTC_PLACEHOLDER,
):
    """The pipeline function, with where each step runs on a cluster (``cluster.yaml``'s
    defaults unless given) and what tells ingest the time the run was scheduled for (KFP's
    placeholder, which ``kfp.local`` cannot resolve: pass "" there)."""
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
        fine_tune_epochs: int = 30,
        batch_size: int = 32,
        learning_rate: float = 1e-2,
        augmentations: str = DEFAULT_AUGMENTATIONS,
        early_stopping_patience: int = 10,
        optimizer: str = "adam",
        learning_rate_schedule: str = "cosine",
        warmup_epochs: int = 1,
        label_smoothing: float = 0.0,
        class_weight: str = "none",
        dropout: float = 0.2,
        unfreeze_fraction: float = 1.0,
        loss: str = "crossentropy",
        focal_gamma: float = 2.0,
        l2: float = 0.0,
        mixed_precision: str = "auto",
        xla: bool = False,
        seed: int = 42,
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
        """Trains, judges and publishes an image classifier.

        Args:
            serving_root: TF Serving model root; models go to
                `<serving_root>/<model_name>/<version>/`
            data_uri: folder, `gs://bucket/prefix`, a `.csv`/`.jsonl` listing, or the bundled sample
            data_snapshot: ISO 8601 time (UTC unless it says otherwise): read only files not changed
                after it, so that a rerun reads the same images; empty: the run's scheduled time on
                a recurring run, else everything there now
            model_name: the model's folder under `serving_root`, and its name in TF Serving
            train_fraction: train share of the hash split when the data has no split folders
            validation_fraction: validation share of the hash split when the data has no split
                folders
            min_side: smaller images are quarantined
            min_images_per_class: train images every class needs
            max_invalid_fraction: quarantine share past which validation fails
            max_pixels: larger images (by their header) are quarantined before decoding
            max_imbalance_ratio: warn when the largest class has this many times the smallest's
                train images
            drift_warning: warn when the label mix (total variation), the median image size
                (relative) or the mean brightness (of full scale) moved this far from the served
                model's data
            max_label_drift: fail when the label mix moved this far (total variation) from the
                served model's data
            image_size: square model input
            resize_policy: how images become square: `stretch` (everything at full resolution, the
                aspect ratio distorted, as Keras' `Resizing` does by default), `pad` with black
                (nothing lost, no distortion, fewer pixels for the subject) or `crop` to the centre
                square (the edges of long images are lost). On the clothing photos (3:4 portraits)
                at the defaults: stretch 91.7%, crop 91.7%, pad 90.1% test accuracy; macro F1
                90.5, 90.7, 88.0 (MobileNet v1 0.25, 2 + 30 epochs, seed 42; one run each); on
                another machine, the same runs: 89.0%, 90.1%, 87.9%; F1 87.2, 88.3, 85.2
            rebalance_to: offline class rebalancing: augmented copies (flip, rotation, zoom, shift,
                contrast, from the full-resolution original, seeded by its content) of each smaller
                class's train images are written to the train TFRecords until every class has this
                many; single-label data only; 0 is off
            beam_pipeline_args: passed to Beam untouched (`imgclf run --beam-arg=--option=value`,
                repeatable); e.g. `--direct_running_mode=multi_processing --direct_num_workers=2`
                for one worker per core here, or `--runner=DataflowRunner --project=P --region=R
                --temp_location=gs://B/tmp`
            backbone: each with its own input scaling inside the model (`imgclf backbones` lists
                sizes, scaling and `--count-params`): Keras Applications `mobilenet`,
                `mobilenet_v2`, `mobilenet_v3_small`, `mobilenet_v3_large` (these four take
                `alpha`), `vgg16`, `resnet50`, `resnet50v2`, `inceptionv3` and `xception` (default
                299 px, at least 75 and 71), `densenet121`, `efficientnetv2b0` to `b3` and
                `efficientnetv2s`, `convnext_tiny`; and `alexnet` and `squeezenet1_1`, defined here
                as torchvision defines them (no ImageNet weights ship: `weights=none` or a Keras
                weights file of the headless net)
            weights: `imagenet` (the Keras download cache; offline, a clear error names `none` and
                `PATH`), `none` (train everything from scratch), or a Keras weights file of the
                headless backbone (local or `gs://`)
            alpha: MobileNet width multiplier
            epochs: stage 1: the head on a frozen backbone
            fine_tune_epochs: stage 2: the top `unfreeze_fraction` of the backbone unfrozen
                (BatchNormalization stays frozen) at a tenth of the learning rate. On the clothing
                photos 2 + 30 epochs reached 91.0% test accuracy against 88.6% for 2 + 14 (two
                seeds each)
            batch_size: images per step (per replica with several GPUs)
            learning_rate: stage 1; stage 2 uses a tenth. On the clothing photos 0.01 with the
                cosine schedule beat a constant 0.003 by 1.9 points of accuracy and 3.2 of macro F1
                (two seeds each; 0.02 lost 1.3 points); at a constant 0.01 fine-tuning diverged
            augmentations: comma-separated, or `none`: `flip`, `rotation` (±18°), `zoom` (±10%),
                `translation` (±10%), `contrast`, `brightness` (±20%) as Keras layers in the model,
                training only, with rotation, zoom and translation fused into one affine warp;
                `mixup`, `cutmix` (Keras' layers) on training batches in `tf.data`, one of the two
                per batch when both are named
            early_stopping_patience: epochs without a better validation loss before a stage stops;
                the best epoch's weights are kept (under the cosine schedule the clothing run
                went 7 epochs without a better loss and then improved: 6 cost it 3.8 points; keeping
                the best validation accuracy instead of loss cost 1.4)
            optimizer: `adam`, `adamw`, `sgd` (momentum 0.9, Nesterov) or `rmsprop`
            learning_rate_schedule: `cosine`: linear warmup over `warmup_epochs`, then cosine decay
                to zero over each stage; `constant`
            warmup_epochs: warmup length for the cosine schedule; the warmup is what keeps
                fine-tuning at 0.001 stable
            label_smoothing: softens the one-hot (or multi-hot) targets
            class_weight: `balanced`: each class weighs train images / (classes x its images), as
                scikit-learn's; single-label data only
            dropout: before the classifier head
            unfreeze_fraction: stage 2: the top share of backbone layers fine-tuned; all of it by
                default (measured: 2 + 6 epochs with everything unfrozen beat 5 + 3 with the top 30%
                by 6 points on the clothing photos)
            loss: `focal`: cross-entropy times (1 - p)^`focal_gamma`, weighting the images the model
                gets wrong (binary focal for multi-label)
            focal_gamma: the focusing exponent of the focal loss
            l2: L2 penalty on the head's weights (`adamw` decays every trainable weight)
            mixed_precision: `auto`: `mixed_float16` on a GPU (float32 output layer, loss scaling),
                float32 on a CPU; `on`, `off`. It pays where the GPU is the bottleneck: fine-tuning
                on an H200 (Keras' JAX backend), ResNet50 at batch 256 ran 1.80x float32's
                images/s, but MobileNet v1 0.25 0.88x at batch 32 and 0.98x at 256, and ResNet50
                0.77x at batch 32; `off` for small backbones at small batches
            xla: compile train steps with XLA; refuses `rotation`, `zoom` and `translation`, whose
                warp has no XLA kernel
            seed: seeds train's (and tune's) initialisation, shuffling, augmentation and
                dropout: the same seed, data and machine train the same model; other seeds show
                how much of a result is chance
            tflite: TFLite exports in the served version's `assets.extra/tflite/`: `float16`, `int8`
                (dynamic range), or both comma-separated; they take uint8 `[N, size, size, 3]`
                images (JPEG decoding is no TFLite builtin), and `tflite.json` beside them records
                each file's size and its agreement with the model on validation images (LiteRT runs
                them)
            tune_trials: run a KerasTuner search of this many trials before train (learning rate,
                dropout, label smoothing and, when a pretrained backbone is fine-tuned,
                `unfreeze_fraction`), each trained as train trains and scored on validation accuracy
                (average precision for multi-label); train runs with the best values. For searches
                larger than one step, use Katib
            tune_algorithm: `random`, `bayesian`, or `hyperband` (successive halving: many short
                trials, the best continued from their weights up to `epochs + fine_tune_epochs`;
                `tune_trials` caps the trials)
            min_accuracy: test accuracy the candidate needs to be blessed (multi-label: the share of
                images whose predicted label set is exactly right)
            min_macro_f1: test macro F1 the candidate needs to be blessed
            max_regression: how much of `regression_metric` the candidate may lose against the
                served model
            regression_metric: `accuracy`, `macro_f1` or `macro_average_precision` (the usual choice
                for multi-label)
            max_class_recall_drop: refuse a candidate that loses this much recall on any class (the
                regression an average hides)
            keep_versions: after a push, keep only the newest N versions (0 keeps all)
        """
        ingested = kfp_steps.ingest(
            data_uri=data_uri,
            data_snapshot=data_snapshot,
            scheduled_at=scheduled_at,
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
            seed=seed,
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
