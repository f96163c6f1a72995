"""The preflight: bad settings and inputs stop ``imgclf run`` before any step starts, each
problem one sentence naming its parameter, all of them at once, without a traceback."""

import os
import subprocess
import sys
import time

import pytest

from conftest import offline_imgclf, write_colour_tree, write_multi_label_set
from imgclf.components import kfp_steps, preflight
from imgclf.components.model.backbones import BACKBONES
from imgclf.pipelines import cli

# A run that would train: tiny, from scratch, at the smallest size.
GOOD = ["--weights", "none", "--image-size", "32", "--epochs", "1", "--fine-tune-epochs", "0"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("preflight")
    (root / "a-file").write_text("not a folder")
    mobilenet_v2 = BACKBONES["mobilenet_v2"].build((32, 32, 3), None, 0.35)
    mobilenet_v2.save_weights(root / "mobilenet_v2.weights.h5")
    return {
        "root": root,
        "tree": write_colour_tree(root / "photos", per_class=6),
        "multi_label": write_multi_label_set(root / "multi", images=12),
    }


# Each: the flags beyond GOOD (placeholders filled from `inputs`), the parameter the one
# sentence must name.
BAD_CONFIGURATIONS = [
    (["--weights", "{root}/missing.h5"], "weights"),
    (["--weights", "{root}/mobilenet_v2.weights.h5"], "weights"),
    (["--backbone", "alexnet", "--weights", "imagenet", "--image-size", "64"], "weights"),
    (["--backbone", "resnet50", "--alpha", "0.5"], "alpha"),
    (["--image-size", "16"], "image_size"),
    (["--backbone", "inceptionv3", "--image-size", "64"], "image_size"),
    (["--serving-dir", "{root}/a-file/serving"], "serving_root"),
    (["--serving-dir", "ftp://models.example/serving"], "serving_root"),
    (["--data", "http://photos.example/cats"], "data_uri"),
    (["--data", "{root}/no-such-folder"], "data_uri"),
    (["--data", "sample:letters"], "data_uri"),
    (["--xla", "--augmentations", "flip,rotation"], "xla"),
    (["--data", "{multi_label}", "--class-weight", "balanced"], "class_weight"),
    (["--data", "{multi_label}", "--rebalance-to", "20"], "rebalance_to"),
    (["--train-fraction", "0.9", "--validation-fraction", "0.2"], "train_fraction"),
    (["--learning-rate", "0"], "learning_rate"),
    (["--augmentations", "flip,blur"], "augmentations"),
    (["--data-snapshot", "last tuesday"], "data_snapshot"),
    (["--tflite", "int4"], "tflite"),
    (["--dropout", "1"], "dropout"),
    (["--min-images-per-class", "0"], "min_images_per_class"),
    (["--workers", "2"], "workers"),
]


def _run(inputs, flags):
    """``imgclf run`` on the colour tree with ``flags``: the exit code and the error lines."""
    root = inputs["root"]
    filled = [flag.format(**inputs) for flag in flags]
    return cli.main(
        [
            "run",
            "--data",
            str(inputs["tree"]),
            "--serving-dir",
            str(root / "serving"),
            "--pipeline-root",
            str(root / "runs"),
            *GOOD,
            *filled,
        ]
    )


@pytest.mark.parametrize(
    "flags, parameter", BAD_CONFIGURATIONS, ids=[p for _, p in BAD_CONFIGURATIONS]
)
def test_a_bad_configuration_stops_the_run_before_any_step(inputs, capsys, flags, parameter):
    started = time.monotonic()
    code = _run(inputs, flags)
    seconds = time.monotonic() - started
    output = capsys.readouterr()

    assert code == 2
    problems = [line[2:] for line in output.err.splitlines() if line.startswith("- ")]
    assert len(problems) == 1, output.err
    assert parameter in problems[0], problems
    assert "Traceback" not in output.out + output.err
    # Nothing started: kfp.local makes the pipeline root, and the serving root is untouched.
    assert not (inputs["root"] / "runs").exists()
    assert not (inputs["root"] / "serving").exists()
    print(f"{parameter}: {seconds:.1f} s")


def test_every_problem_is_reported_at_once(inputs, capsys):
    code = _run(inputs, ["--learning-rate", "0", "--dropout", "1", "--tflite", "int4"])
    problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("- ")]
    assert code == 2
    assert len(problems) == 3, problems


