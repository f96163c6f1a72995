"""The serving manifests in ``containers/serving/``: valid objects that serve what push writes.

How validity is checked, offline:

- Core objects (Deployment, Service, ConfigMap, HorizontalPodAutoscaler,
  PodDisruptionBudget, ServiceAccount, PersistentVolumeClaim) are validated with
  ``kubernetes_validate.validate`` against the Kubernetes 1.31 OpenAPI schemas that the
  ``kubernetes-validate`` package bundles, in strict mode, where unknown fields fail. That
  covers every object ``kubectl kustomize`` builds from the base, each overlay and the
  KServe folder, and every resource file as written.
- The KServe ``InferenceService`` is a custom resource, absent from those schemas. The
  ``kserve`` package on PyPI carries its SDK's generated Python models, not the CRD's
  schema, and installing it would pull in the KServe model server and downgrade this
  project's pandas (it pins pandas<3). So it is validated against a JSON schema composed
  here: the fields KServe's v1beta1 API documents (InferenceServiceSpec,
  ComponentExtensionSpec, PredictorSpec, ModelSpec, ModelFormat; the names checked against
  the attribute maps of the kserve 0.21 SDK's generated models), with the Kubernetes types
  that KServe inlines (ObjectMeta, the PodSpec fields of the predictor, the Container fields
  of the model) taken from the same bundled strict schemas. Unknown or misspelt fields fail;
  the predictor must use ``model.modelFormat`` (the framework-named predictors such as
  ``tensorflow:`` are KServe's older form and not accepted here).

- The monitoring overlay's ServiceMonitor (Prometheus Operator) and PodMonitoring (GKE
  Managed Service for Prometheus) are custom resources too. Their CRDs are vendored byte for
  byte under ``schemas/`` (release tags, commits and checksums in ``schemas/README.md``), and
  each object is validated against its CRD's ``openAPIV3Schema``, made strict the way the API
  server is under ``kubectl apply``'s default ``--validate=strict`` (unknown fields fail) and
  with ``metadata`` checked as an ObjectMeta. The CRDs' CEL rules are not evaluated; the one
  these manifests could break (scrape timeout within the interval) is checked by a test.

Then the tests read the built manifests for what serving depends on: a pinned image, the
models.config flags (each a flag that ``tensorflow_model_server`` defines: its flag list is
parsed from the vendored ``schemas/tensorflow_model_server_main.cc``), the model name set in one
place, probes that need the model AVAILABLE, thread pools sized by the CPU limit, the poll
intervals, ports, workload identity, the read-only claim, the autoscaler's target, and monitors
that scrape what the base exposes. Each rule's docstring names the upstream source it comes
from.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import re
import shutil
import subprocess
from importlib import metadata, resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import REPO
from imgclf.components.parameters import ServingTarget

SERVING = REPO / "containers" / "serving"
VENDORED = Path(__file__).parent / "schemas"
KUBERNETES_VERSION = "1.31"
MODEL_NAME = "imgclf"
GRPC_PORT = 8500
REST_PORT = 8501
TF_SERVING_FOLDERS = ["base", "overlays/gcs", "overlays/pvc"]
MONITORING_FOLDERS = [
    "overlays/monitoring",
    "overlays/monitoring/prometheus-operator",
    "overlays/monitoring/gke-managed-prometheus",
]
KUSTOMIZE_FOLDERS = [*TF_SERVING_FOLDERS, "kserve", *MONITORING_FOLDERS]
# The kustomize literal that names the served model (base/kustomization.yaml).
MODEL_NAME_SETTING = ("serving-model", "model_name")

needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl (with its built-in kustomize) is not installed; the built manifests "
    "cannot be produced",
)


# --- reading the manifests ---------------------------------------------------------------


def kustomize(folder: Path) -> list[dict]:
    """The objects ``kubectl kustomize`` builds from any folder (a copy of the tree, too)."""
    result = subprocess.run(
        ["kubectl", "kustomize", str(folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {folder} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.cache
def _built(folder: str) -> tuple[dict, ...]:
    return tuple(kustomize(SERVING / folder))


def built(folder: str) -> list[dict]:
    """The objects ``kubectl kustomize`` builds from a folder (copies: tests may edit them)."""
    return copy.deepcopy(list(_built(folder)))


def the_one(objects: list[dict], kind: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, found {len(matches)}"
    return matches[0]


def serving_container(objects: list[dict]) -> dict:
    return the_one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def server_flags(objects: list[dict]) -> dict[str, str]:
    """``--name=value`` arguments of tensorflow_model_server as ``{name: value}``."""
    args = serving_container(objects)["args"]
    return dict(arg.removeprefix("--").split("=", 1) for arg in args)


def probes(container: dict) -> dict[str, dict]:
    return {kind: container[f"{kind}Probe"] for kind in ("startup", "readiness", "liveness")}


def container_port(container: dict, port: int | str) -> int:
    """A probe's or monitor's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    [number] = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return number


def generated_literals(kustomization: Path, name: str) -> dict[str, str]:
    """The ``key=value`` literals of one configMapGenerator entry."""
    [entry] = [
        g
        for g in yaml.safe_load(kustomization.read_text())["configMapGenerator"]
        if g["name"] == name
    ]
    return dict(literal.split("=", 1) for literal in entry["literals"])


