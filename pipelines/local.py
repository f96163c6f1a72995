"""Runs the DAG on this machine with ``kfp.local`` and summarises what it did."""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from imgclf.components import failures
from imgclf.pipelines.cluster import ClusterSettings, Retry
from imgclf.pipelines.pipeline import create_pipeline
from imgclf.pipelines.summary import RunSummary, summarize

# Quiet TensorFlow's C++ start-up chatter and great-expectations' usage statistics in every
# step's subprocess; real warnings and errors still show.
STEP_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2", "GX_ANALYTICS_ENABLED": "false"}


class PipelineFailed(RuntimeError):
    """A step of the local run failed: ``step``, its one-line ``reason`` and the file with its
    ``traceback`` where the step recorded them (the log above has them otherwise)."""

    def __init__(self, message: str, step: str = "", reason: str = "", traceback: str = ""):
        super().__init__(message)
        self.step, self.reason, self.traceback = step, reason, traceback


# Each step's command, announced at once and started a second late. kfp.local runs containers
# with auto_remove and then asks for their logs, which docker-py follows with an inspect; a
# container gone by then (a step of no output that ends first, untuned) is answered by podman
# 4.3's API with a 500 rather than the 404 that kfp.local catches
# (kfp/local/docker_task_handler.py, run_docker_container), failing the run. The line printed
# first lets the log request return while the container still lives.
HELD_ENTRYPOINT = ["sh", "-c", 'echo "starting $1" && sleep 1 && exec "$@"', "held"]
# The parameters that may name a local path the steps read or write.
CONTAINER_VISIBLE_PATHS = ("data_uri", "serving_root", "weights")


def run(
    arguments: dict[str, Any],
    pipeline_root: str,
    runner: str = "subprocess",
    retries: int = 0,
    verbose: bool = False,
) -> RunSummary:
    """The whole DAG through ``kfp.local``: every step in this Python environment
    (``subprocess``), or in the step image through a Docker-compatible API (``docker``:
    ``DOCKER_HOST``, e.g. podman's service), as uid 1000, as the cluster runs it.

    The cluster's retries are for lost pods; kfp.local applies a task's retry policy, backoff
    included (kfp/local/orchestrator/task_executor.py), so locally a step that fails for good
    would sleep and rerun for minutes. Here the GPU steps get ``retries``, at once.

    A failing step prints its reason and keeps its traceback in a file under
    ``<pipeline_root>/failures/`` (``verbose``: it prints the traceback too)."""
    from kfp import local

    os.environ.update(STEP_ENVIRONMENT)
    root = Path(pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    failure_dir = Path(
        tempfile.mkdtemp(prefix=time.strftime("%Y%m%d-%H%M%S-"), dir=_mkdir(root / "failures"))
    )
    os.environ[failures.FAILURE_DIR_VARIABLE] = str(failure_dir)
    if verbose:
        os.environ[failures.VERBOSE_VARIABLE] = "1"
    cluster = ClusterSettings.load()
    cluster = cluster.replace(
        retries={step: Retry(retries, "0s", 1.0, "0s") for step in cluster.retries}
        if retries
        else {}
    )
    if runner == "docker":
        _check_docker_run(arguments, root, (cluster.step_image, cluster.light_image))
        # The image's user (uid 1000) writes every step's outputs under the root.
        root.chmod(0o1777)
        # One image for every step: no GPU image here, and no GPU.
        cluster = cluster.replace(gpu_image=cluster.step_image, gpu_count=0)
        chosen = local.DockerRunner(entrypoint=HELD_ENTRYPOINT)
    else:
        chosen = local.SubprocessRunner(use_venv=False)
    local.init(runner=chosen, pipeline_root=str(root), raise_on_error=True)
    # No schedule locally: the data_snapshot asked for, else everything.
    pipeline = create_pipeline(cluster, scheduled_at="")
    with warnings.catch_warnings():
        # Images and the GPU request are for the cluster; locally every step runs in this
        # Python environment on the CPU.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
        try:
            task = pipeline(**arguments)
        except RuntimeError as error:
            raise _failure(str(error), failure_dir) from error
    return summarize(Path(task.output.path).parent.parent)


def _failure(message: str, failure_dir: Path) -> PipelineFailed:
    """The first step that recorded its failure (the others failed for want of its outputs)."""
    recorded = failures.recorded(failure_dir)
    if not recorded:
        return PipelineFailed(message)
    first = recorded[0]
    return PipelineFailed(message, first["step"], first["reason"], first["traceback"])


def _mkdir(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _check_docker_run(arguments: dict[str, Any], root: Path, images: tuple[str, ...]) -> None:
    """What a containerised run needs, before it starts: kfp.local mounts only the pipeline
    root into the containers, and pulls an image it cannot find (offline: it cannot)."""
    outside = [
        f"{name}={value}"
        for name, value in arguments.items()
        if name in CONTAINER_VISIBLE_PATHS and _is_outside(value, root)
    ]
    if outside:
        raise ValueError(
            f"{', '.join(outside)}: a containerised run sees only its pipeline root ({root}); "
            "put these under it or on a bucket."
        )
    try:
        import docker

        client = docker.from_env()
        known = [tag for found in client.images.list() for tag in found.tags]
        client.close()
    except Exception as error:  # docker-py wraps every connection failure differently
        raise ValueError(
            f"no Docker-compatible API answers at DOCKER_HOST={os.environ.get('DOCKER_HOST')!r} "
            f"({error}); start one with containers/podman-setup.sh start SOCKET."
        ) from error
    missing = [image for image in images if image not in known]
    if missing:
        raise ValueError(f"{', '.join(missing)} not built here; build with make image.")


def _is_outside(value: Any, root: Path) -> bool:
    """An absolute local path (``imgclf run`` makes data and serving paths absolute) that is
    not under ``root``; URIs, the sample and ``imagenet`` are not paths."""
    return isinstance(value, str) and value.startswith("/") and not Path(value).is_relative_to(root)