def test_the_locations_and_the_weights_are_all_looked_at(inputs, capsys):
    """Once the settings are valid, a missing data folder, an unwritable serving root and a
    missing weights file are three problems of one report."""
    code = _run(
        inputs,
        [
            "--data",
            "{root}/no-such-folder",
            "--serving-dir",
            "{root}/a-file/serving",
            "--weights",
            "{root}/missing.h5",
        ],
    )
    problems = [line for line in capsys.readouterr().err.splitlines() if line.startswith("- ")]
    assert code == 2
    assert [p.split(":")[0].split("=")[0][2:] for p in problems] == [
        "data_uri",
        "serving_root",
        "weights",
    ]


def test_an_object_store_that_cannot_be_written_is_a_problem(s3_bucket, monkeypatch):
    """An S3 endpoint that refuses connections (botocore: EndpointConnectionError) cannot hold
    the served models."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    found = preflight._serving_root_problems(f"{s3_bucket.root}/models")
    assert len(found) == 1 and found[0].startswith("serving_root: "), found


def test_a_store_that_cannot_be_reached_is_reported_without_its_credentials(
    s3_bucket, inputs, monkeypatch, capsys
):
    """What a run prints goes to a pod's log and a CI log: the store's failure is named
    (botocore's first line), its keys never are."""
    secret = "do-not-print-this-secret-key"
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    code = _run(inputs, ["--serving-dir", f"{s3_bucket.root}/models"])
    output = capsys.readouterr()

    assert code == 2
    assert f"- serving_root: {s3_bucket.root}/models cannot be written (" in output.err
    assert secret not in output.out + output.err


def test_a_writable_bucket_passes_and_keeps_nothing_of_the_probe(bucket):
    assert preflight._serving_root_problems(f"{bucket.root}/models") == []
    assert bucket.names("") == set()


def test_a_good_configuration_passes(inputs):
    arguments = cli.run_arguments(
        cli._parser().parse_args(
            [
                "run",
                "--data",
                str(inputs["tree"]),
                "--serving-dir",
                str(inputs["root"] / "s"),
                *GOOD,
            ]
        )
    )
    assert preflight.find_problems(arguments) == []
    assert not (inputs["root"] / "s").exists()


def test_the_pipelines_preflight_step_refuses_what_the_cli_refuses(inputs, monkeypatch):
    """The compiled pipeline's first step gets its settings as KFP's text (as every step)."""
    # The step sets this process's excepthook, as it would its own.
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    arguments = cli.run_arguments(
        cli._parser().parse_args(
            ["run", "--data", str(inputs["tree"]), *GOOD, "--dropout", "1", "--epochs", "-1"]
        )
    )
    settings = {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in arguments.items()
        if name != "beam_pipeline_args"
    }
    with pytest.raises(preflight.PreflightFailed) as failed:
        kfp_steps.preflight.python_func(
            settings=settings, beam_pipeline_args=arguments["beam_pipeline_args"]
        )
    assert [problem.split()[0] for problem in failed.value.problems] == ["epochs", "dropout"]


def test_imagenet_weights_offline_stop_a_fresh_imgclf_run_in_seconds(tmp_path):
    """``imgclf run`` at its defaults but weights=imagenet, in a network namespace with no way
    out (``unshare --net``) and an empty Keras cache: Keras cannot download the weights
    (keras.utils.get_file), so the run stops before any step, saying what to pass."""
    started = time.monotonic()
    completed = subprocess.run(
        [*offline_imgclf(), "run", "--weights", "imagenet", "--serving-dir", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "KERAS_HOME": str(tmp_path / "keras")},
    )
    seconds = time.monotonic() - started
    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "- weights=imagenet could not be loaded into mobilenet" in completed.stderr
    assert "weights=none" in completed.stderr
    assert "Traceback" not in completed.stdout + completed.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "s").exists()
    print(f"stopped after {seconds:.1f} s")
