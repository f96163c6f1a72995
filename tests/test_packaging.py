"""The project as `pip install .` leaves it: one import package, `imgclf`, that runs and compiles
the pipeline from anywhere; nothing named `components` or `pipelines` in site-packages, where it
would collide with any other project that does the same."""

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import REPO


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A new virtual environment with this project's wheel installed by pip. Its dependencies
    (3 GB) are borrowed from the test's own environment through a .pth line rather than
    installed again; the wheel itself comes only from this tree."""
    work = tmp_path_factory.mktemp("packaging")
    wheels = work / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), "."],
        cwd=REPO,
        check=True,
    )
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    (wheel,) = wheels.glob("imgclf-*.whl")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True,
    )
    return venv


def _run(venv: Path, *command: str, cwd: Path, timeout: int = 120):
    return subprocess.run(
        [str(venv / "bin" / command[0]), *command[1:]],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_installed_package_is_imgclf_alone(fresh_venv, tmp_path):
    imported = _run(
        fresh_venv,
        "python",
        "-c",
        "import imgclf, imgclf.components.parameters, imgclf.pipelines.cli; "
        "print(imgclf.components.parameters.__file__)",
        cwd=tmp_path,
    )
    assert imported.returncode == 0, imported.stderr
    assert str(fresh_venv) in imported.stdout, "imported from the tree, not the installed wheel"
    for name in ("components", "pipelines"):
        refused = _run(fresh_venv, "python", "-c", f"import {name}", cwd=tmp_path)
        assert f"No module named '{name}'" in refused.stderr


def test_the_installed_cli_compiles_the_pipeline(fresh_venv, tmp_path):
    compiled = _run(fresh_venv, "imgclf", "compile", "-o", "pipeline.yaml", cwd=tmp_path)
    assert compiled.returncode == 0, compiled.stderr
    assert "imgclf.components" in (tmp_path / "pipeline.yaml").read_text()


@pytest.mark.slow
def test_the_installed_cli_runs_the_pipeline_on_the_sample(fresh_venv, tmp_path):
    run = _run(
        fresh_venv,
        "imgclf",
        "run",
        *("--backbone", "mobilenet", "--alpha", "0.25", "--weights", "none"),
        *("--image-size", "32", "--epochs", "1", "--fine-tune-epochs", "0"),
        *("--augmentations", "none", "--min-accuracy", "0", "--summary-json", "summary.json"),
        cwd=tmp_path,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "pushed:      version 1" in run.stdout
    assert (tmp_path / "serving" / "imgclf" / "1" / "saved_model.pb").is_file()
