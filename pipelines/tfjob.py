"""The Kubeflow TFJob that trains across ``workers`` pods: each pod has the train step's image,
resources, GPU placement, /dev/shm and store credentials, and runs ``job_worker``.

Why TFJob (training-operator v1, ``kubeflow.org/v1``): it is what Kubeflow 1.9 and 1.10
install and what clusters run today. Kubeflow Trainer v2's TrainJob ships runtimes for
PyTorch, DeepSpeed, MLX and JAX and none for TensorFlow; JobSet would mean writing TF_CONFIG
ourselves. The operator's rules this follows (kubeflow/training-operator v1.9.0):

- TF_CONFIG goes only into the container named ``tensorflow``
  (pkg/controller.v1/tensorflow/tfjob_controller.go, SetClusterSpec), and only when the job
  is distributed: one worker trains with no TF_CONFIG, exactly as the train step does.
- The cluster's workers reach each other on the port named ``tfjob-port`` (2222 by default,
  pkg/apis/kubeflow.org/v1/tensorflow_types.go).
- Without a Chief replica, worker 0 is the chief, and the job succeeds when it does
  (successPolicy "", the default).
"""

from __future__ import annotations

from pipelines.cluster import GCP_KEY_DIR, SHM_PATH, ClusterSettings

API_VERSION = "kubeflow.org/v1"
CONTAINER = "tensorflow"
PORT_NAME, PORT = "tfjob-port", 2222
WORKER_MODULE = "imgclf.components.training.job_worker"


def training_job(
    settings: ClusterSettings,
    name: str,
    namespace: str,
    workers: int,
    arguments: list[str],
) -> dict:
    """The TFJob object: ``workers`` pods running the job worker with ``arguments``."""
    if workers < 1:
        raise ValueError(f"A training job needs 1 worker or more, not {workers}.")
    retry = settings.retries.get("train")
    return {
        "apiVersion": API_VERSION,
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
                # Pods that still run once the chief has finished are stopped; finished pods
                # stay until the job is deleted, so their logs can be read.
                "cleanPodPolicy": "Running",
                # A pod that fails restarts in place (OnFailure) and resumes from the
                # checkpoints; this many restarts of the job's pods, and it has failed.
                "backoffLimit": retry.count if retry else 0,
            },
            "tfReplicaSpecs": {
                "Worker": {
                    "replicas": workers,
                    "restartPolicy": "OnFailure",
                    "template": {"spec": _pod_spec(settings, arguments)},
                }
            },
        },
    }


def _pod_spec(settings: ClusterSettings, arguments: list[str]) -> dict:
    container = {
        "name": CONTAINER,
        "image": settings.gpu_image if "train" in settings.gpu_steps else settings.step_image,
        "command": ["python", "-m", WORKER_MODULE],
        "args": list(arguments),
        "ports": [{"name": PORT_NAME, "containerPort": PORT}],
        "env": _environment(settings),
    }
    pod: dict = {"containers": [container]}
    wanted = settings.resources.get("train")
    if wanted:
        container["resources"] = {
            "requests": {"cpu": wanted.cpu, "memory": wanted.memory},
            "limits": {"cpu": wanted.cpu_limit, "memory": wanted.memory_limit},
        }
    if "train" in settings.gpu_steps and settings.gpu_count > 0:
        resources = container.setdefault("resources", {"requests": {}, "limits": {}})
        resources["limits"][settings.accelerator] = str(settings.gpu_count)
        if settings.node_selector:
            pod["nodeSelector"] = dict(settings.node_selector)
        if settings.tolerations:
            pod["tolerations"] = [
                {
                    key: value
                    for key, value in (
                        ("key", toleration.key),
                        ("operator", toleration.operator),
                        ("value", toleration.value),
                        ("effect", toleration.effect),
                    )
                    if value is not None
                }
                for toleration in settings.tolerations
            ]
        _mount(pod, {"medium": "Memory", "sizeLimit": settings.shm_size}, "shm", SHM_PATH)
    if settings.gcp_secret:
        _mount(pod, {"secretName": settings.gcp_secret}, "gcp-key", GCP_KEY_DIR)
        container["env"].append(
            {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCP_KEY_DIR}/key.json"}
        )
    return pod


def _mount(pod: dict, source: dict, name: str, path: str) -> None:
    """An emptyDir (``source`` has a medium) or a Secret's files at ``path``."""
    kind = "emptyDir" if "medium" in source else "secret"
    pod.setdefault("volumes", []).append({"name": name, kind: source})
    mount = {"name": name, "mountPath": path, **({"readOnly": True} if kind == "secret" else {})}
    pod["containers"][0].setdefault("volumeMounts", []).append(mount)


def _environment(settings: ClusterSettings) -> list[dict]:
    """How the workers reach the store, as the train step does (``ClusterSettings.apply``)."""
    environment = []
    if settings.s3_endpoint:
        environment.append({"name": "AWS_ENDPOINT_URL", "value": settings.s3_endpoint})
    if settings.s3_secret:
        access_key, secret_key = settings.s3_secret_keys
        for key, variable in (
            (access_key, "AWS_ACCESS_KEY_ID"),
            (secret_key, "AWS_SECRET_ACCESS_KEY"),
        ):
            environment.append(
                {
                    "name": variable,
                    "valueFrom": {"secretKeyRef": {"name": settings.s3_secret, "key": key}},
                }
            )
    return environment
