"""Runs the DAG on this machine with ``kfp.local`` and summarises what it did."""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from components.validate import VALIDATION_FILE
from pipelines.pipeline import create_pipeline

log = logging.getLogger(__name__)

# Quiet TensorFlow's C++ start-up chatter and great-expectations' usage statistics in every
# step's subprocess; real warnings and errors still show.
STEP_ENVIRONMENT = {"TF_CPP_MIN_LOG_LEVEL": "2", "GX_ANALYTICS_ENABLED": "false"}


@dataclass
class RunSummary:
    images: dict[str, int]
    quarantined: int
    duplicates_dropped: int
    candidate: dict[str, Any]
    baseline: dict[str, Any] | None
    blessed: bool
    blessing: list[dict]
    pushed: dict[str, Any] | None
    validation_report: str
    evaluation_report: str

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


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


def summarize(run_dir: Path) -> RunSummary:
    """Reads the run's step outputs under the kfp.local pipeline root."""
    validated = run_dir / "validate" / "validated_manifest"
    validation = json.loads((validated / VALIDATION_FILE).read_text())
    evaluation_dir = run_dir / "evaluate" / "evaluation"
    evaluation = json.loads((evaluation_dir / "evaluation.json").read_text())
    pushed_file = run_dir / "push" / "pushed"
    baseline = evaluation["baseline"]
    return RunSummary(
        images=validation["images"],
        quarantined=validation["quarantined"],
        duplicates_dropped=validation["duplicates_dropped"],
        candidate=_headline(evaluation["candidate"]),
        baseline=(
            {**_headline(baseline), "version": evaluation["baseline_version"]} if baseline else None
        ),
        blessed=evaluation["blessed"],
        blessing=evaluation["checks"],
        pushed=json.loads(pushed_file.read_text()) if pushed_file.exists() else None,
        validation_report=str(validated / "report.html"),
        evaluation_report=str(evaluation_dir / "report.html"),
    )


def _headline(metrics: dict) -> dict[str, Any]:
    return {
        key: metrics[key] for key in ("task", "accuracy", "macro_f1", "macro_average_precision")
    }
