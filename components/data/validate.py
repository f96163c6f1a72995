"""Validate: a great-expectations suite over the manifest, and a quarantine for broken files.

Files that do not decode the way preprocess decodes them, or are too small, are quarantined:
left out of the validated manifest and listed with the reason (``quarantine``). The suite
(``expectations``) guards the dataset as a whole and compares it with the data of the model
being served (drift); a failed ``error`` rule stops the run with one sentence that says what to
change, a failed ``warning`` rule only shows in the report (``validation_report``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from imgclf.components import artifacts, manifest, storage
from imgclf.components.data import ingest, profile
from imgclf.components.data.expectations import Drift, RuleResult, run_suite
from imgclf.components.data.quarantine import check_files, leaked_copies
from imgclf.components.data.validation_report import validation_html
from imgclf.components.parameters import ServingTarget, ValidationRules
from imgclf.components.serving import models_config

log = logging.getLogger(__name__)


class DataValidationError(RuntimeError):
    """The data failed a rule that makes training on it pointless."""


@dataclass
class ValidationResult:
    images: dict[str, int]
    quarantined: int
    duplicates_dropped: int = 0
    rules: list[RuleResult] = field(default_factory=list)
    drift: dict[str, float] | None = None
    drift_baseline_version: int | None = None
    # Train images ingest moved to validation, for data split into train and test only.
    validation_carved_from_train: int = 0

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.rules if r.severity == "error" and not r.passed]


def validate(
    manifest_dir: str,
    output_dir: str,
    report_path: str,
    rules: ValidationRules | None = None,
    serving: ServingTarget | None = None,
) -> ValidationResult:
    """Writes the validated manifest and ``quarantine.csv`` to ``output_dir`` and the HTML
    report to ``report_path``; raises :class:`DataValidationError` on a failed ``error`` rule.

    ``quarantine.csv`` lists the invalid files and, apart from them, the later copies of files
    found in two splits: those are fine images, dropped so that no test image is trained on.

    With ``serving``, the data is compared with the profile stored next to the model being
    served (drift); ``data_profile.json`` in ``output_dir`` is this data's profile, for push to
    store next to the next model. The split fractions come from ingest's record in the manifest.
    """
    rules = rules or ValidationRules()
    frame = manifest.read(manifest_dir)
    frame["quarantine_reason"], frame["brightness"] = check_files(
        frame, rules.min_side, rules.max_pixels
    )
    valid = frame[frame["quarantine_reason"] == ""]
    leaked = leaked_copies(valid)
    kept = valid.drop(index=leaked.index).reset_index(drop=True)
    current_profile = profile.data_profile(kept, kept["brightness"])
    baseline = served_profile(serving)
    drift = Drift(
        profile.drift(current_profile, baseline[1]) if baseline else None,
        baseline[0] if baseline else None,
    )
    quarantined = pd.concat([frame[frame["quarantine_reason"] != ""], leaked]).rename(
        columns={"quarantine_reason": "reason"}
    )
    result = ValidationResult(
        images=manifest.counts_by_split(kept),
        quarantined=len(quarantined) - len(leaked),
        duplicates_dropped=len(leaked),
        rules=run_suite(frame, valid, kept, rules, drift, ingest.read_record(manifest_dir)),
        drift=drift.measures,
        drift_baseline_version=drift.baseline_version,
        validation_carved_from_train=ingest.carved_from_train(manifest_dir),
    )

    manifest.write(kept[manifest.columns(kept)], output_dir)
    profile.write(current_profile, output_dir)
    manifest.write(
        quarantined[manifest.quarantine_columns(frame)], output_dir, artifacts.QUARANTINE
    )
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(validation_html(result, kept, quarantined))
    (Path(output_dir) / artifacts.VALIDATION_RECORD).write_text(
        json.dumps(asdict(result), indent=2)
    )
    _log(result, report_path)
    if result.failures:
        raise DataValidationError(
            "Data validation failed: " + " ".join(_sentence(rule) for rule in result.failures)
        )
    return result


def served_profile(serving: ServingTarget | None) -> tuple[int, dict] | None:
    """``(version, data profile)`` of the model being served, if it has one."""
    if serving is None:
        return None
    served = models_config.served_version(serving.serving_root, serving.model_name)
    if served is None:
        return None
    stored = profile.read(storage.join(served[1], artifacts.ASSETS_EXTRA))
    return (served[0], stored) if stored else None


def _log(result: ValidationResult, report_path: str) -> None:
    log.info(
        "Validation: %s images per split, %d quarantined, %d leaked duplicates dropped; "
        "report at %s",
        result.images,
        result.quarantined,
        result.duplicates_dropped,
        report_path,
    )
    for rule in result.rules:
        if not rule.passed:
            log.warning("%s rule failed: %s (%s)", rule.severity, rule.rule, rule.observed)


def _sentence(rule: RuleResult) -> str:
    fix = f"; {rule.fix}" if rule.fix else ""
    return f"expected {rule.rule}, found {rule.observed}{fix}."