def configured_model_name(serving: Path = SERVING) -> str:
    generator, key = MODEL_NAME_SETTING
    return generated_literals(serving / "base" / "kustomization.yaml", generator)[key]


def setting_default(settings: type, name: str):
    [declared] = [f for f in dataclasses.fields(settings) if f.name == name]
    return declared.default


def resource_files() -> list[Path]:
    """Every file a kustomization lists under ``resources`` (patches are partial objects
    and are checked through the builds instead)."""
    files = []
    for kustomization in sorted(SERVING.rglob("kustomization.yaml")):
        listed = yaml.safe_load(kustomization.read_text()).get("resources", [])
        files += [
            kustomization.parent / entry
            for entry in listed
            if (kustomization.parent / entry).is_file()
        ]
    return files


def load_file(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# --- validation --------------------------------------------------------------------------


@functools.cache
def _kubernetes_definitions() -> dict:
    schemas = resources.files("kubernetes_validate") / "kubernetes-json-schema"
    strict = schemas / f"v{KUBERNETES_VERSION}.0-local-strict" / "_definitions.json"
    return json.loads(strict.read_text())["$defs"]


_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_INTEGER = {"type": "integer"}

# KServe v1beta1 ComponentExtensionSpec: the settings every component (predictor,
# transformer, explainer) adds to its pod spec.
_COMPONENT_EXTENSION = {
    "minReplicas": {"type": "integer", "minimum": 0},
    "maxReplicas": {"type": "integer", "minimum": 0},
    "scaleTarget": _INTEGER,
    "scaleMetric": {"enum": ["cpu", "memory", "concurrency", "rps"]},
    "scaleMetricType": {"type": "string"},
    "autoScaling": {"type": "object"},
    "containerConcurrency": _INTEGER,
    "timeout": _INTEGER,
    "canaryTrafficPercent": {"type": "integer", "minimum": 0, "maximum": 100},
    "logger": {"type": "object"},
    "batcher": {"type": "object"},
    "deploymentStrategy": {"type": "object"},
    "labels": _STRING_MAP,
    "annotations": _STRING_MAP,
}

# KServe v1beta1 ModelSpec's own fields; the rest of a ModelSpec is a Container's.
_MODEL_SPEC_OWN = {
    "modelFormat": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "version": {"type": "string"}},
        "required": ["name"],
        "additionalProperties": False,
    },
    "runtime": {"type": "string"},
    "runtimeVersion": {"type": "string"},
    "protocolVersion": {"enum": ["v1", "v2", "grpc-v1", "grpc-v2"]},
    "storageUri": {"type": "string"},
    "storage": {"type": "object"},
}


@functools.cache
def inference_service_schema() -> dict:
    """KServe v1beta1 InferenceService, as far as these manifests use it (module docstring)."""
    definitions = _kubernetes_definitions()
    pod_spec = definitions["io.k8s.api.core.v1.PodSpec"]["properties"]
    container = definitions["io.k8s.api.core.v1.Container"]["properties"]
    # A PodSpec's "containers" is optional in a predictor: the model becomes the container.
    predictor = {
        "type": "object",
        "properties": {**pod_spec, **_COMPONENT_EXTENSION, "model": {"$ref": "#/$defs/model"}},
        "required": ["model"],
        "additionalProperties": False,
    }
    model = {
        "type": "object",
        "properties": {**container, **_MODEL_SPEC_OWN},
        "required": ["modelFormat"],
        "additionalProperties": False,
    }
    component = {"type": "object", "properties": {**pod_spec, **_COMPONENT_EXTENSION}}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {
            "apiVersion": {"const": "serving.kserve.io/v1beta1"},
            "kind": {"const": "InferenceService"},
            "metadata": {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"},
            "spec": {
                "type": "object",
                "properties": {
                    "predictor": {"$ref": "#/$defs/predictor"},
                    "transformer": component,
                    "explainer": component,
                },
                "required": ["predictor"],
                "additionalProperties": False,
            },
        },
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": False,
        # The Kubernetes definitions refer to each other as "#/$defs/...", so they sit here
        # under their own names.
        "$defs": {**definitions, "predictor": predictor, "model": model},
    }


# --- custom resources with vendored CRDs ---------------------------------------------------

CRD_FILES = [
    "monitoring.coreos.com_servicemonitors.yaml",
    "monitoring.googleapis.com_podmonitorings.yaml",
    # The training job's (tests/containers/test_training_job.py).
    "kubeflow.org_tfjobs.yaml",
    # Preprocess on Flink (tests/containers/test_flink_manifests.py).
    "flinkdeployments.flink.apache.org-v1.yml",
]


