"""The run summary: what a local run did, read from its step outputs, for people (``describe``)
and for scripts and CI to gate on (``RunSummary.to_json``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from imgclf.components import artifacts


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
    # The candidate's robust accuracy per attack and perturbation size (evaluation.json's).
    robustness: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def summarize(run_dir: Path) -> RunSummary:
    """Reads the run's step outputs under the kfp.local pipeline root."""
    validated = run_dir / "validate" / "validated_manifest"
    validation = json.loads((validated / artifacts.VALIDATION_RECORD).read_text())
    evaluation_dir = run_dir / "evaluate" / "evaluation"
    evaluation = json.loads((evaluation_dir / artifacts.EVALUATION_RECORD).read_text())
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
        validation_report=str(validated / artifacts.VALIDATION_REPORT),
        evaluation_report=str(evaluation_dir / artifacts.EVALUATION_REPORT),
        robustness=evaluation.get("robustness"),
    )


def describe(summary: RunSummary) -> str:
    """The summary as the few lines ``imgclf run`` ends with."""

    def headline(metrics):
        line = f"accuracy {metrics['accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}"
        if metrics["task"] == "multi-label":
            line += f", macro AP {metrics['macro_average_precision']:.3f} (multi-label)"
        return line

    images = ", ".join(f"{split} {count}" for split, count in summary.images.items())
    baseline = (
        f"version {summary.baseline['version']}: {headline(summary.baseline)}"
        if summary.baseline
        else "none (first model)"
    )
    failed = [check["rule"] for check in summary.blessing if not check["passed"]]
    pushed = (
        f"version {summary.pushed['version']} to {summary.pushed['path']}"
        if summary.pushed
        else "nothing"
    )
    return "\n".join(
        [
            "",
            "== imgclf run summary ==",
            f"images:      {images}; {summary.quarantined} quarantined, "
            f"{summary.duplicates_dropped} duplicates across splits dropped",
            f"candidate:   {headline(summary.candidate)}",
            f"baseline:    {baseline}",
            *_robustness_line(summary.robustness),
            "blessed:     yes" if summary.blessed else f"blessed:     no ({'; '.join(failed)})",
            f"pushed:      {pushed}",
            f"reports:     {summary.validation_report}",
            f"             {summary.evaluation_report}",
        ]
    )


def _robustness_line(robustness: dict | None) -> list[str]:
    if not robustness or len(robustness["epsilons"]) < 2:
        return []
    pairs = zip(robustness["epsilons"][1:], robustness["accuracy"]["pgd"][1:], strict=True)
    measured = ", ".join(f"{accuracy:.3f} at {epsilon:g}" for epsilon, accuracy in pairs)
    return [f"robustness:  PGD accuracy {measured} grey levels"]


def _headline(metrics: dict) -> dict[str, Any]:
    return {
        key: metrics[key] for key in ("task", "accuracy", "macro_f1", "macro_average_precision")
    }
