"""Validate: a great-expectations suite over the manifest, and a quarantine for broken files.

Every file is decoded with the very op preprocess uses, so a file that passes here cannot crash
the transform. Files that do not decode, or are smaller than ``min_side``, are quarantined:
left out of the validated manifest and listed with the reason. The rest of the suite guards
the dataset as a whole; a failed ``error`` rule stops the run with one sentence that says what
to change, a failed ``warning`` rule only shows in the report.
"""

from __future__ import annotations

import json
import logging
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from components import manifest, profile, report, serving_config, storage

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 50_000_000
VALIDATION_FILE = "validation.json"
# A class name becomes a folder name, a vocabulary entry and a serving output.
LABEL_PATTERN = r"^[^/\\\x00-\x1f\x7f]+$"
# Hash splits land within a point or two of the fractions; folder splits are the user's.
SPLIT_SHARE_TOLERANCE = 0.1
SUPPORTED_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")
_TF_ERROR_NOISE = re.compile(r"\{\{[^}]*\}\}\s*|\s*\[Op:\w+\]")
_DECODERS = 8
_PROGRESS_EVERY = 500


class DataValidationError(RuntimeError):
    """The data failed a rule that makes training on it pointless."""


@dataclass
class RuleResult:
    rule: str
    severity: str  # "error" stops the run, "warning" is reported
    passed: bool
    observed: str
    expectation: str
    fix: str = ""


@dataclass
class DriftLimits:
    """Drift measures against the served model's data (None without one) and their limits."""

    measures: dict[str, float] | None
    baseline_version: int | None
    warning: float
    max_label_drift: float


@dataclass
class SplitFractions:
    train_fraction: float
    validation_fraction: float

    def expected(self) -> dict[str, float]:
        return {
            "train": self.train_fraction,
            "validation": self.validation_fraction,
            "test": 1 - self.train_fraction - self.validation_fraction,
        }


@dataclass
class ValidationResult:
    images: dict[str, int]
    quarantined: int
    duplicates_dropped: int = 0
    rules: list[RuleResult] = field(default_factory=list)
    drift: dict[str, float] | None = None
    drift_baseline_version: int | None = None

    @property
    def failures(self) -> list[RuleResult]:
        return [r for r in self.rules if r.severity == "error" and not r.passed]


def validate(
    manifest_dir: str,
    output_dir: str,
    report_path: str,
    min_side: int = 32,
    min_images_per_class: int = 5,
    max_invalid_fraction: float = 0.05,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_imbalance_ratio: float = 10.0,
    serving_root: str = "",
    model_name: str = "",
    drift_warning: float = 0.15,
    max_label_drift: float = 0.5,
    train_fraction: float = 0.8,
    validation_fraction: float = 0.1,
) -> ValidationResult:
    """Writes the validated manifest and ``quarantine.csv`` to ``output_dir`` and the HTML
    report to ``report_path``; raises :class:`DataValidationError` on a failed ``error`` rule.

    ``quarantine.csv`` lists the invalid files and, apart from them, the later copies of files
    found in two splits: those are fine images, dropped so that no test image is trained on.

    With ``serving_root`` and ``model_name``, the data is compared with the profile stored
    next to the model being served (drift); ``data_profile.json`` in ``output_dir`` is this
    data's profile, for push to store next to the next model.
    """
    frame = manifest.read(manifest_dir)
    frame["quarantine_reason"], frame["brightness"] = check_files(frame, min_side, max_pixels)
    valid = frame[frame["quarantine_reason"] == ""]
    leaked = leaked_copies(valid)
    kept = valid.drop(index=leaked.index).reset_index(drop=True)
    current_profile = profile.data_profile(kept, kept["brightness"])
    baseline = served_profile(serving_root, model_name)
    drift = profile.drift(current_profile, baseline[1]) if baseline else None
    quarantined = pd.concat([frame[frame["quarantine_reason"] != ""], leaked]).rename(
        columns={"quarantine_reason": "reason"}
    )
    rules = run_suite(
        frame,
        valid,
        kept,
        min_side,
        min_images_per_class,
        max_invalid_fraction,
        max_imbalance_ratio,
        DriftLimits(drift, baseline[0] if baseline else None, drift_warning, max_label_drift),
        SplitFractions(train_fraction, validation_fraction),
    )
    result = ValidationResult(
        images=manifest.counts_by_split(kept),
        quarantined=len(quarantined) - len(leaked),
        duplicates_dropped=len(leaked),
        rules=rules,
        drift=drift,
        drift_baseline_version=baseline[0] if baseline else None,
    )

    manifest.write(kept[manifest.columns(kept)], output_dir)
    profile.write(current_profile, output_dir)
    manifest.write(
        quarantined[manifest.quarantine_columns(frame)], output_dir, manifest.QUARANTINE_FILE
    )
    Path(report_path).parent.mkdir(parents=True, exist_ok=True)
    Path(report_path).write_text(report.validation_html(result, kept, quarantined))
    (Path(output_dir) / VALIDATION_FILE).write_text(json.dumps(asdict(result), indent=2))
    log.info(
        "Validation: %s images per split, %d quarantined, %d leaked duplicates dropped; "
        "report at %s",
        result.images,
        result.quarantined,
        result.duplicates_dropped,
        report_path,
    )
    for rule in rules:
        if not rule.passed:
            log.warning("%s rule failed: %s (%s)", rule.severity, rule.rule, rule.observed)
    if result.failures:
        raise DataValidationError(
            "Data validation failed: " + " ".join(_sentence(rule) for rule in result.failures)
        )
    return result