def _strict(schema: dict) -> dict:
    """A CRD's structural schema with unknown fields refused: the API server prunes a field
    that no ``properties`` lists (unless ``x-kubernetes-preserve-unknown-fields``), and
    strict field validation, ``kubectl apply``'s default, fails the request instead."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {k: _strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            schema["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = _strict(schema["additionalProperties"])
    if isinstance(schema.get("items"), dict):
        schema["items"] = _strict(schema["items"])
    for keyword in ("anyOf", "allOf", "oneOf"):
        if keyword in schema:
            schema[keyword] = [_strict(s) for s in schema[keyword]]
    return schema


@functools.cache
def _crd_schemas() -> dict[tuple[str, str], dict]:
    """``{(apiVersion, kind): JSON schema}`` for every served version of the vendored CRDs."""
    schemas = {}
    for name in CRD_FILES:
        crd = yaml.safe_load((VENDORED / name).read_text())
        assert crd["kind"] == "CustomResourceDefinition", name
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version["served"]:
                continue
            schema = _strict(version["schema"]["openAPIV3Schema"])
            schema["properties"]["metadata"] = {
                "$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
            }
            schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
            schema["properties"]["kind"] = {"const": kind}
            schema["required"] = sorted({*schema.get("required", ()), "apiVersion", "kind"})
            schema["$defs"] = _kubernetes_definitions()
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


class InvalidManifest(Exception):
    """One line naming the object, the field and the problem (jsonschema's own messages
    print the whole schema, thousands of lines for a PodSpec)."""


def validate(manifest: dict) -> None:
    """Raises InvalidManifest when the object does not match its schema, or when no schema
    knows its kind and apiVersion."""
    name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
    custom = _crd_schemas().get((manifest.get("apiVersion"), manifest.get("kind")))
    try:
        if manifest.get("kind") == "InferenceService":
            schema = inference_service_schema()
            jsonschema.Draft202012Validator(schema).validate(manifest)
        elif custom is not None:
            jsonschema.Draft202012Validator(custom).validate(manifest)
        else:
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    except jsonschema.ValidationError as error:
        where = ".".join(map(str, error.absolute_path)) or "(top level)"
        raise InvalidManifest(f"{name} at {where}: {error.message}") from None
    except kubernetes_validate.SchemaNotFoundError as error:
        raise InvalidManifest(f"{name}: {error.message}") from None


# --- every manifest is valid -------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("folder", KUSTOMIZE_FOLDERS)
def test_every_built_object_is_valid(folder):
    objects = built(folder)
    assert objects
    for manifest in objects:
        validate(manifest)


@pytest.mark.parametrize("path", resource_files(), ids=lambda p: str(p.relative_to(SERVING)))
def test_every_resource_file_is_valid(path):
    for manifest in load_file(path):
        validate(manifest)


def test_resource_files_cover_every_kind_served():
    kinds = {m["kind"] for path in resource_files() for m in load_file(path)}
    assert {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceAccount",
        "PersistentVolumeClaim",
        "InferenceService",
        "ServiceMonitor",
        "PodMonitoring",
    } <= kinds


# --- validation can fail -----------------------------------------------------------------


def _base_deployment() -> dict:
    return the_one(load_file(SERVING / "base" / "deployment.yaml"), "Deployment")


def _inference_service() -> dict:
    return load_file(SERVING / "kserve" / "inferenceservice.yaml")[0]


def test_validation_rejects_replicas_given_as_text():
    deployment = _base_deployment()
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(InvalidManifest, match="two"):
        validate(deployment)


def test_validation_rejects_an_unknown_field():
    deployment = _base_deployment()
    # A plausible typo: "readinesProbe" would be silently dropped by a lenient apply.
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(InvalidManifest, match="readinesProbe"):
        validate(deployment)


def test_validation_rejects_an_api_version_with_no_schema():
    deployment = _base_deployment()
    deployment["apiVersion"] = "apps/v1beta3"
    with pytest.raises(InvalidManifest, match="apps/v1beta3"):
        validate(deployment)


def test_validation_rejects_a_misspelt_inference_service_field():
    service = _inference_service()
    model = service["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")
    with pytest.raises(InvalidManifest, match="storageURI"):
        validate(service)


def test_validation_checks_kubernetes_types_inside_the_inference_service():
    service = _inference_service()
    service["spec"]["predictor"]["model"]["resources"]["requests"] = ["cpu", "1"]
    with pytest.raises(InvalidManifest, match="requests"):
        validate(service)


def test_validation_rejects_an_inference_service_without_a_model_format():
    service = _inference_service()
    del service["spec"]["predictor"]["model"]["modelFormat"]
    with pytest.raises(InvalidManifest, match="modelFormat"):
        validate(service)


def _service_monitor() -> dict:
    return load_file(SERVING / "overlays/monitoring/prometheus-operator/servicemonitor.yaml")[0]


def _pod_monitoring() -> dict:
    path = SERVING / "overlays/monitoring/gke-managed-prometheus/podmonitoring.yaml"
    return load_file(path)[0]


def test_validation_rejects_a_misspelt_service_monitor_field():
    monitor = _service_monitor()
    endpoint = monitor["spec"]["endpoints"][0]
    endpoint["timeout"] = endpoint.pop("scrapeTimeout")  # PodMonitoring's name, not this CRD's
    with pytest.raises(InvalidManifest, match="timeout"):
        validate(monitor)


def test_validation_checks_service_monitor_field_formats():
    monitor = _service_monitor()
    monitor["spec"]["endpoints"][0]["interval"] = "30 seconds"
    with pytest.raises(InvalidManifest, match="interval"):
        validate(monitor)


def test_validation_rejects_a_pod_monitoring_endpoint_without_an_interval():
    monitor = _pod_monitoring()
    del monitor["spec"]["endpoints"][0]["interval"]
    with pytest.raises(InvalidManifest, match="interval"):
        validate(monitor)


def test_validation_checks_metadata_of_custom_resources():
    monitor = _pod_monitoring()
    monitor["metadata"]["lables"] = monitor["metadata"].pop("labels")
    with pytest.raises(InvalidManifest, match="lables"):
        validate(monitor)


def test_validation_rejects_a_custom_resource_version_with_no_schema():
    monitor = _service_monitor()
    monitor["apiVersion"] = "monitoring.coreos.com/v2"
    with pytest.raises(InvalidManifest, match="monitoring.coreos.com/v2"):
        validate(monitor)


# --- what TF Serving is told -------------------------------------------------------------


def _monitoring_path() -> str:
    text = (SERVING / "base" / "monitoring.config").read_text()
    assert re.search(r"enable:\s*true", text)
    return re.search(r'path:\s*"([^"]+)"', text).group(1)


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_image_is_an_exact_tf_serving_release(folder):
    image = serving_container(built(folder))["image"]
    assert re.fullmatch(r"tensorflow/serving:\d+\.\d+\.\d+", image), image


def test_image_is_the_tensorflow_release_that_exports_the_models():
    # TF Serving X.Y runs TensorFlow X.Y; an older one may not know ops our exporter wrote.
    image = serving_container(load_file(SERVING / "base" / "deployment.yaml"))["image"]
    serving_release = image.rsplit(":", 1)[1].split(".")[:2]
    assert serving_release == metadata.version("tensorflow").split(".")[:2], image


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_server_ports_match_the_container_ports(folder):
    objects = built(folder)
    flags = server_flags(objects)
    ports = {p["name"]: p["containerPort"] for p in serving_container(objects)["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": REST_PORT}
    assert flags["port"] == str(GRPC_PORT)
    assert flags["rest_api_port"] == str(REST_PORT)


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_server_reads_and_polls_models_config(folder):
    """models.config is read, polled at the pipeline's interval, and warmed up.

    The interval must be the pipeline's ``config_poll_seconds`` default
    (components/parameters.py ``ServingTarget``): push waits that long, and a half more,
    before it moves a label, so a server polling more slowly would read the label move first.
    """
    flags = server_flags(built(folder))
    assert flags["model_config_file"].endswith("/models.config")
    poll = int(flags["model_config_file_poll_wait_seconds"])
    assert poll == setting_default(ServingTarget, "config_poll_seconds") == 60
    assert flags["enable_model_warmup"] == "true"


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_file_system_poll_is_set_explicitly_and_within_a_config_poll(folder):
    """The version-folder poll is set on purpose, not left at TF Serving's 1 second.

    TF Serving: main.cc's ``file_system_poll_wait_seconds`` ("Interval in seconds between each
    poll of the filesystem for new model version. If set to zero poll will be exactly done
    once and not periodically"), default 1 in model_servers/server.h; each poll lists every
    model's base path, which on gs:// or s3:// is a billed list call per replica. A changed
    models.config reaches the file system source through
    ``FileSystemStoragePathSource::UpdateConfig``
    (sources/storage_path/file_system_storage_path_source.cc), which stores the config and
    does not poll: only the periodic poll thread acts on it. So the poll must be at most half
    the config poll, for a config change to be acted on within the 1.5 config polls push waits
    (components/serving/server_status.py).
    """
    flags = server_flags(built(folder))
    file_system_poll = int(flags["file_system_poll_wait_seconds"])
    config_poll = int(flags["model_config_file_poll_wait_seconds"])
    # Zero polls once and never again; negative is "for testing purposes only".
    assert file_system_poll > 1
    assert file_system_poll <= config_poll / 2


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_server_may_label_versions_it_has_not_loaded_yet(folder):
    """``--allow_version_labels_for_unavailable_models=true``, for the labels push writes.

    TF Serving's g3doc/serving_config.md: "If you would like to assign a label to a version
    that is not yet loaded (for ex. by supplying both the model version and the label at
    startup time) then you must set the `--allow_version_labels_for_unavailable_models` flag
    to true, which allows new labels to be assigned to model versions that are not loaded
    yet. Please note that this applies only to new version labels (i.e. ones not assigned to a
    version currently)." Without it, a replica that starts from a models.config carrying
    ``stable``/``canary`` refuses that config until the versions load
    (``ServerCore::UpdateModelVersionLabelMap``, model_servers/server_core.cc).
    """
    assert server_flags(built(folder))["allow_version_labels_for_unavailable_models"] == "true"


# --- tensorflow_model_server's own flag list ---------------------------------------------


@functools.cache
def tf_serving_flags() -> frozenset[str]:
    """The flag names ``tensorflow_model_server`` defines: each ``tensorflow::Flag("name", ...)``
    in the vendored model_servers/main.cc (schemas/README.md names the commit)."""
    source = (VENDORED / "tensorflow_model_server_main.cc").read_text()
    flag_list = source[source.index("std::vector<tensorflow::Flag> flag_list") :]
    flag_list = flag_list[: flag_list.index("};")]
    return frozenset(re.findall(r'tensorflow::Flag\(\s*"(\w+)"', flag_list))


def test_the_vendored_flag_list_parses():
    """The parser finds main.cc's flags, split lines included (e.g.
    ``tensorflow::Flag(\\n "allow_version_labels_for_unavailable_models", ...)``)."""
    flags = tf_serving_flags()
    source = (VENDORED / "tensorflow_model_server_main.cc").read_text()
    assert len(flags) == source.count("tensorflow::Flag(") >= 40
    assert {
        "port",
        "rest_api_port",
        "model_config_file",
        "allow_version_labels_for_unavailable_models",
        "tensorflow_intra_op_parallelism",
    } <= flags
    assert "no_such_flag" not in flags


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_every_server_argument_is_a_flag_tf_serving_defines(folder):
    """Each ``--name=value`` given is in main.cc's flag list, once: ``tensorflow::Flags::Parse``
    rejects an unknown flag and the server exits printing its usage (main.cc, after
    ``flag_list``), so a misspelt flag is a crash loop, not a warning."""
    args = serving_container(built(folder))["args"]
    names = [arg.removeprefix("--").split("=", 1)[0] for arg in args]
    assert all(arg.startswith("--") and "=" in arg for arg in args), args
    assert len(names) == len(set(names)), names
    assert set(names) <= tf_serving_flags(), set(names) - tf_serving_flags()


def test_a_misspelt_flag_would_be_caught():
    assert "tensorflow_intra_op_paralellism" not in tf_serving_flags()
    assert "file_system_poll_seconds" not in tf_serving_flags()


# --- one place names the model; probes that need it AVAILABLE ----------------------------


def _kubernetes_description(definition: str, field: str) -> str:
    return _kubernetes_definitions()[definition]["properties"][field]["description"]


def test_only_command_args_and_env_expand_variables():
    """Why the model name reaches the probes through kustomize, not an env var.

    The Kubernetes API reference (the 1.31 OpenAPI that kubernetes-validate bundles): a
    Container's ``args`` and ``command`` and an EnvVar's ``value`` say "Variable references
    $(VAR_NAME) are expanded using the ... environment"; an HTTPGetAction's ``path`` says only
    "Path to access on the HTTP server.", and the kubelet sends it as written.
    """
    expands = "Variable references $(VAR_NAME) are expanded"
    container = "io.k8s.api.core.v1.Container"
    assert expands in _kubernetes_description(container, "args")
    assert expands in _kubernetes_description(container, "command")
    assert expands in _kubernetes_description("io.k8s.api.core.v1.EnvVar", "value")
    assert "$(" not in _kubernetes_description("io.k8s.api.core.v1.HTTPGetAction", "path")


def test_the_model_name_setting_is_the_pipelines_model_name():
    """The probes ask for the model push serves: ``ServingTarget.model_name``'s default
    (components/parameters.py), the name models.config gives it."""
    assert configured_model_name() == setting_default(ServingTarget, "model_name") == MODEL_NAME


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_probes_name_the_configured_model_and_no_variable(folder):
    container = serving_container(built(folder))
    name = configured_model_name()
    paths = {kind: probe["httpGet"]["path"] for kind, probe in probes(container).items()}
    assert paths == {
        "startup": f"/v1/models/{name}/metadata",
        "readiness": f"/v1/models/{name}/metadata",
        "liveness": f"/v1/models/{name}",
    }


@needs_kubectl
def test_changing_the_model_name_in_one_place_changes_every_probe(tmp_path):
    """Edit the one literal in a copy of containers/serving/: every TF Serving build's probes
    follow, and nothing still asks for the old name."""
    serving = tmp_path / "serving"
    shutil.copytree(SERVING, serving)
    kustomization = serving / "base" / "kustomization.yaml"
    text = kustomization.read_text()
    assert text.count(f"model_name={MODEL_NAME}") == 1
    kustomization.write_text(text.replace(f"model_name={MODEL_NAME}", "model_name=flowers"))
    assert configured_model_name(serving) == "flowers"
    for folder in TF_SERVING_FOLDERS:
        container = serving_container(kustomize(serving / folder))
        for kind, probe in probes(container).items():
            path = probe["httpGet"]["path"]
            assert path.split("/")[:4] == ["", "v1", "models", "flowers"], (folder, kind, path)
        assert f"/{MODEL_NAME}" not in json.dumps(probes(container)), folder


@needs_kubectl
def test_the_model_name_helper_config_map_is_not_deployed():
    for folder in TF_SERVING_FOLDERS:
        names = {o["metadata"]["name"] for o in built(folder)}
        assert MODEL_NAME_SETTING[0] not in names, folder


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_startup_and_readiness_need_a_version_available(folder):
    """Ready means the model can predict: GET /v1/models/<name>/metadata.

    TF Serving: the metadata handler (servables/tensorflow/get_model_metadata_impl.cc,
    ``SavedModelGetSignatureDef``) needs ``ServerCore::GetServableHandle``, and the manager's
    serving map holds only harnesses in state kReady (core/basic_manager.cc,
    ``ServingMap::Update``), so with no version AVAILABLE it answers NotFound, HTTP 404
    (model_servers/http_server.cc ``ToHTTPStatusCode``). The status endpoint
    GET /v1/models/<name> (model_servers/get_model_status_impl.cc) answers OK for any version
    the state monitor knows, LOADING or failed, so it may only serve as liveness. A probe
    succeeds on HTTP 200-399 (Kubernetes pod lifecycle docs, container probes).
    """
    container = serving_container(built(folder))
    flags = server_flags(built(folder))
    for kind, probe in probes(container).items():
        assert set(probe) >= {"httpGet", "periodSeconds", "timeoutSeconds", "failureThreshold"}
        port = container_port(container, probe["httpGet"]["port"])
        assert port == int(flags["rest_api_port"]) == REST_PORT, kind
        assert probe["httpGet"]["path"].startswith("/v1/models/"), kind
    for kind in ("startup", "readiness"):
        assert probes(container)[kind]["httpGet"]["path"].endswith("/metadata"), kind
    assert not probes(container)["liveness"]["httpGet"]["path"].endswith("/metadata")


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_a_slow_first_load_is_covered_by_the_startup_probe(folder):
    """Liveness must not kill a pod that is still loading its first models.

    Kubernetes (Container.startupProbe in the bundled API reference): "If specified, no other
    probes are executed until this completes successfully. If this probe fails, the Pod will
    be restarted". TF Serving opens its ports only after the first config's models are
    AVAILABLE (``ServerCore::Create`` applies it through ``ReloadConfig``, which waits in
    ``WaitUntilModelsAvailable``; server_core.cc), so the startup probe's window must cover
    reading a large SavedModel from an object store and warming it up: 15 minutes, what push
    allows a version to load (``ServingServer.load_timeout_seconds``).
    """
    assert "no other probes are executed until this completes successfully" in (
        _kubernetes_description("io.k8s.api.core.v1.Container", "startupProbe")
    )
    container = serving_container(built(folder))
    startup, readiness, liveness = probes(container).values()
    assert startup["failureThreshold"] * startup["periodSeconds"] >= 15 * 60
    # The startup probe holds the others off, so they need no guessed initial delay.
    for probe in (startup, readiness, liveness):
        assert probe.get("initialDelaySeconds", 0) == 0
    # A hung server is restarted only after a few minutes of silence, not a busy spell.
    window = liveness["failureThreshold"] * liveness["periodSeconds"]
    assert window >= 120
    assert window > readiness["failureThreshold"] * readiness["periodSeconds"]


# --- thread pools sized by the CPU limit -------------------------------------------------

THREAD_FLAGS = [
    "tensorflow_intra_op_parallelism",
    "tensorflow_inter_op_parallelism",
    "rest_api_num_threads",
]


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' expansion of ``args`` (Container.args in the bundled API reference):
    "$(VAR_NAME)" becomes the variable's value; "If a variable cannot be resolved, the
    reference in the input string will be unchanged. Double $$ are reduced to a single $"."""

    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", one, value)


