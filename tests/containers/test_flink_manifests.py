"""``containers/beam/flink.yaml``: preprocess on a Flink session cluster (the Flink Kubernetes
Operator's FlinkDeployment, validated against its vendored release-1.15.0 CRD) through Beam's
Flink job server, with Beam's worker pool in the step image beside every TaskManager; and the
versions and addresses that must agree across them."""

from __future__ import annotations

from importlib import metadata

import pytest
import yaml
from beam_options import FLINK_WORKER_POOL
from test_serving_manifests import validate

from conftest import REPO
from imgclf.pipelines.cluster import ClusterSettings

MANIFEST = REPO / "containers" / "beam" / "flink.yaml"


@pytest.fixture(scope="module")
def objects() -> dict[str, dict]:
    return {o["kind"]: o for o in yaml.safe_load_all(MANIFEST.read_text())}


def _option(name: str) -> str:
    return next(a.split("=", 1)[1] for a in FLINK_WORKER_POOL if a.startswith(f"--{name}="))


def test_every_object_is_valid(objects):
    assert set(objects) == {"FlinkDeployment", "Deployment", "Service"}
    for manifest in objects.values():
        validate(manifest)


def _worker_pool(objects) -> dict:
    containers = objects["FlinkDeployment"]["spec"]["taskManager"]["podTemplate"]["spec"]
    return next(c for c in containers["containers"] if c["name"] == "beam-worker-pool")


def test_the_worker_pool_runs_the_step_image_where_the_options_send_the_workers(objects):
    """--environment_type=EXTERNAL --environment_config=localhost:PORT reaches the worker pool
    in the TaskManager's own pod (apache_beam/runners/worker/worker_pool_main.py, whose
    --service_port is the port it binds), which runs the step image of cluster.yaml."""
    pool = _worker_pool(objects)
    assert pool["image"] == ClusterSettings.load().step_image
    assert pool["command"] == ["python", "-m", "apache_beam.runners.worker.worker_pool_main"]
    port = int(_option("environment_config").rsplit(":", 1)[1])
    assert pool["args"] == [f"--service_port={port}"]
    assert [p["containerPort"] for p in pool["ports"]] == [port]


def test_the_job_server_matches_beam_flink_and_the_options(objects):
    """The job server image is Beam's for the FlinkDeployment's Flink version at the Beam
    version installed (a Flink version Beam publishes: FlinkRunnerOptions), it submits to the
    session cluster's REST service (Flink names it <cluster id>-rest: flink-kubernetes,
    ExternalServiceDecorator), and the Service exposes the ports the options name."""
    from apache_beam.options.pipeline_options import FlinkRunnerOptions

    flink = objects["FlinkDeployment"]
    flink_version = flink["spec"]["flinkVersion"].removeprefix("v").replace("_", ".")
    assert flink_version in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    assert flink["spec"]["image"] == f"flink:{flink_version}"
    (server,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    beam = metadata.version("apache-beam")
    assert server["image"] == f"apache/beam_flink{flink_version}_job_server:{beam}"
    assert f"--flink-master={flink['metadata']['name']}-rest:8081" in server["args"]
    service = objects["Service"]
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    for option, port in (("job_endpoint", "job"), ("artifact_endpoint", "artifact")):
        host, number = _option(option).split(":")
        assert host == service["metadata"]["name"] and int(number) == ports[port]
    selector = objects["Deployment"]["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
