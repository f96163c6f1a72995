"""The great-expectations suite validate runs: one table per concern, each rule with its severity
and, for an error, what to change.

A failed ``error`` rule stops the run; a failed ``warning`` rule only shows in the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from imgclf.components import manifest
from imgclf.components.parameters import IngestSettings, ValidationRules

# A class name becomes a folder name, a vocabulary entry and a serving output.
LABEL_PATTERN = r"^[^/\\\x00-\x1f\x7f]+$"
# Hash splits land within a point or two of the fractions; folder splits are the user's.
SPLIT_SHARE_TOLERANCE = 0.1


@dataclass
class RuleResult:
    rule: str
    severity: str  # "error" stops the run, "warning" is reported
    passed: bool
    observed: str
    expectation: str
    fix: str = ""


@dataclass
class Drift:
    """Drift measures against the served model's data (None without one)."""

    measures: dict[str, float] | None
    baseline_version: int | None


@dataclass
class _Rule:
    expectation: object  # a great_expectations Expectation
    severity: str
    description: str
    fix: str = ""


def run_suite(
    frame: pd.DataFrame,
    valid: pd.DataFrame,
    kept: pd.DataFrame,
    rules: ValidationRules,
    drift: Drift,
    splits: IngestSettings,
) -> list[RuleResult]:
    """``frame``: every file; ``valid``: the files that decode; ``kept``: ``valid`` less the
    copies leaked across splits."""
    train_counts = _train_counts(kept)
    sides = kept.assign(min_side=kept[["width", "height"]].min(axis=1))
    tables = {
        "files": (frame.assign(usable=frame["quarantine_reason"] == ""), _file_rules(rules)),
        "labels": (manifest.per_label(kept)[["label"]], _label_rules()),
        "images": (sides, _image_rules(rules)),
        "train_classes": (train_counts, _class_rules(rules, train_counts)),
        "split_contents": (valid.drop_duplicates(["sha256", "split"]), _copy_rules()),
        "split_shares": (_split_shares(kept, splits), _share_rules(splits)),
    }
    if drift.measures is not None:
        tables["drift"] = (pd.DataFrame([drift.measures]), _drift_rules(rules, drift))
    context = _context()
    results = []
    for table, (data, checks) in tables.items():
        outcomes = _validate(context, table, data, checks)
        results += [
            RuleResult(
                rule=check.description,
                severity=check.severity,
                passed=bool(outcomes[check.description].success),
                observed=_observed(table, data, outcomes[check.description], rules),
                expectation=outcomes[check.description].expectation_config.type,
                fix=check.fix,
            )
            for check in checks
        ]
    return results


def _file_rules(rules: ValidationRules) -> list[_Rule]:
    import great_expectations as gx

    limit = rules.max_invalid_fraction
    return [
        _Rule(
            gx.expectations.ExpectColumnValuesToBeInSet(
                column="usable", value_set=[True], mostly=1 - limit
            ),
            "error",
            f"at most max_invalid_fraction={limit:g} of the files quarantined",
            f"fix or remove the files listed in the report, or raise max_invalid_fraction "
            f"(now {limit:g})",
        ),
        _Rule(
            gx.expectations.ExpectColumnValuesToBeInSet(column="quarantine_reason", value_set=[""]),
            "warning",
            f"every file decodes and no side is under min_side={rules.min_side}",
        ),
    ]


def _label_rules() -> list[_Rule]:
    import great_expectations as gx

    return [
        _Rule(
            gx.expectations.ExpectColumnUniqueValueCountToBeBetween(column="label", min_value=2),
            "error",
            "at least 2 classes",
            "add images of a second class",
        ),
        _Rule(
            gx.expectations.ExpectColumnValuesToMatchRegex(column="label", regex=LABEL_PATTERN),
            "error",
            "labels are names without path separators or control characters",
            "rename the classes named",
        ),
    ]


def _image_rules(rules: ValidationRules) -> list[_Rule]:
    import great_expectations as gx

    return [
        _Rule(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="min_side", min_value=rules.min_side
            ),
            "error",
            f"no side under min_side={rules.min_side} after quarantine",
        )
    ]


def _class_rules(rules: ValidationRules, train_counts: pd.DataFrame) -> list[_Rule]:
    import great_expectations as gx

    largest_class = int(train_counts["train_images"].max()) if len(train_counts) else 0
    needed, ratio = rules.min_images_per_class, rules.max_imbalance_ratio
    return [
        _Rule(
            gx.expectations.ExpectColumnValuesToBeBetween(column="train_images", min_value=needed),
            "error",
            f"at least min_images_per_class={needed} train images per class",
            f"add train images to the classes named, or lower min_images_per_class (now {needed})",
        ),
        _Rule(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="train_images", min_value=largest_class / ratio
            ),
            "warning",
            f"no class with under 1/max_imbalance_ratio={ratio:g} of the largest class's train "
            "images",
        ),
    ]