def cpu_millis(quantity: str) -> int:
    if quantity.endswith("m"):
        return int(quantity[:-1])
    return round(float(quantity) * 1000)


def downward_cpu(selector: dict, container: dict) -> str:
    """What the kubelet puts in an env var from ``resourceFieldRef: limits.cpu``: Kubernetes
    pkg/api/v1/resource/helpers.go, ``convertResourceCPUToString``:
    ``ceil(cpu.MilliValue() / divisor.MilliValue())``, divisor "1" when unset."""
    assert selector["resource"] == "limits.cpu"
    divisor = cpu_millis(str(selector.get("divisor", "1")))
    limit = cpu_millis(str(container["resources"]["limits"]["cpu"]))
    return str(math.ceil(limit / divisor))


def expanded_flags(container: dict) -> dict[str, str]:
    env = {}
    for variable in container.get("env", []):
        if "value" in variable:
            env[variable["name"]] = expand(variable["value"], env)
        else:
            selector = variable["valueFrom"]["resourceFieldRef"]
            assert selector.get("containerName", container["name"]) == container["name"]
            env[variable["name"]] = downward_cpu(selector, container)
    args = [expand(arg, env) for arg in container["args"]]
    return dict(arg.removeprefix("--").split("=", 1) for arg in args)


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_thread_pools_come_from_the_cpu_limit_through_the_downward_api(folder):
    """intra-op, inter-op and REST threads are ``$(VAR)`` of an env var that the Downward API
    fills from this container's ``limits.cpu``, in whole CPUs (divisor "1"; Kubernetes accepts
    only "1m" and "1" for CPU, pkg/apis/core/validation ``validContainerResourceDivisorForCPU``).

    TF Serving's main.cc: ``tensorflow_intra_op_parallelism`` ("Number of threads to use to
    parallelize the execution of an individual op"), ``tensorflow_inter_op_parallelism``
    ("Controls the number of operators that can be executed simultaneously"), both
    "Auto-configured by default"; ``rest_api_num_threads`` ("If not set, will be auto set
    based on number of CPUs": 4 per CPU, model_servers/server.h). The auto values count the
    CPUs of the node (TensorFlow's ``port::NumSchedulableCPUs`` reads sched_getaffinity), not
    the container's CFS quota.
    """
    container = serving_container(built(folder))
    flags = server_flags(built(folder))
    [variable] = {flags[name] for name in THREAD_FLAGS}
    name = re.fullmatch(r"\$\((\w+)\)", variable).group(1)
    [definition] = [e for e in container["env"] if e["name"] == name]
    selector = definition["valueFrom"]["resourceFieldRef"]
    assert selector["resource"] == "limits.cpu"
    assert selector.get("containerName", container["name"]) == container["name"]
    assert str(selector.get("divisor", "1")) == "1"
    limit = math.ceil(cpu_millis(container["resources"]["limits"]["cpu"]) / 1000)
    expanded = expanded_flags(container)
    assert [expanded[flag] for flag in THREAD_FLAGS] == [str(limit)] * 3


