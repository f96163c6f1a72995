"""``imgclf``: run the pipeline locally, compile it for Kubeflow, or ask a pushed model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from components.augmentation import AUGMENTATIONS, DEFAULT_AUGMENTATIONS

# components.train's choices, repeated so that parsing arguments does not start TensorFlow
# (a test keeps them equal).
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
CLASS_WEIGHTS = ("none", "balanced")
LOSSES = ("crossentropy", "focal")
MIXED_PRECISION = ("auto", "on", "off")
TUNE_ALGORITHMS = ("random", "bayesian", "hyperband")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclf", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the whole pipeline locally through kfp.local")
    run.add_argument(
        "--data",
        default="sample:digits",
        help="class-per-folder tree or .csv/.jsonl listing (local or gs://), or sample:digits",
    )
    run.add_argument(
        "--train-fraction",
        type=float,
        default=0.8,
        help="share of images for train when the data has no split folders",
    )
    run.add_argument("--validation-fraction", type=float, default=0.1)
    run.add_argument(
        "--data-snapshot",
        default="",
        metavar="TIME",
        help="read only files not changed after this ISO 8601 time (UTC), so that a rerun "
        "reads the same images; default: everything there now",
    )
    run.add_argument("--model-name", default="imgclf")
    run.add_argument(
        "--serving-dir",
        default="serving",
        help="TF Serving model root: models go to DIR/NAME/VERSION",
    )
    run.add_argument("--pipeline-root", default="runs", help="where kfp.local keeps artifacts")
    run.add_argument("--backbone", default="mobilenet")
    run.add_argument("--alpha", type=float, default=1.0, help="MobileNet width multiplier")
    run.add_argument("--weights", default="imagenet", help="imagenet | none | PATH")
    run.add_argument("--image-size", type=int, default=224)
    run.add_argument(
        "--resize-policy",
        choices=("pad", "crop", "stretch"),
        default="stretch",
        help="square images by padding (keeps everything, smaller), a centre crop (loses the "
        "edges) or stretching (keeps everything at full resolution, distorted)",
    )
    run.add_argument(
        "--rebalance-to",
        type=int,
        default=0,
        help="write augmented copies of train images until every class has this many "
        "(single-label data; 0: off)",
    )
    run.add_argument("--epochs", type=int, default=2, help="stage 1: head only")
    run.add_argument(
        "--fine-tune-epochs", type=int, default=30, help="stage 2: the backbone unfrozen"
    )
    run.add_argument("--batch-size", type=int, default=32)
    run.add_argument("--learning-rate", type=float, default=1e-2)
    run.add_argument(
        "--augmentations",
        default=DEFAULT_AUGMENTATIONS,
        help=f"comma-separated: {', '.join(AUGMENTATIONS)}; or none",
    )
    run.add_argument(
        "--early-stopping-patience",
        type=int,
        default=10,
        help="epochs without a better validation loss before a stage stops (best weights kept)",
    )
    run.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    run.add_argument(
        "--learning-rate-schedule",
        choices=LEARNING_RATE_SCHEDULES,
        default="cosine",
        help="cosine: linear warmup over --warmup-epochs, then cosine decay over each stage",
    )
    run.add_argument("--warmup-epochs", type=int, default=1)
    run.add_argument("--label-smoothing", type=float, default=0.0)
    run.add_argument(
        "--class-weight",
        choices=CLASS_WEIGHTS,
        default="none",
        help="balanced: weigh each class inversely to its train images (single-label data)",
    )
    run.add_argument("--dropout", type=float, default=0.2, help="before the classifier head")
    run.add_argument(
        "--unfreeze-fraction",
        type=float,
        default=1.0,
        help="stage 2: the top share of backbone layers to fine-tune",
    )
    run.add_argument(
        "--loss",
        choices=LOSSES,
        default="crossentropy",
        help="focal: cross-entropy scaled by (1 - p)^gamma, weighting hard images",
    )
    run.add_argument("--focal-gamma", type=float, default=2.0)
    run.add_argument("--l2", type=float, default=0.0, help="L2 penalty on the head's weights")
    run.add_argument(
        "--mixed-precision",
        choices=MIXED_PRECISION,
        default="auto",
        help="auto: mixed_float16 on a GPU, float32 on a CPU",
    )
    run.add_argument("--xla", action="store_true", help="compile train steps with XLA")
    run.add_argument(
        "--seed",
        type=int,
        default=42,
        help="seeds training: the same seed, data and machine train the same model",
    )
    run.add_argument(
        "--tflite",
        default="none",
        help="TFLite exports beside the SavedModel: float16, int8 (dynamic range), both "
        "comma-separated, or none",
    )
    run.add_argument(
        "--tune-trials",
        type=int,
        default=0,
        help="run a KerasTuner search of this many trials before train (0: no search)",
    )
    run.add_argument(
        "--tune-algorithm",
        choices=TUNE_ALGORITHMS,
        default="random",
        help="hyperband: successive halving up to --epochs + --fine-tune-epochs per trial",
    )
    run.add_argument("--min-side", type=int, default=16)
    run.add_argument("--min-images-per-class", type=int, default=5)
    run.add_argument("--min-accuracy", type=float, default=0.5)
    run.add_argument("--min-macro-f1", type=float, default=0.0)
    run.add_argument(
        "--max-regression",
        type=float,
        default=0.0,
        help="how much of --regression-metric the candidate may lose against the served model",
    )
    run.add_argument(
        "--regression-metric",
        choices=("accuracy", "macro_f1", "macro_average_precision"),
        default="accuracy",
    )
    run.add_argument(
        "--max-class-recall-drop",
        type=float,
        default=0.1,
        help="refuse a candidate that loses this much recall on any class",
    )
    run.add_argument("--max-invalid-fraction", type=float, default=0.05)
    run.add_argument(
        "--max-pixels",
        type=int,
        default=50_000_000,
        help="larger images are quarantined before decoding (decompression bombs)",
    )
    run.add_argument(
        "--max-imbalance-ratio",
        type=float,
        default=10.0,
        help="warn when the largest class has this many times the smallest's train images",
    )
    run.add_argument(
        "--drift-warning",
        type=float,
        default=0.15,
        help="warn when label mix, image size or brightness moved this far from the data of "
        "the served model",
    )
    run.add_argument(
        "--max-label-drift",
        type=float,
        default=0.5,
        help="fail when the label mix moved this far (total variation) from the served data",
    )
    run.add_argument(
        "--keep-versions",
        type=int,
        default=0,
        help="after a push, keep only the newest N versions (0 keeps all)",
    )
    run.add_argument(
        "--beam-arg",
        action="append",
        metavar="ARG",
        help="a Beam pipeline option for preprocess, written --beam-arg=--option=value; "
        "repeatable (default --runner=DirectRunner)",
    )
    run.add_argument("--summary-json", help="also write the run summary to this file")
    run.set_defaults(handler=_run)

    compile_ = commands.add_parser(
        "compile",
        help="write the KFP IR YAML for a cluster",
        description="Settings come from pipelines/cluster.yaml (or --config); flags override them.",
    )
    compile_.add_argument("-o", "--output", default="build/pipeline.yaml")
    compile_.add_argument("--config", help="a cluster settings file like pipelines/cluster.yaml")
    compile_.add_argument("--image", help="image for the CPU steps")
    compile_.add_argument("--gpu-image", help="image for the GPU steps (tune, train)")
    compile_.add_argument("--gpus", type=int, help="GPUs per GPU step (0: run them on CPU)")
    compile_.add_argument("--accelerator", help="the GPU resource name, e.g. nvidia.com/gpu")
    compile_.add_argument(
        "--gpu-node-selector",
        action="append",
        metavar="KEY=VALUE",
        help="node label GPU steps must run on; repeatable, replaces the config's",
    )
    compile_.add_argument(
        "--gpu-toleration",
        action="append",
        metavar="KEY[=VALUE][:EFFECT]",
        help="taint GPU steps tolerate; repeatable, replaces the config's",
    )
    compile_.add_argument("--shm-size", help="size of the memory-backed /dev/shm on GPU steps")
    compile_.add_argument(
        "--resources",
        action="append",
        metavar="STEP=CPU,MEMORY[,CPU_LIMIT,MEMORY_LIMIT]",
        help="requests (and limits) of a step; repeatable",
    )
    compile_.add_argument(
        "--retries", type=int, help="retries of the GPU steps (preemptible nodes)"
    )
    compile_.add_argument(
        "--timeout",
        action="append",
        metavar="STEP=SECONDS",
        help="a step's pod deadline; repeatable",
    )
    compile_.add_argument(
        "--serving-claim",
        help="a PersistentVolumeClaim holding serving_root, mounted in validate, evaluate and "
        "push at the config's mount path (/models); run with serving_root=/models",
    )
    compile_.add_argument(
        "--gcp-secret",
        help="a Kubernetes Secret with a service-account key.json to mount into every step "
        "(default: none, workload identity)",
    )
    compile_.set_defaults(handler=_compile)

    predict = commands.add_parser("predict", help="classify images with a pushed SavedModel")
    predict.add_argument("--model", required=True, help="a SavedModel folder (a version dir)")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.set_defaults(handler=_predict)
    backbones = commands.add_parser(
        "backbones", help="list the backbones with their input sizes and options"
    )
    backbones.add_argument(
        "--count-params",
        action="store_true",
        help="also build each headless backbone at its default size to count its parameters",
    )
    backbones.add_argument("--alpha", type=float, default=1.0, help="for --count-params")
    backbones.set_defaults(handler=_backbones)

    parameters = commands.add_parser(
        "parameters", help="the pipeline's parameters as a Markdown table (README's)"
    )
    parameters.set_defaults(handler=_parameters)

    rollback = commands.add_parser(
        "rollback", help="pin the version TF Serving serves as stable (models.config)"
    )
    rollback.add_argument("--serving-dir", required=True)
    rollback.add_argument("--model-name", required=True)
    rollback.add_argument("--to", type=int, required=True, metavar="VERSION")
    rollback.set_defaults(handler=_rollback)
    return parser


def _parameters(args: argparse.Namespace) -> int:
    print(parameters_markdown())
    return 0


def parameters_markdown() -> str:
    """Name, default and meaning of every pipeline parameter, from the pipeline itself (the
    meanings are its docstring's, which the KFP UI shows too)."""
    from pipelines.pipeline import create_pipeline

    rows = ["| parameter | default | meaning |", "|---|---|---|"]
    for name, spec in create_pipeline().component_spec.inputs.items():
        if spec.default is None:
            default = "(required)"
        elif isinstance(spec.default, str):
            default = f"`{spec.default}`" if spec.default else '`""`'
        else:
            default = f"`{json.dumps(spec.default)}`"
        meaning = " ".join((spec.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{name}` | {default} | {meaning} |")
    return "\n".join(rows)


def _backbones(args: argparse.Namespace) -> int:
    from components.backbones import BACKBONES

    header = ["backbone", "default size", "min size", "alpha", "ImageNet weights", "scaling"]
    rows = [
        [
            spec.name,
            str(spec.default_image_size),
            str(spec.min_image_size),
            "yes" if spec.width_multiplier else "-",
            "yes" if spec.imagenet_weights else "none: --weights none|PATH",
            spec.scaling,
        ]
        for spec in BACKBONES.values()
    ]
    if args.count_params:
        header.append("parameters")
        for row, spec in zip(rows, BACKBONES.values(), strict=True):
            shape = (spec.default_image_size, spec.default_image_size, 3)
            row.append(f"{spec.build(shape, None, args.alpha).count_params():,}")
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )
    return 0


def _rollback(args: argparse.Namespace) -> int:
    from components import serving_config

    serving_dir = (
        args.serving_dir if "://" in args.serving_dir else str(Path(args.serving_dir).resolve())
    )
    try:
        serving_config.pin(serving_dir, args.model_name, args.to)
    except ValueError as error:
        print(f"imgclf rollback: {error}", file=sys.stderr)
        return 1
    print(
        f"{args.model_name}: version {args.to} pinned as stable in "
        f"{serving_dir}/{serving_config.CONFIG_FILE}; new pushes are served beside it as "
        f"canary until one is pinned."
    )
    return 0


def _run(args: argparse.Namespace) -> int:
    from pipelines import local

    data = args.data if ":" in args.data.split("/")[0] else str(Path(args.data).resolve())
    arguments = {
        "data_uri": data,
        "data_snapshot": args.data_snapshot,
        "serving_root": str(Path(args.serving_dir).resolve()),
        "model_name": args.model_name,
        "train_fraction": args.train_fraction,
        "validation_fraction": args.validation_fraction,
        "backbone": args.backbone,
        "alpha": args.alpha,
        "weights": args.weights,
        "image_size": args.image_size,
        "resize_policy": args.resize_policy,
        "rebalance_to": args.rebalance_to,
        "epochs": args.epochs,
        "fine_tune_epochs": args.fine_tune_epochs,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "early_stopping_patience": args.early_stopping_patience,
        "optimizer": args.optimizer,
        "learning_rate_schedule": args.learning_rate_schedule,
        "warmup_epochs": args.warmup_epochs,
        "label_smoothing": args.label_smoothing,
        "class_weight": args.class_weight,
        "dropout": args.dropout,
        "unfreeze_fraction": args.unfreeze_fraction,
        "loss": args.loss,
        "focal_gamma": args.focal_gamma,
        "l2": args.l2,
        "mixed_precision": args.mixed_precision,
        "xla": args.xla,
        "seed": args.seed,
        "tflite": args.tflite,
        "tune_trials": args.tune_trials,
        "tune_algorithm": args.tune_algorithm,
        "augmentations": args.augmentations,
        "min_side": args.min_side,
        "min_images_per_class": args.min_images_per_class,
        "min_accuracy": args.min_accuracy,
        "max_regression": args.max_regression,
        "min_macro_f1": args.min_macro_f1,
        "regression_metric": args.regression_metric,
        "max_class_recall_drop": args.max_class_recall_drop,
        "keep_versions": args.keep_versions,
        "beam_pipeline_args": args.beam_arg or ["--runner=DirectRunner"],
        "max_invalid_fraction": args.max_invalid_fraction,
        "max_pixels": args.max_pixels,
        "max_imbalance_ratio": args.max_imbalance_ratio,
        "drift_warning": args.drift_warning,
        "max_label_drift": args.max_label_drift,
    }
    try:
        summary = local.run(arguments, args.pipeline_root)
    except local.PipelineFailed as error:
        print(
            f"\nimgclf run failed: {error}. The failing step's own error is above.", file=sys.stderr
        )
        return 1
    print(_describe(summary))
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(summary.to_json())
        print(f"Summary written to {args.summary_json}")
    return 0


def _describe(summary) -> str:
    def headline(metrics):
        line = f"accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}"
        if metrics["task"] == "multi-label":
            line += f", macro AP {metrics['macro_average_precision']:.3f} (multi-label)"
        return line

    images = ", ".join(f"{split} {count}" for split, count in summary.images.items())
    lines = [
        "",
        "== imgclf run summary ==",
        f"images:      {images}; {summary.quarantined} quarantined, "
        f"{summary.duplicates_dropped} duplicates across splits dropped",
        f"candidate:   {headline(summary.candidate)}",
        "baseline:    "
        + (
            f"version {summary.baseline['version']}: {headline(summary.baseline)}"
            if summary.baseline
            else "none (first model)"
        ),
    ]
    if summary.blessed:
        lines.append("blessed:     yes")
    else:
        failed = [check["rule"] for check in summary.blessing if not check["passed"]]
        lines.append(f"blessed:     no ({'; '.join(failed)})")
    lines.append(
        f"pushed:      version {summary.pushed['version']} to {summary.pushed['path']}"
        if summary.pushed
        else "pushed:      nothing"
    )
    lines.append(f"reports:     {summary.validation_report}")
    lines.append(f"             {summary.evaluation_report}")
    return "\n".join(lines)


def _compile(args: argparse.Namespace) -> int:
    from kfp import compiler

    from pipelines.pipeline import create_pipeline

    try:
        cluster = cluster_settings(args)
    except (ValueError, TypeError, KeyError) as error:
        raise SystemExit(f"imgclf compile: {error}") from None
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(create_pipeline(cluster), args.output)
    print(f"Pipeline written to {args.output}")
    return 0


def cluster_settings(args: argparse.Namespace):
    """The config file's settings with the compile flags on top."""
    from pipelines.cluster import DEFAULTS_FILE, ClusterSettings, Resources, Toleration

    settings = ClusterSettings.load(args.config or DEFAULTS_FILE)
    changes = {
        name: value
        for name, value in (
            ("step_image", args.image),
            ("gpu_image", args.gpu_image),
            ("gpu_count", args.gpus),
            ("accelerator", args.accelerator),
            ("shm_size", args.shm_size),
            ("gcp_secret", args.gcp_secret),
            ("serving_claim", args.serving_claim),
        )
        if value is not None
    }
    if args.gpu_node_selector:
        changes["node_selector"] = dict(_key_value(item) for item in args.gpu_node_selector)
    if args.gpu_toleration:
        changes["tolerations"] = tuple(Toleration.parse(item) for item in args.gpu_toleration)
    if args.resources:
        resources = dict(settings.resources)
        for item in args.resources:
            step, values = _key_value(item)
            cpu, memory, *limits = values.split(",")
            cpu_limit, memory_limit = limits if limits else (cpu, memory)
            resources[step] = Resources(cpu, memory, cpu_limit, memory_limit)
        changes["resources"] = resources
    if args.retries is not None:
        changes["retries"] = {
            step: dataclasses.replace(retry, count=args.retries)
            for step, retry in settings.retries.items()
        }
    if args.timeout:
        changes["timeouts_seconds"] = {
            **settings.timeouts_seconds,
            **{step: int(seconds) for step, seconds in map(_key_value, args.timeout)},
        }
    return settings.replace(**changes)


def _key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not (key and equals and value):
        raise ValueError(f"Expected KEY=VALUE, not {text!r}.")
    return key, value


def _predict(args: argparse.Namespace) -> int:
    from components import serving

    model = serving.ServedModel(args.model)
    for image in args.images:
        outputs = model.predict([Path(image).read_bytes()])
        print(
            json.dumps(
                {
                    "image": image,
                    "label": outputs[serving.LABEL_KEY][0].decode(),
                    "top": serving.top_scores(outputs, 0),
                    **_positives(outputs),
                }
            )
        )
    return 0


def _positives(outputs: dict) -> dict[str, list[str]]:
    """A multi-label model's labels present in the (single) image."""
    from components import serving

    if serving.POSITIVES_KEY not in outputs:
        return {}
    classes = [name.decode() for name in outputs[serving.CLASSES_KEY][0]]
    present = outputs[serving.POSITIVES_KEY][0]
    return {"labels": [name for name, flag in zip(classes, present, strict=True) if flag]}


if __name__ == "__main__":
    sys.exit(main())
