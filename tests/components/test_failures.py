"""How a failing step reports: the reason on one line, the traceback kept where it is read."""

import json
import os
import subprocess
import sys

from imgclf.components import failures

# A step body as kfp_steps has it: reporting set up, then an error nobody catches.
FAILING_STEP = """
from imgclf.components import failures
failures.report_uncaught("train")
def load():
    raise ValueError("weights: the file /w.h5\\n does not exist.")
load()
"""


def _run_step(environment: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", FAILING_STEP], capture_output=True, text=True, env=environment
    )


def test_on_a_cluster_the_pod_log_has_the_traceback_and_ends_with_the_reason(monkeypatch):
    monkeypatch.delenv(failures.FAILURE_DIR_VARIABLE, raising=False)
    completed = _run_step({**os.environ})
    assert completed.returncode == 1
    assert "Traceback (most recent call last)" in completed.stderr
    assert "in load" in completed.stderr
    last = completed.stderr.strip().splitlines()[-1]
    assert last == "train failed: weights: the file /w.h5 does not exist."


def test_a_local_run_keeps_the_traceback_in_a_file_and_prints_the_reason(tmp_path, monkeypatch):
    environment = {**os.environ, failures.FAILURE_DIR_VARIABLE: str(tmp_path)}
    environment.pop(failures.VERBOSE_VARIABLE, None)
    completed = _run_step(environment)

    assert completed.returncode == 1
    assert "Traceback" not in completed.stderr
    log_file = tmp_path / "train.log"
    assert completed.stderr.strip() == (
        f"train failed: weights: the file /w.h5 does not exist. (traceback: {log_file})"
    )
    assert "in load" in log_file.read_text()
    assert failures.recorded(tmp_path) == [
        {
            "step": "train",
            "reason": "weights: the file /w.h5 does not exist.",
            "traceback": str(log_file),
        }
    ]
    assert json.loads((tmp_path / "train.json").read_text())["step"] == "train"


def test_verbose_prints_the_traceback_too(tmp_path):
    environment = {
        **os.environ,
        failures.FAILURE_DIR_VARIABLE: str(tmp_path),
        failures.VERBOSE_VARIABLE: "1",
    }
    completed = _run_step(environment)
    assert "Traceback (most recent call last)" in completed.stderr
    assert (tmp_path / "train.log").exists()
