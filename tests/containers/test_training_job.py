"""The TFJob that trains across workers (``components/training/launcher.py`` around the pod of
``pipelines/tfjob.py``), validated against
Kubeflow's training-operator v1.9.0 TFJob CRD (vendored byte for byte under ``schemas/``, made
strict as ``test_serving_manifests`` makes every CRD), and read for what training needs."""

from __future__ import annotations

import re

import pytest
import yaml
from test_serving_manifests import VENDORED, InvalidManifest, validate

from conftest import REPO
from imgclf.components.training import launcher
from imgclf.pipelines import cli, tfjob
from imgclf.pipelines.cluster import ClusterSettings, Toleration

ARGUMENTS = ["--examples", "s3://runs/examples", "--settings", "{}"]


def _job(workers: int, settings: ClusterSettings | None = None) -> dict:
    settings = settings or ClusterSettings.load()
    pod = tfjob.worker_pod(settings)
    return launcher.training_job(pod, "imgclf-train-abc", "kubeflow", workers, ARGUMENTS, 3)


def _pod(job: dict) -> dict:
    return job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_the_job_for_1_2_and_4_workers_is_a_valid_tfjob_on_the_gpu_pool(workers):
    settings = ClusterSettings.load(preset="gke")
    job = _job(workers, settings)
    validate(job)
    replicas = job["spec"]["tfReplicaSpecs"]
    assert list(replicas) == ["Worker"] and replicas["Worker"]["replicas"] == workers
    pod = _pod(job)
    (container,) = pod["containers"]
    assert container["image"] == settings.gpu_image
    assert container["command"] == ["python", "-m", "imgclf.components.training.job_worker"]
    assert container["args"] == ARGUMENTS
    train = settings.resources["train"]
    assert container["resources"] == {
        "requests": {"cpu": train.cpu, "memory": train.memory},
        "limits": {"cpu": train.cpu_limit, "memory": train.memory_limit, "nvidia.com/gpu": "1"},
    }
    assert pod["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-l4"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert {"name": "shm", "mountPath": "/dev/shm"} in container["volumeMounts"]
    assert {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod["volumes"]


def _go_constant(name: str, file: str = "tensorflow_types.go") -> str:
    source = (VENDORED / file).read_text()
    return re.search(rf"^\s*{name}\s+\w*\s*=\s*\"?([^\"\n]+)\"?$", source, re.M).group(1)


def test_the_container_and_port_are_the_ones_the_operator_gives_tf_config_and_the_cluster():
    """training-operator v1.9.0: SetClusterSpec (pkg/controller.v1/tensorflow/
    tfjob_controller.go) adds TF_CONFIG only to the container named TFJobDefaultContainerName,
    and the workers' addresses use the port named TFJobDefaultPortName
    (pkg/apis/kubeflow.org/v1/tensorflow_types.go, vendored)."""
    (container,) = _pod(_job(2))["containers"]
    assert container["name"] == _go_constant("TFJobDefaultContainerName") == "tensorflow"
    (port,) = container["ports"]
    assert port["name"] == _go_constant("TFJobDefaultPortName")
    assert port["containerPort"] == int(_go_constant("TFJobDefaultPort"))


def test_the_launcher_reads_the_labels_and_conditions_the_operator_writes():
    """pkg/apis/kubeflow.org/v1/common_types.go (vendored): the job-name label on every pod
    and the condition types a finished job ends in."""
    assert _go_constant("JobNameLabel", "common_types.go") == launcher.JOB_NAME_LABEL
    assert _go_constant("JobSucceeded", "common_types.go") == launcher.SUCCEEDED
    assert _go_constant("JobFailed", "common_types.go") == launcher.FAILED


def test_the_workers_reach_the_store_as_the_train_step_does():
    settings = ClusterSettings.load().replace(
        s3_endpoint="http://minio.kubeflow:9000",
        s3_secret="mlpipeline-minio-artifact",
        gcp_secret="gcp-key",
    )
    job = _job(2, settings)
    validate(job)
    (container,) = _pod(job)["containers"]
    environment = {variable["name"]: variable for variable in container["env"]}
    assert environment["AWS_ENDPOINT_URL"]["value"] == "http://minio.kubeflow:9000"
    assert environment["AWS_SECRET_ACCESS_KEY"]["valueFrom"] == {
        "secretKeyRef": {"name": "mlpipeline-minio-artifact", "key": "secretkey"}
    }
    assert environment["GOOGLE_APPLICATION_CREDENTIALS"]["value"] == "/var/secrets/google/key.json"
    assert {"name": "gcp-key", "secret": {"secretName": "gcp-key"}} in _pod(job)["volumes"]
    assert launcher.job_name("s3://a/checkpoints") == launcher.job_name("s3://a/checkpoints")
    assert launcher.job_name("s3://a/checkpoints") != launcher.job_name("s3://b/checkpoints")


def test_failed_pods_restart_and_a_cpu_only_cluster_asks_for_no_gpu():
    settings = ClusterSettings.load().replace(gpu_count=0, tolerations=(Toleration("x"),))
    job = _job(2, settings)
    validate(job)
    assert job["spec"]["runPolicy"]["backoffLimit"] == 3
    assert job["spec"]["tfReplicaSpecs"]["Worker"]["restartPolicy"] == "OnFailure"
    pod = _pod(job)
    assert "nvidia.com/gpu" not in pod["containers"][0]["resources"]["limits"]
    assert "tolerations" not in pod and "volumes" not in pod


def test_a_misspelt_field_fails_the_crd_schema():
    """The check can fail: an unknown field in the replica spec is refused, as the API server
    refuses it under kubectl's default --validate=strict."""
    job = _job(2)
    job["spec"]["tfReplicaSpecs"]["Worker"]["replica"] = 2
    with pytest.raises(InvalidManifest, match="tfReplicaSpecs.Worker"):
        validate(job)


def test_no_workers_is_refused():
    with pytest.raises(ValueError, match="needs 1 worker or more, not 0"):
        _job(0)


def _train_task(spec) -> dict:
    for component in [spec["root"], *spec["components"].values()]:
        tasks = component.get("dag", {}).get("tasks", {})
        if "train" in tasks:
            return tasks["train"]
    raise AssertionError("no train task")


def test_with_workers_train_launches_a_valid_tfjob_of_the_compiled_pods(tmp_path):
    """``workers`` is a run parameter that reaches train, whose input carries the pods its
    launcher starts: with workers=4 that is a valid TFJob (the training operator's CRD,
    tests/containers/test_training_job.py) of 4 pods in the GPU image, on the GPU pool."""
    path = tmp_path / "pipeline.yaml"
    images = [
        "--image",
        "registry.example/imgclf:1",
        "--gpu-image",
        "registry.example/imgclf-gpu:1",
    ]
    assert cli.main(["compile", "-o", str(path), *images]) == 0
    spec = next(yaml.safe_load_all(path.read_text()))
    assert spec["root"]["inputDefinitions"]["parameters"]["workers"]["defaultValue"] == 1
    inputs = _train_task(spec)["inputs"]["parameters"]
    settings = inputs["settings"]["runtimeValue"]["constant"]
    assert settings["workers"] == "{{$.inputs.parameters['pipelinechannel--workers']}}"
    worker_job = inputs["worker_job"]["runtimeValue"]["constant"]
    job = launcher.training_job(worker_job["pod"], "imgclf-train-x", "kubeflow", 4, [], 3)
    validate(job)
    (container,) = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/imgclf-gpu:1"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert worker_job["restarts"] == 3


def test_the_launchers_role_allows_every_call_it_makes_and_no_more():
    """containers/training/rbac.yaml against the kubernetes client calls in launcher.py:
    create_, get_ and delete_namespaced_custom_object on tfjobs; read_namespaced_pod and
    list_namespaced_pod; read_namespaced_pod_log (the pods/log subresource)."""
    role, binding = yaml.safe_load_all((REPO / "containers" / "training" / "rbac.yaml").read_text())
    for manifest in (role, binding):
        validate(manifest)
    granted = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    assert granted == {
        ("kubeflow.org", "tfjobs"): {"create", "get", "delete"},
        ("", "pods"): {"get", "list"},
        ("", "pods/log"): {"get"},
    }
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
