"""The pod each worker of a multi-worker training job runs in: the train step's image,
resources, GPU placement, /dev/shm and store credentials, as ``ClusterSettings.apply`` gives
the train step. Made at compile time, since only the compiler knows the cluster settings; the
train step's launcher (``components/training/launcher.py``) puts it into the TFJob."""

from __future__ import annotations

from imgclf.pipelines.cluster import GCP_KEY_DIR, SHM_PATH, ClusterSettings

STEP = "train"


def worker_job(settings: ClusterSettings) -> dict:
    """What the train step needs to launch its workers: their ``pod`` and how many times the
    job's pods may be restarted (``restarts``, the train step's retries)."""
    retry = settings.retries.get(STEP)
    return {"pod": worker_pod(settings), "restarts": retry.count if retry else 0}


def worker_pod(settings: ClusterSettings) -> dict:
    """The PodSpec of a training worker; the launcher names its one container and sets its
    command."""
    on_gpu = STEP in settings.gpu_steps and settings.gpu_count > 0
    container: dict = {
        "image": settings.gpu_image if STEP in settings.gpu_steps else settings.step_image,
        "env": _store_environment(settings),
    }
    pod: dict = {"containers": [container]}
    if STEP in settings.resources:
        wanted = settings.resources[STEP]
        container["resources"] = {
            "requests": {"cpu": wanted.cpu, "memory": wanted.memory},
            "limits": {"cpu": wanted.cpu_limit, "memory": wanted.memory_limit},
        }
    if on_gpu:
        limits = container.setdefault("resources", {}).setdefault("limits", {})
        limits[settings.accelerator] = str(settings.gpu_count)
        if settings.node_selector:
            pod["nodeSelector"] = dict(settings.node_selector)
        if settings.tolerations:
            pod["tolerations"] = [_toleration(t) for t in settings.tolerations]
        _mount(pod, "shm", SHM_PATH, emptyDir={"medium": "Memory", "sizeLimit": settings.shm_size})
    if settings.gcp_secret:
        _mount(pod, "gcp-key", GCP_KEY_DIR, secret={"secretName": settings.gcp_secret})
        container["env"].append(
            {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCP_KEY_DIR}/key.json"}
        )
    return pod


def _toleration(toleration) -> dict:
    fields = {
        "key": toleration.key,
        "operator": toleration.operator,
        "value": toleration.value,
        "effect": toleration.effect,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _mount(pod: dict, name: str, path: str, **source: dict) -> None:
    pod.setdefault("volumes", []).append({"name": name, **source})
    mount = {"name": name, "mountPath": path, **({"readOnly": True} if "secret" in source else {})}
    pod["containers"][0].setdefault("volumeMounts", []).append(mount)


def _store_environment(settings: ClusterSettings) -> list[dict]:
    """The endpoint and keys the train step reaches S3 with (``ClusterSettings._reach_s3``)."""
    environment = []
    if settings.s3_endpoint:
        environment.append({"name": "AWS_ENDPOINT_URL", "value": settings.s3_endpoint})
    if settings.s3_secret:
        variables = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        keys = zip(settings.s3_secret_keys, variables, strict=True)
        for key, variable in keys:
            reference = {"secretKeyRef": {"name": settings.s3_secret, "key": key}}
            environment.append({"name": variable, "valueFrom": reference})
    return environment
