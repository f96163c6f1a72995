"""The cluster path as far as this machine goes: the Makefile's exact kfp and buildx commands
(checked against the kfp CLI's own option parser), and what the images install."""

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from imgclf.pipelines import cli

VERSION = importlib.metadata.version("imgclf")
CLUSTER = ["DATA_URI=gs://photos/clothing", "SERVING_ROOT=gs://models/serving"]
# Not a sub-make of `make test`: its flags and variables would leak into the dry runs.
OWN_MAKE = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}


def make_dry_run(*arguments: str) -> list[list[str]]:
    """The commands ``make -n`` prints, continuation lines joined, each split as sh would."""
    result = subprocess.run(
        ["make", "--no-print-directory", "-n", *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        env=OWN_MAKE,
    )
    if result.returncode:
        raise AssertionError(result.stderr)
    return [shlex.split(line) for line in result.stdout.replace("\\\n", " ").splitlines()]


@pytest.fixture(scope="module")
def pipeline_file(tmp_path_factory):
    """A compiled pipeline, so that the kfp CLI's checks on --package-file pass."""
    path = tmp_path_factory.mktemp("build") / "pipeline.yaml"
    path.write_text("compiled by make compile\n")
    return path


def imgclf_command(commands: list[list[str]], name: str):
    """The ``imgclf NAME`` command make runs, as imgclf's own parser reads it."""
    (command,) = [c for c in commands if Path(c[0]).name == "imgclf" and c[1:2] == [name]]
    return command, cli._parser().parse_args(command[1:])


def test_make_submit_runs_imgclf_submit_with_the_experiment_and_parameters(pipeline_file):
    commands = make_dry_run(
        "submit",
        *CLUSTER,
        "KFP_ENDPOINT=https://kfp.example.com/pipeline",
        "NAMESPACE=team-vision",
        "RUN_NAME=nightly-1",
        f"PIPELINE={pipeline_file}",
        "PARAMS=backbone=efficientnetv2-b0 epochs=3",
    )
    compile_command = next(c for c in commands if c[1:2] == ["compile"])
    assert (
        compile_command[compile_command.index("--image") + 1] == f"ghcr.io/imgclf/imgclf:{VERSION}"
    )
    light = compile_command[compile_command.index("--light-image") + 1]
    assert light == f"ghcr.io/imgclf/imgclf-light:{VERSION}"
    _, options = imgclf_command(commands, "submit")
    assert options.endpoint == "https://kfp.example.com/pipeline"
    assert options.namespace == "team-vision" and options.experiment == "imgclf"
    assert options.run_name == "nightly-1" and options.package == str(pipeline_file)
    assert options.parameters == [
        "data_uri=gs://photos/clothing",
        "serving_root=gs://models/serving",
        "backbone=efficientnetv2-b0",
        "epochs=3",
    ]


def test_make_schedule_creates_a_nightly_recurring_run(pipeline_file):
    commands = make_dry_run("schedule", *CLUSTER, f"PIPELINE={pipeline_file}")
    _, options = imgclf_command(commands, "schedule")
    assert options.cron == "0 0 2 * * *"
    assert len(options.cron.split()) == 6  # KFP's cron has seconds first
    assert options.name == "imgclf-nightly" and options.package == str(pipeline_file)
    assert options.parameters == [
        "data_uri=gs://photos/clothing",
        "serving_root=gs://models/serving",
    ]


@pytest.mark.parametrize("target", ["submit", "schedule"])
def test_submit_and_schedule_say_what_is_missing(target):
    result = subprocess.run(
        ["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=False, env=OWN_MAKE
    )
    assert result.returncode != 0
    assert f"Set DATA_URI and SERVING_ROOT, e.g. make {target} DATA_URI=gs://" in result.stderr


def test_make_images_builds_and_pushes_every_image_at_this_version():
    commands = make_dry_run("images", "REGISTRY=registry.example/ml", "TAG=2026-11-25")
    assert len(commands) == 3
    for command, dockerfile, image in zip(
        commands,
        ("containers/Dockerfile", "containers/Dockerfile", "containers/Dockerfile.gpu"),
        (
            "registry.example/ml/imgclf:2026-11-25",
            "registry.example/ml/imgclf-light:2026-11-25",
            "registry.example/ml/imgclf-gpu:2026-11-25",
        ),
        strict=True,
    ):
        assert command[:3] == ["docker", "buildx", "build"]
        assert command[command.index("-f") + 1] == dockerfile
        assert command[command.index("-t") + 1] == image
        assert command[command.index("--build-arg") + 1] == f"IMGCLF_VERSION={VERSION}"
        assert "--push" in command and command[-1] == "."


def _defaults(lines: list[str]) -> dict[str, str]:
    """A Dockerfile's build arguments and their defaults."""
    return dict(
        line.split(None, 1)[1].split("=", 1) for line in lines if re.match(r"ARG \w+=", line)
    )


def _bases(lines: list[str]) -> list[str]:
    """The images a Dockerfile starts from, with build arguments at their defaults."""
    defaults = _defaults(lines)
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    return [re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], base) for base in bases]


def test_the_images_pin_their_bases_and_install_this_project_at_the_pinned_version():
    for name, base in (("Dockerfile", "python:3.11-slim"), ("Dockerfile.gpu", None)):
        lines = (REPO / "containers" / name).read_text().splitlines()
        bases = _bases(lines)
        assert all(":" in b and not b.endswith(":latest") for b in bases), bases
        if base:
            assert bases[-1] == base
        assert any('"imgclf==${IMGCLF_VERSION}"' in line for line in lines)
    cpu_lines = (REPO / "containers" / "Dockerfile").read_text().splitlines()
    # The light image's kfp is the one the package requires (kfp>=2.17.0,<2.17.1).
    (kfp_pin,) = [r for r in importlib.metadata.requires("imgclf") if re.match(r"kfp[<>=]", r)]
    assert f">={_defaults(cpu_lines)['KFP_VERSION']}" in kfp_pin
    gpu_lines = (REPO / "containers" / "Dockerfile.gpu").read_text().splitlines()
    assert _bases(gpu_lines)[-1] == "tensorflow/tensorflow:2.21.0-gpu"


def test_the_build_context_holds_only_the_package_sources():
    patterns = (REPO / ".dockerignore").read_text().split()
    assert patterns[patterns.index("*") :][:5] == [
        "*",
        "!pyproject.toml",
        "!README.md",
        "!components/",
        "!pipelines/",
    ]


def test_the_wheel_the_images_install_has_every_module_and_the_cluster_defaults(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), "."],
        cwd=REPO,
        check=True,
    )
    (wheel,) = tmp_path.glob(f"imgclf-{VERSION}-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        f"imgclf/{path.relative_to(REPO).as_posix()}"
        for folder in ("components", "pipelines")
        for path in (REPO / folder).rglob("*.py")
    }
    assert sources <= names
    assert "imgclf/pipelines/cluster.yaml" in names
    # Nothing lands in site-packages under a name another project could also use.
    assert {name.split("/")[0] for name in names} == {"imgclf", f"imgclf-{VERSION}.dist-info"}