def check_files(
    frame: pd.DataFrame, min_side: int, max_pixels: int
) -> tuple[list[str], list[float | None]]:
    """A quarantine reason per row (empty for a usable image) and the brightness of every
    image that decodes. Runs the decode checks in parallel."""

    def check(row) -> tuple[str, float | None]:
        if row.bytes == 0:
            return "empty file", None
        # The header's size is checked before any decoding: a decompression bomb is a few
        # kilobytes that decode to gigabytes.
        if pd.notna(row.width) and row.width * row.height > max_pixels:
            return (
                f"{row.width}x{row.height} is {row.width * row.height:,} pixels, over "
                f"max_pixels={max_pixels:,}; refused before decoding"
            ), None
        error, brightness = inspect_image(row.uri)
        if error:
            return error, None
        if row.format not in SUPPORTED_FORMATS:
            return (
                f"unsupported format {row.format or 'unknown'}; "
                f"supported: {', '.join(SUPPORTED_FORMATS)}"
            ), brightness
        if min(row.width, row.height) < min_side:
            return f"{row.width}x{row.height} is smaller than min_side={min_side}", brightness
        return "", brightness

    reasons, brightness = [], []
    with ThreadPoolExecutor(max_workers=_DECODERS) as pool:
        for done, (reason, level) in enumerate(pool.map(check, frame.itertuples()), start=1):
            reasons.append(reason)
            brightness.append(level)
            if done % _PROGRESS_EVERY == 0 or done == len(frame):
                log.info("Checked %d/%d files", done, len(frame))
    return reasons, brightness


def leaked_copies(frame: pd.DataFrame) -> pd.DataFrame:
    """Copies of a file that also sits in an earlier split (train, validation, test order),
    with the reason they are dropped."""
    order = frame["split"].map({split: i for i, split in enumerate(manifest.SPLITS)})
    ranked = frame.assign(_order=order).sort_values(["sha256", "_order", "uri"])
    first = ranked.drop_duplicates("sha256").set_index("sha256")
    later = ranked[
        ranked.duplicated("sha256") & (ranked["split"] != ranked["sha256"].map(first["split"]))
    ]
    reasons = [
        f"identical to {first.at[sha, 'uri']} in {first.at[sha, 'split']}: dropped from "
        f"{split} so that no image is both trained and evaluated on"
        for sha, split in zip(later["sha256"], later["split"], strict=True)
    ]
    return later.drop(columns="_order").assign(quarantine_reason=reasons)


def inspect_image(uri: str) -> tuple[str, float | None]:
    """``(why the file does not decode the way preprocess decodes it, or "", its mean
    brightness in [0, 1] when it decodes)``."""
    import tensorflow as tf

    try:
        data = storage.read_bytes(uri)
    except OSError as error:
        return f"unreadable: {error}", None
    if not data:
        return "empty file", None
    try:
        pixels = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.InvalidArgumentError, tf.errors.UnknownError) as error:
        message = _TF_ERROR_NOISE.sub("", error.message.splitlines()[0]).strip()
        return f"does not decode as an image: {message}", None
    return "", float(tf.reduce_mean(tf.cast(pixels, tf.float32))) / 255.0


def served_profile(serving_root: str, model_name: str) -> tuple[int, dict] | None:
    """``(version, data profile)`` of the model being served, if it has one."""
    if not (serving_root and model_name):
        return None
    served = serving_config.served_version(serving_root, model_name)
    if served is None:
        return None
    stored = profile.read(storage.join(served[1], "assets.extra"))
    return (served[0], stored) if stored else None


