import importlib.metadata
import re

import pytest
import yaml

from imgclf.components import kfp_steps
from imgclf.pipelines import cli
from imgclf.pipelines.cluster import DEFAULTS_FILE, ClusterSettings

STEPS = {
    "preflight",
    "fingerprint",
    "ingest",
    "validate",
    "preprocess",
    "tune",
    "untuned",
    "train",
    "evaluate",
    "push",
}
GPU_STEPS = {"exec-tune", "exec-train"}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    path = tmp_path_factory.mktemp("build") / "pipeline.yaml"
    assert (
        cli.main(
            [
                "compile",
                "-o",
                str(path),
                "--image",
                "registry.example/imgclf:1",
                "--gpu-image",
                "registry.example/imgclf-gpu:1",
                "--light-image",
                "registry.example/imgclf-light:1",
            ]
        )
        == 0
    )
    return path


@pytest.fixture(scope="module")
def documents(compiled):
    """The pipeline spec, then the Kubernetes platform spec (kfp-kubernetes settings)."""
    return list(yaml.safe_load_all(compiled.read_text()))


@pytest.fixture(scope="module")
def spec(documents):
    return documents[0]


@pytest.fixture(scope="module")
def kubernetes(documents):
    return documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _condition_of(spec, step: str) -> tuple[str, dict]:
    """The condition task (in the root DAG or a branches DAG) whose DAG runs ``step``."""
    for component in [spec["root"], *spec["components"].values()]:
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            inner = spec["components"][task["componentRef"]["name"]].get("dag", {})
            if "triggerPolicy" in task and step in inner.get("tasks", {}):
                return name, task
    raise AssertionError(f"no condition runs {step}")


