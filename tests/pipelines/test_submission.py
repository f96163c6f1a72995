"""Submitting and scheduling through the kfp client: typed parameters, a namespace, the client's
credentials, and a registered pipeline with a version per release, checked against the requests
the kfp client sends (to a KFP API on loopback, tests/kfp_api.py)."""

import os
import subprocess
import sys

import pytest
from kfp import compiler
from kfp_api import KfpApi
from test_cluster_path import imgclf_command, make_dry_run

from imgclf.pipelines import cli
from imgclf.pipelines.pipeline import create_pipeline
from imgclf.pipelines.submission import release_version, typed_arguments


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    path = tmp_path_factory.mktemp("build") / "pipeline.yaml"
    compiler.Compiler().compile(create_pipeline(), str(path))
    return path


@pytest.fixture
def api(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # no kfp context file of this machine's
    with KfpApi() as running:
        yield running


def _cli(api, package, command, *words):
    return cli.main(
        [
            command,
            "--endpoint",
            api.endpoint,
            "--namespace",
            "team-vision",
            "--existing-token",
            "t0ken",
            "--package",
            str(package),
            *words,
        ]
    )


def test_a_schedule_sends_the_pipelines_types(api, package):
    """`kfp recurring-run create` sends every value as a string (kfp/cli/recurring_run.py
    passes the dict of CLI words as they are), which the backend refuses for an integer or a
    boolean parameter; through the client the request carries JSON numbers and booleans."""
    words = [
        "data_uri=gs://photos/clothing",
        "serving_root=gs://models/serving",
        "epochs=5",
        "xla=true",
        "learning_rate=0.0005",
        'beam_pipeline_args=["--runner=DataflowRunner","--region=europe-west4"]',
    ]
    assert _cli(api, package, "schedule", "--cron", "0 0 3 * * *", *words) == 0
    (request,) = api.posted("/apis/v2beta1/recurringruns")
    sent = request["runtime_config"]["parameters"]
    assert sent["epochs"] == 5 and sent["xla"] is True and sent["learning_rate"] == 0.0005
    assert sent["beam_pipeline_args"] == ["--runner=DataflowRunner", "--region=europe-west4"]
    assert request["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * *"
    assert int(request["max_concurrency"]) == 1 and request["no_catchup"] is True
    reference = request["pipeline_version_reference"]
    assert reference["pipeline_id"] == api.pipelines["imgclf"]
    version = api.versions[reference["pipeline_id"]][release_version(package)]
    assert reference["pipeline_version_id"] == version


def test_namespace_and_token_reach_the_api(api, package):
    assert _cli(api, package, "submit", "--run-name", "first", "data_uri=gs://p/x") == 0
    experiment = api.posted("/apis/v2beta1/experiments")[0]
    assert experiment == {"display_name": "imgclf", "namespace": "team-vision"}
    assert all(r["headers"].get("authorization") == "Bearer t0ken" for r in api.requests)
    (run,) = api.posted("/apis/v2beta1/runs")
    assert run["display_name"] == "first"
    assert run["runtime_config"]["parameters"] == {"data_uri": "gs://p/x"}


def test_the_same_release_registers_once_and_a_new_package_adds_a_version(api, package, tmp_path):
    for _ in range(2):
        assert _cli(api, package, "submit") == 0
    assert len(api.posted("/apis/v2beta1/pipelines/upload")) == 1
    assert len(api.posted("/apis/v2beta1/pipelines/upload_version")) == 1
    changed = tmp_path / "pipeline.yaml"
    changed.write_text(package.read_text() + "\n# recompiled\n")
    assert _cli(api, changed, "submit") == 0
    assert len(api.posted("/apis/v2beta1/pipelines/upload")) == 1
    assert len(api.posted("/apis/v2beta1/pipelines/upload_version")) == 2
    assert len(api.posted("/apis/v2beta1/experiments")) == 1  # found by name the next times


@pytest.mark.parametrize(
    "word, message",
    [
        ("epochs=five", "epochs"),
        ("xla=yes", "Expected true or false"),
        ("beam_pipeline_args=--runner=DataflowRunner", "beam_pipeline_args is a list"),
        ("epoch=5", "Unknown parameter 'epoch'"),
        ("epochs", "NAME=VALUE"),
    ],
)
def test_a_wrong_parameter_is_refused_before_any_request(api, package, capsys, word, message):
    assert _cli(api, package, "schedule", word) == 2
    assert message in capsys.readouterr().err
    assert api.requests == []


def test_typed_arguments_follow_the_declarations():
    assert typed_arguments(["image_size=160", "dropout=0.3", "xla=false"]) == {
        "image_size": 160,
        "dropout": 0.3,
        "xla": False,
    }


def test_make_schedule_sends_typed_parameters(api, package, tmp_path):
    """The acceptance of issue 26 item 4: the command `make schedule PARAMS="epochs=5
    xla=true"` runs, run against a KFP API, sends an integer and a boolean."""
    commands = make_dry_run(
        "schedule",
        "DATA_URI=gs://photos/clothing",
        "SERVING_ROOT=gs://models/serving",
        f"KFP_ENDPOINT={api.endpoint}",
        f"PIPELINE={package}",
        "PARAMS=epochs=5 xla=true",
    )
    command, _ = imgclf_command(commands, "schedule")
    result = subprocess.run(
        [sys.executable, "-m", "imgclf.pipelines.cli", *command[1:]],
        check=False,
        env={**os.environ, "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    (request,) = api.posted("/apis/v2beta1/recurringruns")
    sent = request["runtime_config"]["parameters"]
    assert (sent["epochs"], sent["xla"]) == (5, True)
