"""The blessing: every rule the candidate must pass, with its numbers. Floors on accuracy and
macro F1 always; against a served model, no regression of the chosen metric and no class whose
recall drops too far; with ``robust_epsilon``, a floor on PGD robust accuracy there and no
regression of it against a served model that has it."""

from __future__ import annotations

from imgclf.components.evaluation.metrics import ModelMetrics
from imgclf.components.evaluation.robustness import Robustness
from imgclf.components.parameters import BlessingRules


def blessing_checks(
    candidate: ModelMetrics,
    baseline: ModelMetrics | None,
    rules: BlessingRules,
    robustness: Robustness | None = None,
    baseline_robustness: Robustness | None = None,
    robustness_skipped: str | None = None,
) -> list[dict]:
    """Every rule with its numbers: a floor on accuracy and macro F1 always; with a baseline,
    no regression of the chosen metric and no class whose recall drops too far; the
    robustness rules when ``rules.robust_epsilon`` is set."""
    return [
        *_accuracy_checks(candidate, baseline, rules),
        *_robustness_checks(robustness, baseline_robustness, rules, robustness_skipped),
    ]


def _accuracy_checks(
    candidate: ModelMetrics, baseline: ModelMetrics | None, rules: BlessingRules
) -> list[dict]:
    checks = [
        _check(
            f"accuracy >= min_accuracy ({rules.min_accuracy:g})",
            candidate.accuracy,
            rules.min_accuracy,
        ),
        _check(
            f"macro F1 >= min_macro_f1 ({rules.min_macro_f1:g})",
            candidate.macro_f1,
            rules.min_macro_f1,
        ),
    ]
    if baseline is None:
        return checks
    metric = rules.regression_metric
    if getattr(baseline, metric) is None or getattr(candidate, metric) is None:
        raise ValueError(f"{metric} is undefined on this test split; choose another metric.")
    checks.append(
        _check(
            f"{metric} >= baseline {metric} - max_regression ({rules.max_regression:g})",
            getattr(candidate, metric),
            getattr(baseline, metric) - rules.max_regression,
        )
    )
    drops = {
        label: baseline.per_class[label]["recall"] - candidate.per_class[label]["recall"]
        for label in baseline.per_class
        if label in candidate.per_class and candidate.per_class[label]["support"] > 0
    }
    if drops:
        worst = max(drops, key=drops.get)
        checks.append(
            {
                "rule": "no class recall drops by more than max_class_recall_drop "
                f"({rules.max_class_recall_drop:g})",
                "candidate": drops[worst],
                "threshold": rules.max_class_recall_drop,
                "passed": drops[worst] <= rules.max_class_recall_drop,
                "detail": f"largest drop: {worst}, recall {baseline.per_class[worst]['recall']:.3f}"
                f" -> {candidate.per_class[worst]['recall']:.3f}",
            }
        )
    return checks


def _robustness_checks(
    candidate: Robustness | None,
    baseline: Robustness | None,
    rules: BlessingRules,
    skipped: str | None,
) -> list[dict]:
    epsilon = rules.robust_epsilon
    if epsilon == 0:
        return []
    name = f"PGD robust accuracy at {epsilon:g} grey levels"
    floor = f"{name} >= min_robust_accuracy ({rules.min_robust_accuracy:g})"
    if candidate is None:
        # A rule that was asked for and cannot be judged refuses: shipping unjudged would
        # let a model through that the rule was set to stop.
        return [
            {
                "rule": floor,
                "candidate": float("nan"),
                "threshold": rules.min_robust_accuracy,
                "passed": False,
                "detail": f"not measured: {skipped or 'the candidate has no pixel signatures'}",
            }
        ]
    checks = [_check(floor, candidate.at("pgd", epsilon), rules.min_robust_accuracy)]
    if baseline is not None:
        checks.append(
            _check(
                f"{name} >= baseline's - max_robust_regression ({rules.max_robust_regression:g})",
                candidate.at("pgd", epsilon),
                baseline.at("pgd", epsilon) - rules.max_robust_regression,
            )
        )
    return checks


def _check(rule: str, candidate: float, threshold: float) -> dict:
    return {
        "rule": rule,
        "candidate": candidate,
        "threshold": threshold,
        "passed": candidate >= threshold,
    }
