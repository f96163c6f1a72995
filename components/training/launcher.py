"""Training on several workers from inside the train step: a Kubeflow TFJob of ``workers`` pods
(each running ``job_worker``), its chief's log streamed into the step's, the workers' reason
when it fails, and the job deleted when it ends.

The operator's rules followed here (kubeflow/training-operator v1.9.0; their constants are
checked against the vendored sources in tests/containers/schemas/):

- TF_CONFIG goes only into the container named ``tensorflow``, and only when the job is
  distributed (pkg/controller.v1/tensorflow/tfjob_controller.go, SetClusterSpec); the
  workers reach each other on the port named ``tfjob-port``
  (pkg/apis/kubeflow.org/v1/tensorflow_types.go). With no Chief replica, worker 0 is the
  chief and the job succeeds when it does (successPolicy "", the default).
- A replica's pod is named ``<job>-worker-<index>`` (pkg/core/utils.go, GenGeneralName) and
  labelled ``training.kubeflow.org/job-name`` (pkg/apis/kubeflow.org/v1/common_types.go); the
  job's conditions end in ``Succeeded`` or ``Failed``.

Why TFJob: it is what Kubeflow 1.9 and 1.10 install and what clusters run today. Kubeflow
Trainer v2's TrainJob ships runtimes for PyTorch, DeepSpeed, MLX and JAX and none for
TensorFlow; a JobSet would mean writing TF_CONFIG ourselves.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import threading
import time
from pathlib import Path

from imgclf.components.training import record
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.stages import TrainResult

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "kubeflow.org", "v1", "tfjobs"
CONTAINER = "tensorflow"
PORT_NAME, PORT = "tfjob-port", 2222
JOB_NAME_LABEL = "training.kubeflow.org/job-name"
SUCCEEDED, FAILED = "Succeeded", "Failed"
WORKER_COMMAND = ["python", "-m", "imgclf.components.training.job_worker"]
NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
# A finished job the launcher could not delete (its pod was killed) goes after a day.
FINISHED_JOB_TTL_SECONDS = 86_400


def train_on_workers(
    worker_pod: dict,
    config: TrainConfig,
    inputs: dict[str, str],
    outputs: dict[str, str],
    restarts: int,
    api_client,
    poll_seconds: float = 5.0,
    log_lines=print,
) -> TrainResult:
    """Trains on ``config.workers`` pods of ``worker_pod``; then the SavedModel and the Keras
    model the chief uploaded are in ``outputs["model"]`` and ``outputs["keras_model"]``
    (URIs), and the chief's training record is returned. ``inputs``: the ``examples`` and
    ``transform`` URIs; ``outputs`` also names the ``checkpoints`` URI the workers resume from."""
    # The workers' own disks hold their checkpoints and logs; only the store is shared.
    settings = dataclasses.asdict(
        dataclasses.replace(config, checkpoint_dir="", checkpoint_mirror="", tensorboard_dir="")
    )
    arguments = [
        *("--examples", inputs["examples"], "--transform", inputs["transform"]),
        *("--model", outputs["model"], "--keras-model", outputs["keras_model"]),
        *("--checkpoints", outputs["checkpoints"], "--settings", json.dumps(settings)),
    ]
    name = job_name(outputs["checkpoints"])
    job = training_job(worker_pod, name, own_namespace(), config.workers, arguments, restarts)
    log.info(
        "Training on %d workers (TFJob %s): global batch %d, each worker's log is its pod's; "
        "the chief's follows",
        config.workers,
        name,
        config.batch_size * config.workers,
    )
    run(job, api_client, poll_seconds, log_lines)
    trained = record.read(outputs["model"])
    if trained is None:
        raise RuntimeError(
            f"TFJob {name} succeeded but no trained model is at {outputs['model']}: the chief "
            "uploads it as its last act, so look at the chief's log above."
        )
    return TrainResult(**{f.name: trained[f.name] for f in dataclasses.fields(TrainResult)})


def job_name(checkpoints_uri: str) -> str:
    """One name per train task, the same for its retries: a retried step finds the job its
    killed attempt started and waits for it instead of starting another."""
    return "imgclf-train-" + hashlib.sha256(checkpoints_uri.encode()).hexdigest()[:12]


def training_job(
    pod: dict, name: str, namespace: str, workers: int, arguments: list[str], restarts: int
) -> dict:
    """The TFJob: ``workers`` replicas of ``pod`` (the train step's pod settings, from
    ``pipelines.tfjob.worker_pod``) running the job worker with ``arguments``."""
    if workers < 1:
        raise ValueError(f"A training job needs 1 worker or more, not {workers}.")
    pod = copy.deepcopy(pod)
    (container,) = pod["containers"]
    container.update(
        name=CONTAINER,
        command=WORKER_COMMAND,
        args=list(arguments),
        ports=[{"name": PORT_NAME, "containerPort": PORT}],
    )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TFJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "imgclf",
                "app.kubernetes.io/component": "train",
            },
        },
        "spec": {
            "runPolicy": {
                # Pods still running once the chief has finished are stopped; finished pods
                # stay, with their logs, until the job is deleted.
                "cleanPodPolicy": "Running",
                # A failed pod restarts in place (OnFailure) and resumes from the checkpoints;
                # after this many restarts the job has failed.
                "backoffLimit": restarts,
                "ttlSecondsAfterFinished": FINISHED_JOB_TTL_SECONDS,
            },
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": workers,
                    "restartPolicy": "OnFailure",
                    "template": {"spec": pod},
                }
            },
        },
    }


def own_namespace() -> str:
    """The namespace this pod runs in (its service account's), where the job goes."""
    return NAMESPACE_FILE.read_text().strip() if NAMESPACE_FILE.is_file() else "default"


def api_client():
    """A client for the cluster this pod runs in (or the local kubeconfig's)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.ApiClient()


def run(job: dict, api_client, poll_seconds: float = 5.0, log_lines=print) -> None:
    """Creates ``job`` (or finds the one a killed attempt of this step created), streams its
    chief's log to ``log_lines``, waits for it to end and deletes it; raises RuntimeError with
    the failed workers' exit codes and last log lines when it fails."""
    from kubernetes import client

    jobs, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    _create_or_adopt(jobs, job, poll_seconds)
    follower = threading.Thread(
        target=_follow_chief_log, args=(core, name, namespace, log_lines), daemon=True
    )
    follower.start()
    try:
        status = _wait(jobs, name, namespace, poll_seconds)
        follower.join(timeout=30)
        if status["type"] == FAILED:
            raise RuntimeError(_failure(core, name, namespace, status))
        log.info("TFJob %s/%s succeeded", namespace, name)
    finally:
        _delete(jobs, name, namespace)


def _create_or_adopt(jobs, job: dict, poll_seconds: float) -> None:
    """Creates ``job``; where an earlier attempt of this step created it, waits for that one
    if it still runs or succeeded, and starts it again if it failed."""
    from kubernetes.client.exceptions import ApiException

    name, namespace = job["metadata"]["name"], job["metadata"]["namespace"]
    workers = job["spec"]["tfReplicaSpecs"]["Worker"]["replicas"]
    try:
        jobs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)
        log.info("Started TFJob %s/%s: %d workers", namespace, name, workers)
        return
    except ApiException as error:
        if error.status != 409:
            raise RuntimeError(_api_problem("create", namespace, name, error)) from None
    earlier = _latest_condition(jobs, name, namespace)
    if not earlier or earlier["type"] != FAILED:
        log.info(
            "TFJob %s/%s exists (an earlier attempt of this step): waiting for it", namespace, name
        )
        return
    log.info("TFJob %s/%s of an earlier attempt failed: starting it again", namespace, name)
    _delete(jobs, name, namespace)
    while _exists(jobs, name, namespace):
        time.sleep(poll_seconds)
    jobs.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, job)


