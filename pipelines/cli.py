"""``imgclf``: run the pipeline locally, compile it for Kubeflow, or ask a pushed model."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from imgclf.components.data.sample import SAMPLE_DIGITS, SAMPLE_SETTINGS
from imgclf.components.parameters import GROUPS, Parameter, parameters


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.handler is _run and args.data_uri == SAMPLE_DIGITS:
        # The sample's own settings, where no flag says otherwise.
        args.run_parser.set_defaults(**SAMPLE_SETTINGS)
        args = parser.parse_args(argv)
    return args.handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclf", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for add_command in (
        _add_run,
        _add_compile,
        _add_predict,
        _add_backbones,
        _add_parameters,
        _add_rollback,
        _add_submit,
        _add_schedule,
    ):
        add_command(commands)
    return parser


def _add_run(commands) -> None:
    run = commands.add_parser(
        "run",
        help="run the whole pipeline locally through kfp.local",
        description="Every pipeline parameter is a flag: its name with dashes. With the bundled "
        f"{SAMPLE_DIGITS} (the default data), flags not given take the sample's settings: "
        + ", ".join(f"{name}={value}" for name, value in SAMPLE_SETTINGS.items())
        + ".",
    )
    groups = {
        group: run.add_argument_group(
            f"{group.__name__} (used by {', '.join(group.USED_BY)})", group.__doc__
        )
        for group in GROUPS
    }
    for parameter in parameters():
        add_flag(groups[parameter.group], parameter)
    run.add_argument("--pipeline-root", default="runs", help="where kfp.local keeps artifacts")
    run.add_argument(
        "--runner",
        choices=("subprocess", "docker"),
        default="subprocess",
        help="subprocess: every step in this Python environment; docker: every step in the "
        "step image (make image) through DOCKER_HOST, e.g. podman's API service",
    )
    run.add_argument(
        "--retries",
        type=int,
        default=0,
        help="retries of a failed tune or train step, at once (default 0: the cluster's "
        "retries are for lost pods, and a step that fails here fails for good)",
    )
    run.add_argument(
        "--verbose",
        action="store_true",
        help="print a failing step's traceback (without: its reason, and the file that keeps it)",
    )
    run.add_argument("--summary-json", help="also write the run summary to this file")
    run.set_defaults(handler=_run, run_parser=run)


def add_flag(parser, parameter: Parameter) -> None:
    """The ``imgclf run`` flag of a pipeline parameter, with its declared default, choices and
    description."""
    options = {
        "dest": parameter.name,
        "default": parameter.default_for_local_runs,
        # argparse formats help with %, which descriptions may hold.
        "help": parameter.description.replace("%", "%%"),
    }
    if parameter.type is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif parameter.type is list:
        options.update(action=_Repeatable, metavar="ARG")
    else:
        options.update(
            type=parameter.type,
            choices=parameter.choices or None,
            metavar=parameter.name.upper(),
        )
    parser.add_argument(f"--{parameter.name.replace('_', '-')}", *parameter.flags, **options)


class _Repeatable(argparse.Action):
    """A list option given once per item (``--beam-arg=--a --beam-arg=--b``), whose items
    replace the default instead of adding to it."""

    def __call__(self, parser, namespace, value, option_string=None):
        given = getattr(namespace, self.dest)
        setattr(namespace, self.dest, [value] if given is self.default else [*given, value])


def _add_compile(commands) -> None:
    compile_ = commands.add_parser(
        "compile",
        help="write the KFP IR YAML for a cluster",
        description="Settings come from pipelines/cluster.yaml (or --config); flags override them.",
    )
    compile_.add_argument("-o", "--output", default="build/pipeline.yaml")
    compile_.add_argument("--config", help="a cluster settings file like pipelines/cluster.yaml")
    compile_.add_argument(
        "--preset",
        help="where the GPU node pool is: generic (NVIDIA GPU Operator's label), gke, eks or "
        "aks (the config's presets; default: its `preset`)",
    )
    compile_.add_argument("--image", help="image for the CPU steps")
    compile_.add_argument("--gpu-image", help="image for the GPU steps (tune, train)")
    compile_.add_argument(
        "--light-image", help="image for the steps that run only kfp's executor (untuned)"
    )
    compile_.add_argument("--gpus", type=int, help="GPUs per GPU step (0: run them on CPU)")
    compile_.add_argument("--accelerator", help="the GPU resource name, e.g. nvidia.com/gpu")
    compile_.add_argument("--shm-size", help="size of the memory-backed /dev/shm on GPU steps")
    compile_.add_argument(
        "--retries", type=int, help="retries of the GPU steps (preemptible nodes)"
    )
    for flag, metavar, meaning in (
        (
            "--gpu-node-selector",
            "KEY=VALUE",
            "node label GPU steps must run on; replaces the preset's",
        ),
        (
            "--gpu-toleration",
            "KEY[=VALUE][:EFFECT]",
            "taint GPU steps tolerate; replaces the preset's",
        ),
        (
            "--resources",
            "STEP=CPU,MEMORY[,CPU_LIMIT,MEMORY_LIMIT]",
            "requests (and limits) of a step",
        ),
        ("--timeout", "STEP=SECONDS", "a step's pod deadline"),
    ):
        compile_.add_argument(flag, action="append", metavar=metavar, help=f"{meaning}; repeatable")
    compile_.add_argument(
        "--serving-claim",
        help="a PersistentVolumeClaim holding serving_root, mounted in validate, evaluate and "
        "push at the config's mount path (/models); run with serving_root=/models",
    )
    compile_.add_argument(
        "--data-claim",
        help="a PersistentVolumeClaim holding the images, mounted in the steps that read them "
        "at the config's mount path (/data); run with data_uri=/data/...",
    )
    compile_.add_argument(
        "--s3-endpoint",
        help="the S3-compatible endpoint every step uses, e.g. Kubeflow's MinIO "
        "http://minio-service.kubeflow:9000 (default: AWS S3)",
    )
    compile_.add_argument(
        "--s3-secret",
        help="a Kubernetes Secret with the S3 access and secret keys (the config's "
        "s3.secret_keys; Kubeflow's MinIO: mlpipeline-minio-artifact), as AWS_* variables",
    )
    compile_.add_argument(
        "--gcp-secret",
        help="a Kubernetes Secret with a service-account key.json to mount into every step "
        "(default: none, workload identity)",
    )
    compile_.set_defaults(handler=_compile)


def _add_predict(commands) -> None:
    predict = commands.add_parser("predict", help="classify images with a pushed SavedModel")
    predict.add_argument("--model", required=True, help="a SavedModel folder (a version dir)")
    predict.add_argument("images", nargs="+", metavar="IMAGE")
    predict.set_defaults(handler=_predict)


def _add_backbones(commands) -> None:
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


def _add_parameters(commands) -> None:
    table = commands.add_parser(
        "parameters", help="the pipeline's parameters as a Markdown table (README's)"
    )
    table.set_defaults(handler=_parameters)


def _add_rollback(commands) -> None:
    rollback = commands.add_parser(
        "rollback", help="pin the version TF Serving serves as stable (models.config)"
    )
    rollback.add_argument("--serving-dir", required=True)
    rollback.add_argument("--model-name", required=True)
    rollback.add_argument("--to", type=int, required=True, metavar="VERSION")
    # The cluster's defaults: a person rolls back what a running TF Serving serves.
    for name in ("serving_url", "config_poll_seconds"):
        parameter = next(p for p in parameters() if p.name == name)
        rollback.add_argument(
            f"--{name.replace('_', '-')}",
            type=parameter.type,
            default=parameter.default,
            help=parameter.description.replace("%", "%%"),
        )
    rollback.set_defaults(handler=_rollback)


def _add_kfp_flags(command) -> None:
    """Where the compiled pipeline goes and how to reach KFP's API, as kfp.Client takes it."""
    command.add_argument("--package", default="build/pipeline.yaml", help="the compiled pipeline")
    command.add_argument("--experiment", default="imgclf")
    command.add_argument(
        "--endpoint",
        help="the KFP API, e.g. https://kubeflow.example.com/pipeline (default: "
        "$KF_PIPELINES_ENDPOINT, else the kube context's in-cluster address)",
    )
    command.add_argument(
        "--namespace", default="kubeflow", help="the profile namespace of multi-user Kubeflow"
    )
    command.add_argument(
        "--existing-token",
        default=os.environ.get("KFP_EXISTING_TOKEN"),
        help="a bearer token for the API (default: $KFP_EXISTING_TOKEN)",
    )
    command.add_argument(
        "--cookies", help="cookies for an authenticating proxy, e.g. authservice_session=..."
    )
    command.add_argument(
        "--service-account-token",
        metavar="PATH",
        help="a projected service-account token (in a pod: "
        "/var/run/secrets/kubeflow/pipelines/token)",
    )
    command.add_argument(
        "parameters", nargs="*", metavar="NAME=VALUE", help="pipeline parameters, typed as declared"
    )