def _copy_rules() -> list[_Rule]:
    import great_expectations as gx

    return [
        _Rule(
            gx.expectations.ExpectColumnValuesToBeUnique(column="sha256"),
            "warning",
            "no identical file in two splits (later copies are dropped)",
        )
    ]


def _share_rules(splits: IngestSettings) -> list[_Rule]:
    import great_expectations as gx

    return [
        _Rule(
            gx.expectations.ExpectColumnValuesToBeBetween(
                column="deviation", max_value=SPLIT_SHARE_TOLERANCE
            ),
            "warning",
            f"split shares within {SPLIT_SHARE_TOLERANCE:g} of train_fraction="
            f"{splits.train_fraction:g} and validation_fraction={splits.validation_fraction:g}",
        )
    ]


def _drift_rules(rules: ValidationRules, drift: Drift) -> list[_Rule]:
    import great_expectations as gx

    against = f"the data of served version {drift.baseline_version}"
    warning = rules.drift_warning

    def within(column: str, limit: float):
        return gx.expectations.ExpectColumnValuesToBeBetween(column=column, max_value=limit)

    return [
        _Rule(
            within("label_tvd", rules.max_label_drift),
            "error",
            f"label distribution within max_label_drift={rules.max_label_drift:g} (total "
            f"variation) of {against}",
            "if the new class mix is intended, raise max_label_drift",
        ),
        _Rule(
            within("label_tvd", warning),
            "warning",
            f"label distribution within drift_warning={warning:g} of {against}",
        ),
        _Rule(
            within("size_shift", warning),
            "warning",
            f"median shorter side within drift_warning={warning:g} (relative) of {against}",
        ),
        _Rule(
            within("brightness_shift", warning),
            "warning",
            f"mean brightness within drift_warning={warning:g} (of full scale) of {against}",
        ),
    ]


def _validate(context, table: str, data: pd.DataFrame, checks: list[_Rule]) -> dict:
    """Each rule's outcome on ``data``, by the rule's description."""
    import great_expectations as gx

    suite = gx.ExpectationSuite(name=table)
    for check in checks:
        # Results are matched to rules by this tag, not by their order. (A suite merges
        # expectations of equal configuration, so no two rules may share one.)
        check.expectation.meta = {"rule": check.description}
        suite.add_expectation(check.expectation)
    asset = context.data_sources.add_pandas(table).add_dataframe_asset(table)
    batch = asset.add_batch_definition_whole_dataframe(table).get_batch(
        batch_parameters={"dataframe": data}
    )
    return {
        outcome.expectation_config.meta["rule"]: outcome
        for outcome in batch.validate(suite).results
    }


def _context():
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def _split_shares(kept: pd.DataFrame, splits: IngestSettings) -> pd.DataFrame:
    counts = manifest.counts_by_split(kept)
    total = max(sum(counts.values()), 1)
    expected = {
        "train": splits.train_fraction,
        "validation": splits.validation_fraction,
        "test": 1 - splits.train_fraction - splits.validation_fraction,
    }
    frame = pd.DataFrame(
        [
            {"split": split, "share": counts[split] / total, "expected": share}
            for split, share in expected.items()
        ]
    )
    return frame.assign(deviation=(frame["share"] - frame["expected"]).abs())


def _train_counts(kept: pd.DataFrame) -> pd.DataFrame:
    """Train images per class, including classes seen only in validation or test (zero)."""
    per_label = manifest.per_label(kept)
    train = per_label[per_label["split"] == "train"]["label"].value_counts()
    labels = sorted(per_label["label"].unique())
    return pd.DataFrame({"label": labels, "train_images": [int(train.get(c, 0)) for c in labels]})


def _observed(table: str, data: pd.DataFrame, outcome, rules: ValidationRules) -> str:
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
        return _class_counts_in_words(data, rules.min_images_per_class)
    if table == "split_contents":
        copies = data[data["sha256"].duplicated(keep=False)].sort_values(["sha256", "uri"])
        if copies.empty:
            return "none"
        shown = ", ".join(copies["uri"].head(6))
        return f"{copies['sha256'].nunique()} identical files in more than one split ({shown})"
    return f"{unexpected} of {total} values out of range"


def _class_counts_in_words(train_counts: pd.DataFrame, min_images_per_class: int) -> str:
    if train_counts.empty:
        return "no usable images"
    short = train_counts[train_counts["train_images"] < min_images_per_class]
    if short.empty:
        fewest = train_counts.loc[train_counts["train_images"].idxmin()]
        most = train_counts.loc[train_counts["train_images"].idxmax()]
        return (
            f"fewest: {fewest['label']} ({fewest['train_images']}), "
            f"most: {most['label']} ({most['train_images']})"
        )
    return "classes short of train images: " + ", ".join(
        f"{row.label} ({row.train_images})" for row in short.itertuples()
    )