def run_suite(
    frame: pd.DataFrame,
    valid: pd.DataFrame,
    kept: pd.DataFrame,
    min_side: int,
    min_images_per_class: int,
    max_invalid_fraction: float,
    max_imbalance_ratio: float,
    drift: DriftLimits,
    splits: SplitFractions,
) -> list[RuleResult]:
    """``frame``: every file; ``valid``: the files that decode; ``kept``: ``valid`` less the
    copies leaked across splits."""
    import great_expectations as gx

    context = _context()
    train_counts = _train_counts(kept)
    tables = {
        "files": frame.assign(usable=frame["quarantine_reason"] == ""),
        "labels": manifest.per_label(kept)[["label"]],
        "images": kept.assign(min_side=kept[["width", "height"]].min(axis=1)),
        "train_classes": train_counts,
        "split_contents": valid.drop_duplicates(["sha256", "split"]),
        "split_shares": _split_shares(kept, splits),
    }
    largest_class = int(train_counts["train_images"].max()) if len(train_counts) else 0
    if drift.measures is not None:
        tables["drift"] = pd.DataFrame([drift.measures])
    expectations = {
        "files": [
            (
                gx.expectations.ExpectColumnValuesToBeInSet(
                    column="usable", value_set=[True], mostly=1 - max_invalid_fraction
                ),
                "error",
                f"at most max_invalid_fraction={max_invalid_fraction:g} of the files quarantined",
                f"fix or remove the files listed in the report, or raise max_invalid_fraction "
                f"(now {max_invalid_fraction:g})",
            ),
            (
                gx.expectations.ExpectColumnValuesToBeInSet(
                    column="quarantine_reason", value_set=[""]
                ),
                "warning",
                f"every file decodes and no side is under min_side={min_side}",
                "",
            ),
        ],
        "labels": [
            (
                gx.expectations.ExpectColumnUniqueValueCountToBeBetween(
                    column="label", min_value=2
                ),
                "error",
                "at least 2 classes",
                "add images of a second class",
            ),
            (
                gx.expectations.ExpectColumnValuesToMatchRegex(column="label", regex=LABEL_PATTERN),
                "error",
                "labels are names without path separators or control characters",
                "rename the classes named",
            ),
        ],
        "images": [
            (
                gx.expectations.ExpectColumnValuesToBeBetween(
                    column="min_side", min_value=min_side
                ),
                "error",
                f"no side under min_side={min_side} after quarantine",
                "",
            ),
        ],
        "train_classes": [
            (
                gx.expectations.ExpectColumnValuesToBeBetween(
                    column="train_images", min_value=min_images_per_class
                ),
                "error",
                f"at least min_images_per_class={min_images_per_class} train images per class",
                f"add train images to the classes named, or lower min_images_per_class "
                f"(now {min_images_per_class})",
            ),
            (
                gx.expectations.ExpectColumnValuesToBeBetween(
                    column="train_images", min_value=largest_class / max_imbalance_ratio
                ),
                "warning",
                f"no class with under 1/max_imbalance_ratio={max_imbalance_ratio:g} of the "
                "largest class's train images",
                "",
            ),
        ],
        "split_contents": [
            (
                gx.expectations.ExpectColumnValuesToBeUnique(column="sha256"),
                "warning",
                "no identical file in two splits (later copies are dropped)",
                "",
            ),
        ],
        "split_shares": [
            (
                gx.expectations.ExpectColumnValuesToBeBetween(
                    column="deviation", max_value=SPLIT_SHARE_TOLERANCE
                ),
                "warning",
                f"split shares within {SPLIT_SHARE_TOLERANCE:g} of train_fraction="
                f"{splits.train_fraction:g} and validation_fraction={splits.validation_fraction:g}",
                "",
            ),
        ],
    }
    if drift.measures is not None:
        against = f"the data of served version {drift.baseline_version}"
        expectations["drift"] = [
            (
                gx.expectations.ExpectColumnValuesToBeBetween(
                    column="label_tvd", max_value=drift.max_label_drift
                ),
                "error",
                f"label distribution within max_label_drift={drift.max_label_drift:g} (total "
                f"variation) of {against}",
                "if the new class mix is intended, raise max_label_drift",
            ),
            (
                gx.expectations.ExpectColumnValuesToBeBetween(
                    column="label_tvd", max_value=drift.warning
                ),
                "warning",
                f"label distribution within drift_warning={drift.warning:g} of {against}",
                "",
            ),
            (
                gx.expectations.ExpectColumnValuesToBeBetween(
                    column="size_shift", max_value=drift.warning
                ),
                "warning",
                f"median shorter side within drift_warning={drift.warning:g} (relative) of "
                f"{against}",
                "",
            ),
            (
                gx.expectations.ExpectColumnValuesToBeBetween(
                    column="brightness_shift", max_value=drift.warning
                ),
                "warning",
                f"mean brightness within drift_warning={drift.warning:g} (of full scale) of "
                f"{against}",
                "",
            ),
        ]
    rules = []
    for table, checks in expectations.items():
        suite = gx.ExpectationSuite(name=table)
        for expectation, _, description, _ in checks:
            # Results are matched to rules by this tag, not by their order. (A suite merges
            # expectations of equal configuration, so no two rules may share one.)
            expectation.meta = {"rule": description}
            suite.add_expectation(expectation)
        outcomes = {
            outcome.expectation_config.meta["rule"]: outcome
            for outcome in _batch(context, table, tables[table]).validate(suite).results
        }
        for _, severity, description, fix in checks:
            outcome = outcomes[description]
            rules.append(
                RuleResult(
                    rule=description,
                    severity=severity,
                    passed=bool(outcome.success),
                    observed=_observed(table, tables[table], outcome, min_images_per_class),
                    expectation=outcome.expectation_config.type,
                    fix=fix,
                )
            )
    return rules