def _add_submit(commands) -> None:
    submit = commands.add_parser(
        "submit", help="register the compiled pipeline's version and start a run on Kubeflow"
    )
    _add_kfp_flags(submit)
    submit.add_argument("--run-name", default="imgclf")
    submit.set_defaults(handler=_submit)


def _add_schedule(commands) -> None:
    schedule = commands.add_parser(
        "schedule",
        help="register the compiled pipeline's version and create a recurring run on Kubeflow",
        description="One run at a time, no catch-up; each run reads the data as of its slot.",
    )
    _add_kfp_flags(schedule)
    schedule.add_argument("--name", default="imgclf-nightly", help="the recurring run's name")
    schedule.add_argument(
        "--cron", default="0 0 2 * * *", help="six-field cron, seconds first, UTC"
    )
    schedule.set_defaults(handler=_schedule)


def _connection(args: argparse.Namespace):
    from imgclf.pipelines.submission import Connection

    return Connection(
        endpoint=args.endpoint,
        namespace=args.namespace,
        existing_token=args.existing_token,
        cookies=args.cookies,
        service_account_token_path=args.service_account_token,
    )


def _submit(args: argparse.Namespace) -> int:
    from imgclf.pipelines import submission

    arguments = _typed_parameters("submit", args)
    if arguments is None:
        return 2
    run = submission.submit(
        _connection(args), args.package, args.experiment, args.run_name, arguments
    )
    print(f"Run {run.run_id} started in experiment {args.experiment}.")
    return 0