def _exists(jobs, name: str, namespace: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        jobs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as error:
        if error.status == 404:
            return False
        raise
    return True


def _latest_condition(jobs, name: str, namespace: str) -> dict | None:
    found = jobs.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    conditions = (found.get("status") or {}).get("conditions") or ()
    current = [c for c in conditions if c.get("status") == "True"]
    return current[-1] if current else None


def _wait(jobs, name: str, namespace: str, poll_seconds: float) -> dict:
    """The job's final condition (Succeeded or Failed), logging each new one on the way."""
    seen = None
    while True:
        latest = _latest_condition(jobs, name, namespace)
        if latest and latest["type"] != seen:
            seen = latest["type"]
            log.info("TFJob %s: %s (%s)", name, seen, latest.get("message", ""))
        if latest and latest["type"] in (SUCCEEDED, FAILED):
            return latest
        time.sleep(poll_seconds)


def _follow_chief_log(core, name: str, namespace: str, log_lines) -> None:
    """The chief's log as it is written, from when its pod starts to when the job ends; a
    restarted chief's log follows its earlier one's."""
    from kubernetes.client.exceptions import ApiException

    chief = f"{name}-worker-0"
    while True:
        try:
            pod = core.read_namespaced_pod(chief, namespace)
        except ApiException as error:
            if error.status == 404:  # not created yet, or the job is gone
                time.sleep(1)
                continue
            return
        if pod.status.phase in ("Pending", None):
            time.sleep(1)
            continue
        stream = core.read_namespaced_pod_log(
            chief, namespace, container=CONTAINER, follow=True, _preload_content=False
        )
        for line in stream.stream():
            for text in line.decode(errors="replace").splitlines():
                log_lines(f"[{chief}] {text}")
        if core.read_namespaced_pod(chief, namespace).status.phase in ("Succeeded", "Failed"):
            return


def _failure(core, name: str, namespace: str, status: dict) -> str:
    """The job's reason and, per worker that failed, its exit code and last log lines."""
    reasons = [f"TFJob {namespace}/{name} failed: {status.get('message') or status.get('reason')}"]
    pods = core.list_namespaced_pod(namespace, label_selector=f"{JOB_NAME_LABEL}={name}")
    for pod in sorted(pods.items, key=lambda p: p.metadata.name):
        for container in pod.status.container_statuses or ():
            ended = container.state.terminated or (
                container.last_state and container.last_state.terminated
            )
            if container.name != CONTAINER or not ended or ended.exit_code == 0:
                continue
            tail = core.read_namespaced_pod_log(
                pod.metadata.name, namespace, container=CONTAINER, tail_lines=20
            )
            reasons.append(
                f"{pod.metadata.name} exited with {ended.exit_code} ({ended.reason}); its last "
                f"lines:\n{tail.rstrip()}"
            )
    return "\n".join(reasons)


def _delete(jobs, name: str, namespace: str) -> None:
    from kubernetes.client.exceptions import ApiException

    try:
        jobs.delete_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Foreground"
        )
    except ApiException as error:
        if error.status != 404:
            log.warning("%s", _api_problem("delete", namespace, name, error))


def _api_problem(action: str, namespace: str, name: str, error) -> str:
    hint = ""
    if error.status == 403:
        hint = (
            " The train step's service account needs to create, get and delete tfjobs.kubeflow.org"
            " and read pods and pods/log in its namespace (containers/training/rbac.yaml)."
        )
    elif error.status == 404:
        hint = " Is Kubeflow's training operator installed (kubectl get crd tfjobs.kubeflow.org)?"
    return f"Could not {action} TFJob {namespace}/{name}: {error.status} {error.reason}.{hint}"