def test_the_dag_has_its_steps_in_order(spec):
    root = spec["root"]["dag"]["tasks"]
    steps = {
        name
        for component in [spec["root"], *spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
        if "executorLabel" in spec["components"][task["componentRef"]["name"]]
    }
    assert steps == STEPS
    upstream = {name: set(task.get("dependentTasks", [])) for name, task in root.items()}
    assert upstream["preflight"] == set()
    assert upstream["fingerprint"] == {"preflight"}
    assert upstream["ingest"] == {"fingerprint"}
    assert upstream["validate"] == {"ingest"}
    assert upstream["preprocess"] == {"validate"}
    assert upstream["train"] == {"preprocess", "condition-branches-1"}
    assert upstream["evaluate"] == {"train", "validate"}


def test_push_runs_only_when_evaluate_blesses(spec):
    _, condition = _condition_of(spec, "push")
    assert condition["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    )


def test_tune_runs_only_when_trials_are_asked_for_and_train_takes_either_answer(spec):
    _, tuning = _condition_of(spec, "tune")
    assert tuning["triggerPolicy"]["condition"] == (
        "int(inputs.parameter_values['pipelinechannel--tune_trials']) > 0"
    )
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["outputs"]["parameters"]
    selectors = next(iter(branches.values()))["valueFromOneof"]["parameterSelectors"]
    assert [s["outputParameterKey"] for s in selectors] == [
        "pipelinechannel--tune-Output",
        "pipelinechannel--untuned-Output",
    ]
    train_input = spec["root"]["dag"]["tasks"]["train"]["inputs"]["parameters"]["hyperparameters"]
    assert train_input["taskOutputParameter"]["producerTask"] == "condition-branches-1"


def test_train_requests_a_gpu_in_the_gpu_image(spec):
    executors = spec["deploymentSpec"]["executors"]
    train = executors["exec-train"]["container"]
    assert train["image"] == "registry.example/imgclf-gpu:1"
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert train["resources"]["accelerator"]["resourceCount"] == "1"
    assert executors["exec-tune"]["container"]["resources"] == train["resources"]
    for name, executor in executors.items():
        if name not in GPU_STEPS:
            light = name == "exec-untuned"
            expected = "registry.example/imgclf-light:1" if light else "registry.example/imgclf:1"
            assert executor["container"]["image"] == expected
            assert "accelerator" not in executor["container"].get("resources", {})


def test_the_step_that_returns_no_hyperparameters_imports_nothing_the_light_image_lacks(spec):
    """untuned runs in the light image (kfp alone): its code must need nothing else."""
    (source,) = [
        part
        for part in spec["deploymentSpec"]["executors"]["exec-untuned"]["container"]["command"]
        if "def untuned" in part
    ]
    body = source[source.index("def untuned") :]
    assert "import" not in body


def test_steps_do_not_pip_install_at_run_time(spec):
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "pip install" not in " ".join(executor["container"]["command"])


def test_no_step_body_imports_the_module_that_defines_the_components(spec):
    """Steps run with ``_KFP_RUNTIME=true``, under which ``kfp.dsl`` has no ``component``
    (kfp/dsl/__init__.py: the decorator is imported only when ``_KFP_RUNTIME`` is not
    "true"), so importing kfp_steps inside a step fails before the step starts."""
    for name, executor in spec["deploymentSpec"]["executors"].items():
        assert "kfp_steps" not in " ".join(executor["container"]["command"]), name


def test_the_yaml_loads_back_with_the_kfp_sdk(compiled):
    from kfp import components

    pipeline = components.load_component_from_file(str(compiled))
    assert pipeline.name == "imgclf"
    assert "serving_root" in pipeline.component_spec.inputs
    assert pipeline.component_spec.inputs["data_uri"].default == "sample:digits"


def test_beam_options_pass_through_the_cli():
    args = cli._parser().parse_args(
        [
            "run",
            "--beam-arg=--direct_running_mode=multi_processing",
            "--beam-arg=--direct_num_workers=2",
        ]
    )
    assert args.beam_pipeline_args == [
        "--direct_running_mode=multi_processing",
        "--direct_num_workers=2",
    ]


def test_imgclf_backbones_lists_each_with_its_sizes_and_weights(capsys):
    from imgclf.components.model.backbones import BACKBONES

    assert cli.main(["backbones"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["backbone", "default", "size"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(BACKBONES)
    assert rows["inceptionv3"].split()[1:3] == ["299", "75"]
    assert "none: --weights none|PATH" in rows["alexnet"]
    assert rows["mobilenet"].split()[3] == "yes"  # alpha applies


def test_train_writes_checkpoints_tensorboard_logs_and_curves_as_artifacts(spec):
    outputs = spec["components"]["comp-train"]["outputDefinitions"]["artifacts"]
    assert {"checkpoints", "tensorboard_logs", "training_curves", "model"} <= set(outputs)
    assert outputs["training_curves"]["artifactType"]["schemaTitle"] == "system.HTML"


def test_gpu_steps_land_on_the_gpu_pool_with_a_memory_backed_shm(kubernetes):
    for executor in GPU_STEPS:
        placement = kubernetes[executor]
        assert placement["nodeSelector"]["labels"] == {"nvidia.com/gpu.present": "true"}
        assert placement["tolerations"] == [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
        assert placement["emptyDirMounts"] == [
            {"volumeName": "shm", "mountPath": "/dev/shm", "medium": "Memory", "sizeLimit": "2Gi"}
        ]
    for executor in set(kubernetes) - GPU_STEPS:
        assert not {"nodeSelector", "tolerations", "emptyDirMounts"} & set(kubernetes[executor])


def test_every_step_has_requests_limits_and_a_deadline(spec, kubernetes):
    settings = ClusterSettings.load()
    for step in STEPS:
        resources = spec["deploymentSpec"]["executors"][f"exec-{step}"]["container"]["resources"]
        wanted = settings.resources[step]
        assert resources["resourceCpuRequest"] == wanted.cpu
        assert resources["resourceCpuLimit"] == wanted.cpu_limit
        assert resources["resourceMemoryRequest"] == wanted.memory
        assert resources["resourceMemoryLimit"] == wanted.memory_limit
        deadline = kubernetes[f"exec-{step}"]["activeDeadlineSeconds"]
        assert int(deadline) == settings.timeouts_seconds[step]


def test_gpu_steps_retry_with_backoff_and_the_others_fail_fast(spec):
    """The IR's RetryPolicy holds these four fields and no more (api/v2alpha1/
    pipeline_spec.proto:582-597, KFP 2.17.0), and the Argo compiler turns them into a
    retryStrategy of limit and backoff without a retryPolicy (backend/src/v2/compiler/
    argocompiler/container.go:583-587): Argo's OnFailure, or the workflow controller's
    templateDefaults, decide whether a deleted or lost pod is retried (README, "Retries and
    lost pods")."""
    tasks = _all_tasks(spec)
    for step in ("train", "tune"):
        assert tasks[step]["retryPolicy"] == {
            "maxRetryCount": 3,
            "backoffDuration": "60s",
            "backoffFactor": 2.0,
            "backoffMaxDuration": "3600s",
        }
    assert not [step for step in STEPS - {"train", "tune"} if "retryPolicy" in tasks[step]]


def test_every_retried_step_runs_after_the_preflight(spec):
    """Argo retries a failed main container whatever its exit code (retryPolicy OnFailure, its
    default: argo-workflows docs/retries.md), and KFP's compiler gives the retried steps no
    retryPolicy or expression to tell a permanent failure by (backend/src/v2/compiler/
    argocompiler/container.go, getTaskRetryStrategyFromInput: limit and backoff only). So the
    failures a retry cannot mend must be found before them: by the preflight, which has no
    retries and which every other step waits for."""
    root = spec["root"]["dag"]["tasks"]
    upstream = {name: set(task.get("dependentTasks", [])) for name, task in root.items()}

    def runs_after_preflight(step: str) -> bool:
        return "preflight" in upstream[step] or any(map(runs_after_preflight, upstream[step]))

    assert "retryPolicy" not in root["preflight"]
    assert all(runs_after_preflight(step) for step in set(root) - {"preflight"})
    assert root["preflight"]["cachingOptions"].get("enableCache") is not True


def test_caching_is_on_for_deterministic_steps_only(spec):
    tasks = _all_tasks(spec)
    cached = {step for step in STEPS if tasks[step]["cachingOptions"].get("enableCache")}
    # The fingerprint is taken every run; everything from ingest through train is cached on it.
    assert cached == {"ingest", "validate", "preprocess", "untuned", "tune", "train"}


def test_the_fingerprint_reads_the_data_as_of_the_snapshot_or_the_scheduled_time(spec):
    """The schedule time is KFP's placeholder, given to the fingerprint task as its own
    argument: the open-source driver resolves it from 2.17.0 only in that form, from the
    Workflow's workflowEpoch label (backend/src/v2/cmd/driver/main.go:262-303, PR #13474;
    kubeflow/pipelines#12616 for older backends), while the [[ScheduledTime]] macros are not
    substituted into a v2 recurring run's pinned pipeline version (#12494). Ingest does not take
    it, so that its cache key stays the same from night to night."""
    tasks = spec["root"]["dag"]["tasks"]
    fingerprint = tasks["fingerprint"]["inputs"]["parameters"]
    settings = fingerprint["settings"]["runtimeValue"]["constant"]
    assert settings["data_snapshot"] == "{{$.inputs.parameters['pipelinechannel--data_snapshot']}}"
    assert fingerprint["scheduled_at"] == {
        "runtimeValue": {"constant": "{{$.pipeline_job_schedule_time_utc}}"}
    }
    assert spec["root"]["inputDefinitions"]["parameters"]["data_snapshot"]["defaultValue"] == ""
    ingest = tasks["ingest"]["inputs"]["parameters"]
    assert "scheduled_at" not in ingest
    assert ingest["data_snapshot"] == {
        "taskOutputParameter": {"outputParameterKey": "snapshot", "producerTask": "fingerprint"}
    }


def test_images_and_models_pass_as_artifacts_under_the_pipeline_root_not_by_value(spec):
    outputs = {
        step: spec["components"][f"comp-{step}"]["outputDefinitions"]
        for step in ("preprocess", "train")
    }
    assert set(outputs["preprocess"]) == {"artifacts"}
    assert outputs["preprocess"]["artifacts"]["examples"]["artifactType"]["schemaTitle"] == (
        "system.Dataset"
    )
    assert outputs["train"]["artifacts"]["model"]["artifactType"]["schemaTitle"] == ("system.Model")


def test_compile_flags_override_the_config_file(tmp_path):
    path = tmp_path / "pipeline.yaml"
    flags = [
        *("--gpus", "2", "--accelerator", "nvidia.com/gpu"),
        *("--gpu-node-selector", "pool=a100", "--gpu-toleration", "dedicated=ml:NoExecute"),
        *("--shm-size", "4Gi", "--resources", "train=6,24Gi", "--retries", "5"),
        *("--timeout", "train=3600", "--gcp-secret", "imgclf-gcp-key"),
    ]
    assert cli.main(["compile", "-o", str(path), *flags]) == 0
    spec, platform = yaml.safe_load_all(path.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["resources"]["accelerator"]["resourceCount"] == "2"
    assert train["resources"]["resourceCpuLimit"] == "6"
    assert train["resources"]["resourceMemoryRequest"] == "24Gi"
    assert executors["exec-train"]["nodeSelector"]["labels"] == {"pool": "a100"}
    assert executors["exec-train"]["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoExecute"}
    ]
    assert executors["exec-train"]["emptyDirMounts"][0]["sizeLimit"] == "4Gi"
    assert executors["exec-train"]["activeDeadlineSeconds"] == "3600"
    assert _all_tasks(spec)["train"]["retryPolicy"]["maxRetryCount"] == 5
    # The key is mounted from the Secret by name; only its path is in the YAML.
    for step in STEPS:
        mounts = executors[f"exec-{step}"]["secretAsVolume"]
        assert [(m["secretName"], m["mountPath"]) for m in mounts] == [
            ("imgclf-gcp-key", "/var/secrets/google")
        ]
        env = spec["deploymentSpec"]["executors"][f"exec-{step}"]["container"]["env"]
        assert {
            "name": "GOOGLE_APPLICATION_CREDENTIALS",
            "value": "/var/secrets/google/key.json",
        } in env


def test_zero_gpus_compiles_the_gpu_steps_for_cpu_nodes(tmp_path):
    path = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", "-o", str(path), "--gpus", "0"]) == 0
    spec, platform = yaml.safe_load_all(path.read_text())
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert "accelerator" not in train["resources"]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "nodeSelector" not in executors["exec-train"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--resources", "trian=1,1Gi"], "Unknown step(s) trian"),
        (["--timeout", "train"], "Expected KEY=VALUE"),
        (["--gpu-toleration", ":NoSchedule"], "A toleration needs a key"),
        (["--gpus", "-1"], "GPU count must be 0 or more"),
    ],
)
def test_bad_compile_settings_are_named(tmp_path, flags, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        cli.main(["compile", "-o", str(tmp_path / "p.yaml"), *flags])


def test_a_config_file_replaces_the_defaults(tmp_path):
    config = yaml.safe_load(DEFAULTS_FILE.read_text())
    config["presets"]["mine"] = {"node_selector": {"karpenter.sh/nodepool": "gpu"}}
    config["preset"] = "mine"
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(config))
    path = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", "-o", str(path), "--config", str(tmp_path / "cluster.yaml")]) == 0
    _, platform = yaml.safe_load_all(path.read_text())
    train = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train"]
    assert train["nodeSelector"]["labels"] == {"karpenter.sh/nodepool": "gpu"}
    assert "tolerations" not in train


def test_the_default_images_are_this_release():
    version = importlib.metadata.version("imgclf")
    settings = ClusterSettings.load()
    assert settings.step_image == kfp_steps.STEP_IMAGE
    assert settings.step_image.endswith(f":{version}")
    assert settings.gpu_image.endswith(f"-gpu:{version}")
    assert settings.light_image.endswith(f"-light:{version}")


def _all_tasks(spec) -> dict:
    return {
        name: task
        for component in [spec["root"], *spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
    }


def test_a_serving_claim_is_mounted_where_serving_root_is_read_and_written(tmp_path, kubernetes):
    path = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", "-o", str(path), "--serving-claim", "imgclf-models"]) == 0
    _, platform = yaml.safe_load_all(path.read_text())
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    mounted = {
        name: [
            (m["pvcNameParameter"]["runtimeValue"]["constant"], m["mountPath"])
            for m in executor.get("pvcMount", [])
        ]
        for name, executor in executors.items()
    }
    assert {name for name, mounts in mounted.items() if mounts} == {
        "exec-preflight",
        "exec-validate",
        "exec-evaluate",
        "exec-push",
    }
    assert mounted["exec-push"] == [("imgclf-models", "/models")]
    assert not any("pvcMount" in executor for executor in kubernetes.values())


def _compiled(tmp_path, *flags) -> tuple[dict, dict]:
    path = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", "-o", str(path), *flags]) == 0
    spec, platform = yaml.safe_load_all(path.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_a_data_claim_is_mounted_in_every_step_that_reads_the_images(tmp_path):
    _, executors = _compiled(tmp_path, "--data-claim", "photos")
    mounted = {
        name
        for name, executor in executors.items()
        if ("photos", "/data")
        in [(m["constant"], m["mountPath"]) for m in executor.get("pvcMount", [])]
    }
    assert mounted == {
        f"exec-{step}"
        for step in (
            "preflight",
            "fingerprint",
            "ingest",
            "validate",
            "preprocess",
            "evaluate",
            "push",
        )
    }


def test_every_step_reaches_minio_with_kubeflows_own_secret_and_never_its_keys(tmp_path):
    """Kubeflow's launcher reads its MinIO keys from the Secret mlpipeline-minio-artifact,
    keys ``accesskey`` and ``secretkey`` (kubeflow/pipelines backend/src/v2/config/env.go,
    ``minioArtifactSecretName``, ``minioArtifactAccessKeyKey``, ``minioArtifactSecretKeyKey``);
    botocore, under s3fs, reads ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` (boto3's configuration guide, "Environment variables")."""
    endpoint = "http://minio-service.kubeflow:9000"
    spec, executors = _compiled(
        tmp_path, "--s3-endpoint", endpoint, "--s3-secret", "mlpipeline-minio-artifact"
    )
    for name, executor in spec["deploymentSpec"]["executors"].items():
        env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env["AWS_ENDPOINT_URL"] == endpoint, name
        (secret,) = executors[name]["secretAsEnv"]
        assert secret["secretName"] == "mlpipeline-minio-artifact"
        assert {k["secretKey"]: k["envVar"] for k in secret["keyToEnv"]} == {
            "accesskey": "AWS_ACCESS_KEY_ID",
            "secretkey": "AWS_SECRET_ACCESS_KEY",
        }
    text = (tmp_path / "pipeline.yaml").read_text()
    assert "AWS_SECRET_ACCESS_KEY" in text and "minioadmin" not in text


def test_each_step_names_its_own_image_for_remote_beam_workers(tmp_path):
    spec, _ = _compiled(tmp_path, "--image", "registry.example/imgclf:9")
    executors = spec["deploymentSpec"]["executors"]
    container = executors["exec-preprocess"]["container"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["IMGCLF_STEP_IMAGE"] == container["image"] == "registry.example/imgclf:9"
