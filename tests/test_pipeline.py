import pytest
import yaml

from pipelines import cli

STEPS = {"ingest", "validate", "preprocess", "tune", "untuned", "train", "evaluate", "push"}
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
            ]
        )
        == 0
    )
    return path


@pytest.fixture(scope="module")
def spec(compiled):
    return yaml.safe_load(compiled.read_text())


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
            assert executor["container"]["image"] == "registry.example/imgclf:1"
            assert "accelerator" not in executor["container"].get("resources", {})


def test_steps_that_must_see_fresh_state_are_not_cached(spec):
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["ingest"]["cachingOptions"] == {}
    assert tasks["evaluate"]["cachingOptions"] == {}
    assert tasks["train"]["cachingOptions"] == {"enableCache": True}


def test_steps_do_not_pip_install_at_run_time(spec):
    for executor in spec["deploymentSpec"]["executors"].values():
        assert "pip install" not in " ".join(executor["container"]["command"])


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
    assert args.beam_arg == ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def test_imgclf_backbones_lists_each_with_its_sizes_and_weights(capsys):
    from components.backbones import BACKBONES

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
