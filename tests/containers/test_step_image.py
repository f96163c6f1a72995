"""The CPU step image as built here (`make image`: podman, offline, from a Debian base), run
the way a KFP pod runs it. Skips where podman or the image is missing; CI builds it first."""

import json
import shutil
import subprocess

import pytest

from conftest import REPO
from imgclf.components import kfp_steps

IMAGE = kfp_steps.STEP_IMAGE


def _image_exists() -> bool:
    if shutil.which("podman") is None:
        return False
    return subprocess.run(["podman", "image", "exists", IMAGE]).returncode == 0


pytestmark = pytest.mark.skipif(
    not _image_exists(), reason=f"no podman image {IMAGE} here (make image builds it)"
)


def _in_image(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", "run", "--rm", IMAGE, *command], capture_output=True, text=True, timeout=300
    )


def test_the_image_runs_as_uid_1000():
    assert _in_image("id", "-u").stdout.strip() == "1000"


def test_the_installed_package_cannot_be_changed_by_the_step():
    package = _in_image(
        "python",
        "-c",
        "import imgclf.components, os; print(os.path.dirname(imgclf.components.__file__))",
    ).stdout.strip()
    assert package.endswith("site-packages/imgclf/components"), package
    touched = _in_image("touch", f"{package}/kfp_steps.py", f"{package}/new.py")
    assert touched.returncode != 0 and "Permission denied" in touched.stderr


def test_the_cli_and_kfps_executor_entry_point_work_in_the_image():
    cli = _in_image("imgclf", "--help")
    assert cli.returncode == 0 and "compile" in cli.stdout
    executor = _in_image(
        "python3", "-c", "import kfp.dsl.executor_main, kfp; print(kfp.__version__)"
    )
    assert executor.returncode == 0 and executor.stdout.strip() == "2.17.0", executor.stderr


def test_the_image_size_is_reported():
    inspected = subprocess.run(
        ["podman", "image", "inspect", IMAGE], capture_output=True, text=True, check=True
    )
    (image,) = json.loads(inspected.stdout)
    report = {"image": IMAGE, "bytes": image["Size"], "labels": image["Labels"]}
    (REPO / "build").mkdir(exist_ok=True)
    (REPO / "build" / "step-image.json").write_text(json.dumps(report, indent=2))
    print(f"{IMAGE}: {image['Size'] / 1e9:.2f} GB")
    assert image["Labels"]["org.opencontainers.image.version"] == IMAGE.rsplit(":", 1)[1]