def _schedule(args: argparse.Namespace) -> int:
    from imgclf.pipelines import submission

    arguments = _typed_parameters("schedule", args)
    if arguments is None:
        return 2
    recurring = submission.schedule(
        _connection(args), args.package, args.experiment, args.name, args.cron, arguments
    )
    print(f"Recurring run {recurring.recurring_run_id} ({args.cron}) in {args.experiment}.")
    return 0


def _typed_parameters(command: str, args: argparse.Namespace) -> dict | None:
    """The NAME=VALUE words as typed parameters, or None after saying what is wrong."""
    from imgclf.pipelines import submission

    try:
        return submission.typed_arguments(args.parameters)
    except ValueError as error:
        print(f"imgclf {command}: {error}", file=sys.stderr)
        return None


def _run(args: argparse.Namespace) -> int:
    from imgclf.pipelines import local
    from imgclf.pipelines.summary import describe

    arguments = run_arguments(args)
    if args.retries < 0:
        print(f"imgclf run: --retries must be 0 or more, not {args.retries}.", file=sys.stderr)
        return 2
    from imgclf.components import preflight

    print(_plan_in_words(arguments, args.pipeline_root), flush=True)
    try:
        preflight.check(arguments)
    except preflight.PreflightFailed as error:
        print(f"imgclf run: {error}", file=sys.stderr)
        return 2
    try:
        summary = local.run(arguments, args.pipeline_root, args.runner, args.retries, args.verbose)
    except ValueError as error:
        print(f"imgclf run: {error}", file=sys.stderr)
        return 2
    except local.PipelineFailed as error:
        print(f"\nimgclf run failed: {_failure_in_words(error)}", file=sys.stderr)
        return 1
    print(describe(summary))
    if args.summary_json:
        Path(args.summary_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary_json).write_text(summary.to_json())
        print(f"Summary written to {args.summary_json}")
    return 0


