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

Then the tests read the built manifests for what serving depends on: a pinned image, the
models.config flags, probes on the model status endpoint, ports, workload identity, the
read-only claim, the autoscaler's target.
"""

from __future__ import annotations

import copy
import functools
import json
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

SERVING = REPO / "containers" / "serving"
KUBERNETES_VERSION = "1.31"
MODEL_NAME = "imgclf"
GRPC_PORT = 8500
REST_PORT = 8501
TF_SERVING_FOLDERS = ["base", "overlays/gcs", "overlays/pvc"]
KUSTOMIZE_FOLDERS = [*TF_SERVING_FOLDERS, "kserve"]

needs_kubectl = pytest.mark.skipif(
    shutil.which("kubectl") is None,
    reason="kubectl (with its built-in kustomize) is not installed; the built manifests "
    "cannot be produced",
)


# --- reading the manifests ---------------------------------------------------------------


@functools.cache
def _built(folder: str) -> tuple[dict, ...]:
    result = subprocess.run(
        ["kubectl", "kustomize", str(SERVING / folder)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {folder} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


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


class InvalidManifest(Exception):
    """One line naming the object, the field and the problem (jsonschema's own messages
    print the whole schema, thousands of lines for a PodSpec)."""


def validate(manifest: dict) -> None:
    """Raises InvalidManifest when the object does not match its schema, or when no schema
    knows its kind and apiVersion."""
    name = f"{manifest.get('kind')}/{manifest.get('metadata', {}).get('name')}"
    try:
        if manifest.get("kind") == "InferenceService":
            schema = inference_service_schema()
            jsonschema.Draft202012Validator(schema).validate(manifest)
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
def test_server_reads_and_polls_models_config(folder):
    flags = server_flags(built(folder))
    assert flags["model_config_file"].endswith("/models.config")
    assert flags["model_config_file_poll_wait_seconds"] == "60"
    assert flags["enable_model_warmup"] == "true"


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
def test_probes_ask_for_the_model_status_on_the_rest_port(folder):
    container = serving_container(built(folder))
    readiness, liveness = container["readinessProbe"], container["livenessProbe"]
    for probe in (readiness, liveness):
        assert probe["httpGet"] == {"path": f"/v1/models/{MODEL_NAME}", "port": REST_PORT}
    # Loading a model takes long: liveness must not restart a pod that is still loading.
    assert liveness["initialDelaySeconds"] > readiness["initialDelaySeconds"]
    assert liveness["initialDelaySeconds"] >= 60


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
    for folder in ["overlays/gcs", "overlays/pvc", "kserve"]:
        namespaces = {o["metadata"].get("namespace") for o in built(folder)}
        assert len(namespaces) == 1 and None not in namespaces, (folder, namespaces)


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
