"""One declaration per parameter, and every place that shows it agrees: the compiled pipeline's
input definitions (what the KFP UI and `kfp run create` see), `imgclf run`'s parser, README, and
the settings dict each step receives."""

import argparse
import json
import re
from dataclasses import fields

import numpy as np
import pytest
import yaml

from conftest import REPO
from imgclf.components.parameters import (
    GROUPS,
    BlessingRules,
    IngestSettings,
    PreprocessSettings,
    PushSettings,
    ServingTarget,
    TrainSettings,
    TuneSettings,
    ValidationRules,
    parameters,
)
from imgclf.components.training.config import TrainConfig
from imgclf.pipelines import cli
from imgclf.pipelines.interface import parameters_markdown

# The groups of settings each step's dict carries, as the DAG hands them over.
STEP_GROUPS = {
    "ingest": (IngestSettings,),
    "validate": (ValidationRules, ServingTarget),
    "preprocess": (PreprocessSettings,),
    "tune": (TrainSettings, TuneSettings),
    "train": (TrainSettings,),
    "evaluate": (BlessingRules, ServingTarget),
    "push": (PushSettings, ServingTarget),
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("build") / "pipeline.yaml"
    assert cli.main(["compile", "-o", str(path)]) == 0
    return next(yaml.safe_load_all(path.read_text()))


def _tasks(spec) -> dict:
    return {
        name: task
        for component in [spec["root"], *spec["components"].values()]
        for name, task in component.get("dag", {}).get("tasks", {}).items()
    }


def test_the_ir_shows_each_parameter_as_declared(spec):
    """The compiled pipeline's input definitions are KFP's view of the parameters: their
    defaults, and the descriptions (with the choices or range) the UI shows."""
    inputs = spec["root"]["inputDefinitions"]["parameters"]
    declared = {parameter.name: parameter for parameter in parameters()}
    assert set(inputs) == set(declared)
    for name, parameter in declared.items():
        assert inputs[name]["description"] == parameter.description, name
        if parameter.required:
            assert "defaultValue" not in inputs[name], name
        else:
            assert inputs[name]["defaultValue"] == parameter.default, name
        for choice in parameter.choices:
            assert f"{choice}" in inputs[name]["description"], name


def test_imgclf_run_offers_each_parameter_as_declared():
    run = _subparser("run")
    flags = {action.dest: action for action in run._actions}
    for parameter in parameters():
        action = flags[parameter.name]
        assert f"--{parameter.name.replace('_', '-')}" in action.option_strings
        assert action.default == parameter.default_for_local_runs, parameter.name
        assert tuple(action.choices or ()) == parameter.choices, parameter.name
        assert action.help.replace("%%", "%") == parameter.description, parameter.name


def test_a_parameter_of_the_wrong_choice_or_range_is_refused_before_anything_runs(capsys):
    assert cli.main(["run", "--dropout", "1.5"]) == 2
    assert "dropout must be in [0, 1), not 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["run", "--optimizer", "lbfgs"])
    assert "invalid choice: 'lbfgs'" in capsys.readouterr().err
    assert cli.main(["run", "--xla", "--augmentations", "zoom"]) == 2
    assert "xla cannot compile the zoom augmentation" in capsys.readouterr().err


def test_each_step_gets_exactly_the_settings_of_its_groups(spec):
    tasks = _tasks(spec)
    for step, groups in STEP_GROUPS.items():
        settings = tasks[step]["inputs"]["parameters"]["settings"]["runtimeValue"]["constant"]
        expected = {f.name for group in groups for f in fields(group)} - {"beam_pipeline_args"}
        assert set(settings) == expected, step
        for name, value in settings.items():
            assert value == f"{{{{$.inputs.parameters['pipelinechannel--{name}']}}}}"
            # From the pipeline's input, or passed down to a condition's DAG under that name.
            channel = tasks[step]["inputs"]["parameters"][f"pipelinechannel--{name}"]
            assert channel["componentInputParameter"] in (name, f"pipelinechannel--{name}")
    preprocess = tasks["preprocess"]["inputs"]["parameters"]["beam_pipeline_args"]
    assert preprocess == {"componentInputParameter": "beam_pipeline_args"}


def _substitute_as_the_launcher_does(constant: dict, values: dict) -> dict:
    """What the KFP v2 launcher hands a step for a dict input holding placeholders.

    Source: kubeflow/pipelines backend/src/v2/component/launcher_v2.go (snapshot of
    2026-08-21): ``getPlaceholders`` maps each ``{{$.inputs.parameters['name']}}`` to text, a
    string as it is, a number by ``strconv.FormatFloat(v, 'f', -1, 64)``, a bool by
    ``strconv.FormatBool``, a list or struct as its JSON; the launcher then writes the executor
    input as JSON into the command (``{{$}}``) and ``strings.ReplaceAll`` puts that text in
    place of every placeholder inside it. kfp.local does the same in
    kfp/local/placeholder_utils.py (``resolve_io_placeholders``), with ``json.dumps`` for
    numbers (``3.0``). The driver (backend/src/v2/driver/resolve.go) passes such constants
    through untouched."""

    def text(value) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):  # FormatFloat 'f', -1: positional, shortest
            return np.format_float_positional(float(value), trim="-")
        if isinstance(value, list | dict):
            return json.dumps(value)
        return value

    serialized = json.dumps(constant)
    for name, value in values.items():
        serialized = serialized.replace(
            f"{{{{$.inputs.parameters['pipelinechannel--{name}']}}}}", text(value)
        )
    return json.loads(serialized)