def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _batch(context, name: str, table: pd.DataFrame):
    asset = context.data_sources.add_pandas(name).add_dataframe_asset(name)
    definition = asset.add_batch_definition_whole_dataframe(name)
    return definition.get_batch(batch_parameters={"dataframe": table})


def _split_shares(kept: pd.DataFrame, splits: SplitFractions) -> pd.DataFrame:
    counts = manifest.counts_by_split(kept)
    total = max(sum(counts.values()), 1)
    rows = [
        {"split": split, "share": counts[split] / total, "expected": expected}
        for split, expected in splits.expected().items()
    ]
    frame = pd.DataFrame(rows)
    return frame.assign(deviation=(frame["share"] - frame["expected"]).abs())


def _train_counts(kept: pd.DataFrame) -> pd.DataFrame:
    """Train images per class, including classes seen only in validation or test (zero)."""
    per_label = manifest.per_label(kept)
    train = per_label[per_label["split"] == "train"]["label"].value_counts()
    labels = sorted(per_label["label"].unique())
    return pd.DataFrame({"label": labels, "train_images": [int(train.get(c, 0)) for c in labels]})


def _observed(table: str, data: pd.DataFrame, outcome, min_images_per_class: int) -> str:
    """What the data showed, in words, for the report and the failure sentence."""
    result = outcome.result
    if "observed_value" in result:
        return f"{result['observed_value']}"
    unexpected = result.get("unexpected_count", 0)
    total = result.get("element_count", len(data))
    if outcome.expectation_config.type == "expect_column_values_to_match_regex":
        names = sorted(set(map(str, result.get("partial_unexpected_list", []))))
        return "bad labels: " + ", ".join(repr(name) for name in names) if names else "none"
    if table == "split_shares":
        return ", ".join(f"{row.split} {row.share:.2f}" for row in data.itertuples())
    if table == "drift":
        column = outcome.expectation_config.kwargs["column"]
        return f"{column} = {float(data.at[0, column]):.3f}"
    if table == "files":
        share = 100 * unexpected / max(total, 1)
        return f"{unexpected} of {total} files quarantined ({share:.1f}%)"
    if table == "train_classes":
        if data.empty:
            return "no usable images"
        short = data[data["train_images"] < min_images_per_class]
        if short.empty:
            fewest = data.loc[data["train_images"].idxmin()]
            most = data.loc[data["train_images"].idxmax()]
            return (
                f"fewest: {fewest['label']} ({fewest['train_images']}), "
                f"most: {most['label']} ({most['train_images']})"
            )
        return "classes short of train images: " + ", ".join(
            f"{row.label} ({row.train_images})" for row in short.itertuples()
        )
    if table == "split_contents":
        copies = data[data["sha256"].duplicated(keep=False)].sort_values(["sha256", "uri"])
        if copies.empty:
            return "none"
        shown = ", ".join(copies["uri"].head(6))
        return f"{copies['sha256'].nunique()} identical files in more than one split ({shown})"
    return f"{unexpected} of {total} values out of range"


def _sentence(rule: RuleResult) -> str:
    fix = f"; {rule.fix}" if rule.fix else ""
    return f"expected {rule.rule}, found {rule.observed}{fix}."
