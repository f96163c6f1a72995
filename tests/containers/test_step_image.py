"""The images as built here (`make image`: podman, offline, from a Debian base), run the way a
KFP pod runs them. Skips where podman or an image is missing; CI builds them first."""

import json
import shutil
import subprocess

import pytest

from conftest import REPO
from imgclf.pipelines.cluster import ClusterSettings

CLUSTER = ClusterSettings.load()
STEP_IMAGE, LIGHT_IMAGE = CLUSTER.step_image, CLUSTER.light_image


def _built(image: str) -> bool:
    if shutil.which("podman") is None:
        return False
    return subprocess.run(["podman", "image", "exists", image]).returncode == 0


def needs(image: str):
    return pytest.mark.skipif(
        not _built(image), reason=f"no podman image {image} here (make image builds it)"
    )


def _in_image(image: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", "run", "--rm", image, *command], capture_output=True, text=True, timeout=300
    )


def _size(image: str) -> int:
    inspected = subprocess.run(
        ["podman", "image", "inspect", image], capture_output=True, text=True, check=True
    )
    (found,) = json.loads(inspected.stdout)
    assert found["Labels"]["org.opencontainers.image.version"] == image.rsplit(":", 1)[1]
    return found["Size"]


@needs(STEP_IMAGE)
def test_the_step_image_runs_as_uid_1000():
    assert _in_image(STEP_IMAGE, "id", "-u").stdout.strip() == "1000"


@needs(STEP_IMAGE)
def test_the_installed_package_cannot_be_changed_by_the_step():
    package = _in_image(
        STEP_IMAGE,
        "python",
        "-c",
        "import imgclf.components, os; print(os.path.dirname(imgclf.components.__file__))",
    ).stdout.strip()
    assert package.endswith("site-packages/imgclf/components"), package
    touched = _in_image(STEP_IMAGE, "touch", f"{package}/kfp_steps.py", f"{package}/new.py")
    assert touched.returncode != 0 and "Permission denied" in touched.stderr


@needs(STEP_IMAGE)
def test_the_cli_and_kfps_executor_entry_point_work_in_the_step_image():
    cli = _in_image(STEP_IMAGE, "imgclf", "--help")
    assert cli.returncode == 0 and "compile" in cli.stdout
    executor = _in_image(
        STEP_IMAGE, "python3", "-c", "import kfp.dsl.executor_main, kfp; print(kfp.__version__)"
    )
    assert executor.returncode == 0 and executor.stdout.strip() == "2.17.0", executor.stderr


@needs(LIGHT_IMAGE)
def test_the_light_image_has_kfps_executor_and_none_of_the_heavy_dependencies():
    probe = "import importlib.util as u, kfp.dsl.executor_main; print(u.find_spec('tensorflow'))"
    found = _in_image(LIGHT_IMAGE, "python3", "-c", probe)
    assert found.returncode == 0 and found.stdout.strip() == "None", found.stderr
    assert _in_image(LIGHT_IMAGE, "id", "-u").stdout.strip() == "1000"


@needs(STEP_IMAGE)
@needs(LIGHT_IMAGE)
def test_the_image_sizes_are_reported():
    sizes = {image: _size(image) for image in (STEP_IMAGE, LIGHT_IMAGE)}
    (REPO / "build").mkdir(exist_ok=True)
    (REPO / "build" / "image-sizes.json").write_text(json.dumps(sizes, indent=2))
    for image, size in sizes.items():
        print(f"{image}: {size / 1e9:.2f} GB")
    assert sizes[LIGHT_IMAGE] < sizes[STEP_IMAGE] / 5
