"""Runs the DAG on this machine with ``kfp.local`` and summarises what it did."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from imgclf.pipelines.pipeline import create_pipeline
from imgclf.pipelines.summary import RunSummary, summarize

# Quiet TensorFlow's C++ start-up chatter and great-expectations' usage statistics in every
# step's subprocess; real warnings and errors still show.
STEP_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2", "GX_ANALYTICS_ENABLED": "false"}


class PipelineFailed(RuntimeError):
    """A step of the local run failed; its own error is in the log above."""


def run(arguments: dict[str, Any], pipeline_root: str) -> RunSummary:
    from kfp import local

    os.environ.update(STEP_ENVIRONMENT)
    Path(pipeline_root).mkdir(parents=True, exist_ok=True)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(Path(pipeline_root).resolve()),
        raise_on_error=True,
    )
    # No schedule locally: ingest reads the data_snapshot asked for, else everything.
    pipeline = create_pipeline(scheduled_at="")
    with warnings.catch_warnings():
        # Images and the GPU request are for the cluster; locally every step runs in this
        # Python environment on the CPU.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner")
        try:
            task = pipeline(**arguments)
        except RuntimeError as error:
            raise PipelineFailed(str(error)) from error
    return summarize(Path(task.output.path).parent.parent)