def _plan_in_words(arguments: dict, pipeline_root: str) -> str:
    """What the run is about to do, in its first lines."""
    sample = (
        " (the sample's settings, where no flag says otherwise)"
        if arguments["data_uri"] == SAMPLE_DIGITS
        else ""
    )
    return (
        f"imgclf run: {arguments['data_uri']} -> {arguments['serving_root']}/"
        f"{arguments['model_name']} if blessed\n"
        f"  {arguments['backbone']} (alpha {arguments['alpha']:g}, weights "
        f"{arguments['weights']}) at {arguments['image_size']} px, {arguments['epochs']} + "
        f"{arguments['fine_tune_epochs']} epochs{sample}; artifacts under {pipeline_root}/"
    )


def _failure_in_words(error) -> str:
    if not error.step:
        return f"{error} The failing step's own error is above."
    return f"step {error.step}: {error.reason}\nIts traceback: {error.traceback}"


def run_arguments(args: argparse.Namespace) -> dict:
    """The pipeline's arguments from ``imgclf run``'s flags, local paths made absolute."""
    return {
        parameter.name: (
            _absolute(getattr(args, parameter.name))
            if parameter.local_path
            else getattr(args, parameter.name)
        )
        for parameter in parameters()
    }


def _absolute(location: str) -> str:
    """A local path made absolute; a URI (``gs://``, ``sample:``) as it is."""
    return location if ":" in location.split("/")[0] else str(Path(location).resolve())


def _parameters(args: argparse.Namespace) -> int:
    from imgclf.pipelines.interface import parameters_markdown

    print(parameters_markdown())
    return 0


def _backbones(args: argparse.Namespace) -> int:
    from imgclf.components.model.backbones import BACKBONES

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
    from imgclf.components import artifacts
    from imgclf.components.serving import models_config
    from imgclf.components.serving.server_status import ServingServer, VersionNotLoaded

    serving_dir = (
        args.serving_dir if "://" in args.serving_dir else str(Path(args.serving_dir).resolve())
    )
    server = ServingServer(args.serving_url, args.config_poll_seconds)
    try:
        models_config.pin(serving_dir, args.model_name, args.to, server)
    except (ValueError, VersionNotLoaded) as error:
        print(f"imgclf rollback: {error}", file=sys.stderr)
        return 1
    print(
        f"{args.model_name}: version {args.to} pinned as stable in "
        f"{serving_dir}/{artifacts.MODELS_CONFIG}; new pushes are served beside it as "
        f"canary until one is pinned."
    )
    return 0


def _compile(args: argparse.Namespace) -> int:
    from kfp import compiler

    from imgclf.pipelines.pipeline import create_pipeline

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
    from imgclf.pipelines.cluster import DEFAULTS_FILE, ClusterSettings, Resources, Toleration

    settings = ClusterSettings.load(args.config or DEFAULTS_FILE, args.preset)
    changes = {
        name: value
        for name, value in (
            ("step_image", args.image),
            ("gpu_image", args.gpu_image),
            ("light_image", args.light_image),
            ("gpu_count", args.gpus),
            ("accelerator", args.accelerator),
            ("shm_size", args.shm_size),
            ("gcp_secret", args.gcp_secret),
            ("serving_claim", args.serving_claim),
            ("data_claim", args.data_claim),
            ("s3_endpoint", args.s3_endpoint),
            ("s3_secret", args.s3_secret),
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
    from imgclf.components.serving import signature

    model = signature.ServedModel(args.model)
    for image in args.images:
        outputs = model.predict([Path(image).read_bytes()])
        print(
            json.dumps(
                {
                    "image": image,
                    "label": outputs[signature.LABEL_KEY][0].decode(),
                    "top": signature.top_scores(outputs, 0),
                    **_positives(outputs),
                }
            )
        )
    return 0


def _positives(outputs: dict) -> dict[str, list[str]]:
    """A multi-label model's labels present in the (single) image."""
    from imgclf.components.serving import signature

    if signature.POSITIVES_KEY not in outputs:
        return {}
    classes = [name.decode() for name in outputs[signature.CLASSES_KEY][0]]
    present = outputs[signature.POSITIVES_KEY][0]
    return {"labels": [name for name, flag in zip(classes, present, strict=True) if flag]}


if __name__ == "__main__":
    sys.exit(main())