@needs_kubectl
@pytest.mark.parametrize(("limit", "threads"), [("500m", 1), ("1", 1), ("1500m", 2), ("8", 8)])
def test_changing_the_cpu_limit_changes_every_thread_pool(limit, threads):
    """The limit is the one number: no thread count is written beside it."""
    container = serving_container(built("base"))
    container["resources"]["limits"]["cpu"] = limit
    expanded = expanded_flags(container)
    assert [int(expanded[flag]) for flag in THREAD_FLAGS] == [threads] * 3


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_session_parallelism_is_not_set_beside_intra_and_inter_op(folder):
    """TF Serving model_servers/server.cc (``BuildAndStart``): with
    ``tensorflow_session_parallelism`` and both intra- and inter-op parallelism set, "You
    cannot configure all." and the server does not start."""
    flags = server_flags(built(folder))
    assert "tensorflow_session_parallelism" not in flags
    # Without a platform config file, which would make main.cc ignore all three.
    assert "platform_config_file" not in flags


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_monitoring_config_is_mounted_where_the_flag_points(folder):
    objects = built(folder)
    pod = the_one(objects, "Deployment")["spec"]["template"]["spec"]
    flag = server_flags(objects)["monitoring_config_file"]
    mount = next(
        m for m in serving_container(objects)["volumeMounts"] if flag.startswith(m["mountPath"])
    )
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    config_map = next(
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == volume["configMap"]["name"]
    )
    key = flag.removeprefix(mount["mountPath"]).lstrip("/")
    assert f'path: "{_monitoring_path()}"' in config_map["data"][key]


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_service_exposes_grpc_and_rest_and_tells_prometheus_where_to_scrape(folder):
    service = the_one(built(folder), "Service")
    ports = {p["name"]: p["port"] for p in service["spec"]["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": REST_PORT}
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(REST_PORT)
    assert annotations["prometheus.io/path"] == _monitoring_path()


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_service_and_disruption_budget_select_the_serving_pods(folder):
    objects = built(folder)
    pod_labels = the_one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service_selector = the_one(objects, "Service")["spec"]["selector"]
    budget_selector = the_one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    assert service_selector.items() <= pod_labels.items()
    assert budget_selector.items() <= pod_labels.items()


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_autoscaler_scales_the_deployment_on_cpu(folder):
    objects = built(folder)
    deployment = the_one(objects, "Deployment")
    autoscaler = the_one(objects, "HorizontalPodAutoscaler")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilisation is relative to the request, so the container must have one.
    assert serving_container(objects)["resources"]["requests"]["cpu"]
    # A replica count in the Deployment would fight the autoscaler on every apply.
    assert "replicas" not in deployment["spec"]


@needs_kubectl
@pytest.mark.parametrize("folder", TF_SERVING_FOLDERS)
def test_pods_run_as_non_root_without_privileges(folder):
    objects = built(folder)
    pod = the_one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1000
    container = serving_container(objects)
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    limits = container["resources"]["limits"]
    assert limits["cpu"] and limits["memory"]


# --- the overlays: where the models come from --------------------------------------------


def _mounts_at(objects: list[dict], path: str) -> list[dict]:
    return [m for m in serving_container(objects)["volumeMounts"] if m["mountPath"] == path]


def _no_key_material(objects: list[dict]) -> None:
    assert not [o for o in objects if o["kind"] == "Secret"]
    text = yaml.safe_dump_all(objects)
    for marker in ("GOOGLE_APPLICATION_CREDENTIALS", "private_key", "BEGIN PRIVATE KEY"):
        assert marker not in text


def _workload_identity_account(objects: list[dict], account_name: str) -> str:
    account = next(
        o
        for o in objects
        if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == account_name
    )
    google_account = account["metadata"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert re.fullmatch(r"[a-z][\w-]*@[\w-]+\.iam\.gserviceaccount\.com", google_account)
    return google_account


@needs_kubectl
def test_gcs_overlay_reads_models_config_from_gcs():
    objects = built("overlays/gcs")
    assert re.fullmatch(r"gs://[^/]+/.+/models\.config", server_flags(objects)["model_config_file"])
    # Nothing is mounted at /models: a mount there would hide a misconfigured gs:// path.
    assert not _mounts_at(objects, "/models")


@needs_kubectl
def test_gcs_overlay_authenticates_by_workload_identity_only():
    objects = built("overlays/gcs")
    pod = the_one(objects, "Deployment")["spec"]["template"]["spec"]
    _workload_identity_account(objects, pod["serviceAccountName"])
    _no_key_material(objects)
    # The bucket placeholder is replaced from one literal, so the helper ConfigMap that
    # holds it must not be deployed.
    assert not [o for o in objects if o["metadata"]["name"] == "gcs-location"]


@needs_kubectl
def test_pvc_overlay_mounts_the_claim_read_only_at_the_serving_root():
    objects = built("overlays/pvc")
    claim = the_one(objects, "PersistentVolumeClaim")
    assert server_flags(objects)["model_config_file"] == "/models/models.config"
    [mount] = _mounts_at(objects, "/models")
    assert mount["readOnly"] is True
    pod = the_one(objects, "Deployment")["spec"]["template"]["spec"]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume == {
        "name": mount["name"],
        "persistentVolumeClaim": {"claimName": claim["metadata"]["name"], "readOnly": True},
    }
    # Push writes while every replica reads, from any node.
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]


@needs_kubectl
def test_every_overlay_object_lands_in_one_namespace():
    for folder in ["overlays/gcs", "overlays/pvc", "kserve", *MONITORING_FOLDERS]:
        namespaces = {o["metadata"].get("namespace") for o in built(folder)}
        assert len(namespaces) == 1 and None not in namespaces, (folder, namespaces)


# --- the monitoring overlay: scraping what the base exposes -------------------------------


def _monitor(kind: str) -> dict:
    return the_one(built("overlays/monitoring"), kind)


def _duration_seconds(text: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)(ms|h|m|s)", text)
    assert "".join(n + u for n, u in parts) == text, text
    return sum(int(n) * units[u] for n, u in parts)


@needs_kubectl
def test_each_monitoring_folder_builds_only_its_own_kind():
    """A cluster has the Prometheus Operator's CRDs or GKE's, seldom both; each folder applies
    alone."""
    assert [o["kind"] for o in built("overlays/monitoring/prometheus-operator")] == [
        "ServiceMonitor"
    ]
    assert [o["kind"] for o in built("overlays/monitoring/gke-managed-prometheus")] == [
        "PodMonitoring"
    ]
    assert sorted(o["kind"] for o in built("overlays/monitoring")) == [
        "PodMonitoring",
        "ServiceMonitor",
    ]


@needs_kubectl
@pytest.mark.parametrize("folder", ["overlays/gcs", "overlays/pvc"])
def test_service_monitor_scrapes_the_service_rest_port_at_the_metrics_path(folder):
    """Prometheus Operator's ServiceMonitor CRD (vendored): ``spec.selector`` "Label selector
    to select the Kubernetes `Endpoints` objects to scrape" in the monitor's namespace when no
    ``namespaceSelector`` is given; ``endpoints[].port`` is the name of a Service port;
    ``path`` the HTTP path. TF Serving serves the path that base/monitoring.config enables, on
    the REST port (model_servers/http_server.cc, the Prometheus handler registered with the
    REST server)."""
    objects = built(folder)
    service = the_one(objects, "Service")
    monitor = _monitor("ServiceMonitor")
    assert monitor["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert "namespaceSelector" not in monitor["spec"]
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    [port] = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
    assert port["port"] == REST_PORT
    container = serving_container(objects)
    assert container_port(container, port["targetPort"]) == REST_PORT
    assert endpoint["path"] == _monitoring_path()
    assert _duration_seconds(endpoint["scrapeTimeout"]) < _duration_seconds(endpoint["interval"])


@needs_kubectl
@pytest.mark.parametrize("folder", ["overlays/gcs", "overlays/pvc"])
def test_pod_monitoring_scrapes_the_pods_rest_port_at_the_metrics_path(folder):
    """GKE Managed Prometheus' PodMonitoring CRD (vendored): "PodMonitoring defines monitoring
    for a set of pods, scoped to pods within the PodMonitoring's namespace"; ``endpoints[].port``
    is the "Name or number of the port to scrape" (by name, so the container label is set);
    the CRD's CEL rule ``!has(self.timeout) || self.timeout <= self.interval``, which the
    schema check does not evaluate, is checked here."""
    objects = built(folder)
    pods = the_one(objects, "Deployment")["spec"]["template"]
    monitor = _monitor("PodMonitoring")
    assert (
        monitor["metadata"]["namespace"] == the_one(objects, "Deployment")["metadata"]["namespace"]
    )
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= pods["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert isinstance(endpoint["port"], str)
    assert container_port(serving_container(objects), endpoint["port"]) == REST_PORT
    assert endpoint["path"] == _monitoring_path()
    assert _duration_seconds(endpoint["timeout"]) <= _duration_seconds(endpoint["interval"])


@needs_kubectl
def test_monitors_select_only_the_serving_pods_and_service():
    """Selectors are the base's own labels; kustomize's ``labels`` on the monitoring folders
    must not have added the monitor's instance labels to them."""
    for kind in ("ServiceMonitor", "PodMonitoring"):
        assert _monitor(kind)["spec"]["selector"] == {
            "matchLabels": {
                "app.kubernetes.io/name": "tfserving",
                "app.kubernetes.io/part-of": "imgclf",
            }
        }


def test_vendored_files_match_their_recorded_checksums():
    """schemas/README.md records each vendored file's upstream tag, commit and sha256; a file
    edited by hand (or replaced without updating the record) fails here."""
    recorded = dict(
        re.findall(
            r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", (VENDORED / "README.md").read_text(), re.M
        )
    )
    assert set(recorded) == {
        *CRD_FILES,
        "tensorflow_model_server_main.cc",
        "tensorflow_types.go",
        "common_types.go",
    }
    for name, digest in recorded.items():
        assert hashlib.sha256((VENDORED / name).read_bytes()).hexdigest() == digest, name


# --- the KServe alternative --------------------------------------------------------------


@needs_kubectl
def test_kserve_serves_the_pushed_model_from_gcs_with_tf_serving():
    objects = built("kserve")
    service = the_one(objects, "InferenceService")
    # The model is served under the InferenceService's name: the same REST paths as above.
    assert service["metadata"]["name"] == MODEL_NAME
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"]["name"] == "tensorflow"
    assert re.fullmatch(rf"gs://[^/]+/.+/{MODEL_NAME}", model["storageUri"])
    assert model["resources"]["requests"] and model["resources"]["limits"]
    # The same TF Serving release as the plain deployment.
    base_tag = serving_container(built("base"))["image"].rsplit(":", 1)[1]
    assert model["runtimeVersion"] == base_tag
    _workload_identity_account(objects, predictor["serviceAccountName"])
    _no_key_material(objects)