def test_settings_survive_the_launchers_substitution_with_their_types(spec):
    tasks = _tasks(spec)
    chosen = {"epochs": 3, "learning_rate": 1e-5, "xla": True, "augmentations": "flip", "seed": 7}
    values = {**{p.name: p.default for p in parameters() if not p.required}, **chosen}
    constant = tasks["train"]["inputs"]["parameters"]["settings"]["runtimeValue"]["constant"]
    received = _substitute_as_the_launcher_does(constant, values)
    assert received["epochs"] == "3" and received["xla"] == "true"
    config = TrainConfig.from_step_input(received)
    assert (config.epochs, config.learning_rate, config.xla, config.augmentations, config.seed) == (
        3,
        1e-5,
        True,
        "flip",
        7,
    )
    assert config == TrainConfig(**chosen)


def test_a_list_inside_a_settings_dict_would_not_survive_the_substitution():
    """Why beam_pipeline_args is its own step input: substituted into a JSON string, a list's
    JSON breaks the executor input (the same rule as above)."""
    constant = {"args": "{{$.inputs.parameters['pipelinechannel--args']}}"}
    with pytest.raises(json.JSONDecodeError):
        _substitute_as_the_launcher_does(constant, {"args": ["--runner=DirectRunner"]})


def test_text_that_would_break_the_substituted_json_is_refused_when_the_settings_are_made():
    constant = {"data_uri": "{{$.inputs.parameters['pipelinechannel--data_uri']}}"}
    with pytest.raises(json.JSONDecodeError):
        _substitute_as_the_launcher_does(constant, {"data_uri": 'gs://b/"odd"'})
    with pytest.raises(ValueError, match="data_uri may not contain quotes, backslashes"):
        IngestSettings('gs://b/"odd"')


def test_every_parameter_is_declared_once_with_one_line_of_help():
    names = [parameter.name for parameter in parameters()]
    assert len(names) == len(set(names)) == sum(len(fields(group)) for group in GROUPS)
    for parameter in parameters():
        assert parameter.help and "\n" not in parameter.help, parameter.name
        assert re.fullmatch(r"[a-z_0-9]+", parameter.name)


def test_the_readme_lists_every_parameter_as_declared():
    readme = (REPO / "README.md").read_text()
    start = readme.index("| parameter | default | used by | meaning |")
    end = readme.index("<!-- parameters end -->")
    assert readme[start:end].strip() == parameters_markdown(), (
        "README's parameters table is stale: paste `.venv/bin/imgclf parameters` over it"
    )


def _subparser(name: str) -> argparse.ArgumentParser:
    commands = next(a for a in cli._parser()._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--serving-dir", "s3:/bucket/models"],
            "serving_root: 's3:/bucket/models' is not a s3://BUCKET/PATH URI",
        ),
        (["--data", "ftp://host/photos"], "data_uri: 'ftp://host/photos': the scheme ftp:"),
        (["--weights", "gs:/typo/w.h5"], "weights: 'gs:/typo/w.h5' is not a gs://BUCKET/PATH URI"),
    ],
)
def test_a_location_nothing_can_read_is_refused_before_anything_is_written(
    tmp_path, monkeypatch, capsys, flags, message
):
    """Taken as a local path, s3:/bucket/models would become a folder on the pod's disk where
    every run "pushed" a first model."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", *flags]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
