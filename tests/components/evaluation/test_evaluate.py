import json

import numpy as np
import pytest

from conftest import IMAGE_SIZE, _train_small_model, keras_model_of
from imgclf.components import manifest
from imgclf.components.evaluation.blessing import blessing_checks
from imgclf.components.evaluation.evaluate import BaselineUnscorable, evaluate
from imgclf.components.evaluation.metrics import (
    Predictions,
    classification_metrics,
    expected_calibration_error,
    multi_label_metrics,
)
from imgclf.components.evaluation.robustness import Robustness
from imgclf.components.parameters import (
    BlessingRules,
    PreprocessSettings,
    ServingTarget,
    SettingsError,
)
from imgclf.components.serving.push import push
from imgclf.components.transform.preprocess import preprocess

CLASSES = ["cat", "dog", "owl"]


def _predictions(scores) -> Predictions:
    scores = np.array(scores, dtype=float)
    return Predictions([CLASSES[i] for i in scores.argmax(axis=1)], scores, CLASSES)


def _one_hot(predicted, confidence=0.8):
    rest = (1 - confidence) / 2
    return _predictions([[confidence if c == p else rest for c in CLASSES] for p in predicted])


def test_classification_metrics_on_known_predictions():
    truth = ["cat", "cat", "cat", "dog", "dog", "owl"]
    metrics = classification_metrics(truth, _one_hot(["cat", "cat", "dog", "dog", "dog", "cat"]))
    assert metrics.accuracy == pytest.approx(4 / 6)
    assert metrics.labels == CLASSES
    assert metrics.confusion_matrix == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics.per_class["cat"]["precision"] == pytest.approx(2 / 3)
    assert metrics.per_class["owl"]["recall"] == 0
    # F1: cat 2/3, dog 0.8, owl 0; weighted by support 3, 2, 1
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)
    assert metrics.weighted_f1 == pytest.approx((3 * 2 / 3 + 2 * 0.8) / 6)
    assert metrics.top_k == 3 and metrics.top_k_accuracy == 1.0


def test_top_k_auc_and_calibration():
    truth = ["cat", "dog", "owl", "owl"]
    scores = [[0.6, 0.3, 0.1], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]]
    metrics = classification_metrics(truth, _predictions(scores))
    assert metrics.accuracy == 0.5
    # Only 3 classes, so top-3 is certain; AUC of "cat" from its column: positives 0.6 vs
    # negatives 0.5, 0.2, 0.1, all lower.
    assert metrics.per_class["cat"]["roc_auc"] == 1.0
    assert metrics.per_class["owl"]["roc_auc"] == 0.75  # ties with negatives count half
    ece = expected_calibration_error(truth, _predictions(scores))
    # bins: 0.6 right, 0.5 wrong, 0.7 wrong, 0.8 right -> |1-.6|+|0-.5|+|0-.7|+|1-.8| over 4
    assert ece == pytest.approx((0.4 + 0.5 + 0.7 + 0.2) / 4)


def _multi_label(scores, classes=CLASSES, threshold=0.5) -> Predictions:
    scores = np.array(scores, dtype=float)
    top = [classes[i] for i in scores.argmax(axis=1)]
    return Predictions(top, scores, classes, positives=scores >= threshold)


def test_multi_label_metrics_on_known_predictions():
    truth = [["cat", "dog"], ["dog"], ["owl"], ["cat", "owl"], ["dog"]]
    scores = [
        [0.9, 0.6, 0.2],
        [0.3, 0.8, 0.1],
        [0.4, 0.2, 0.7],
        [0.7, 0.1, 0.15],  # owl missed
        [0.1, 0.9, 0.2],
    ]
    metrics = multi_label_metrics(truth, _multi_label(scores))
    assert metrics.task == "multi-label" and metrics.confusion_matrix == []
    assert metrics.accuracy == pytest.approx(4 / 5)  # the label set is exactly right
    assert metrics.per_class["owl"] == pytest.approx(
        {
            "precision": 1.0,
            "recall": 0.5,
            "f1": 2 / 3,
            "support": 2,
            # positives 0.7 and 0.15 against negatives 0.2, 0.2, 0.1: 4 of 6 pairs ordered
            "roc_auc": 2 / 3,
            # ranked 0.7 (hit), 0.2, 0.2, 0.15 (hit): precision 1 at recall 0.5, 0.5 at 1
            "average_precision": 0.75,
        }
    )
    assert metrics.per_class["dog"]["support"] == 3
    assert metrics.macro_f1 == pytest.approx((1 + 1 + 2 / 3) / 3)
    assert metrics.weighted_f1 == pytest.approx((2 + 3 + 2 * 2 / 3) / 7)
    assert metrics.macro_average_precision == pytest.approx((1 + 1 + 0.75) / 3)


def test_multi_label_top_k_and_calibration_use_every_class_score():
    classes = ["cat", "dog", "owl", "emu"]
    truth = [["owl"], ["cat"]]
    scores = [[0.9, 0.8, 0.1, 0.7], [0.9, 0.1, 0.1, 0.1]]
    metrics = multi_label_metrics(truth, _multi_label(scores, classes))
    assert metrics.accuracy == 0.5
    assert metrics.top_k == 3 and metrics.top_k_accuracy == 0.5  # owl is 4th of 4
    # 15 bins: {0.9 no, 0.9 yes}, {0.8 no}, {0.7 no}, {0.1 yes, 0.1 no x3}
    assert metrics.expected_calibration_error == pytest.approx(
        (2 * 0.4 + 0.8 + 0.7 + 4 * abs(0.1 - 0.25)) / 8
    )


def test_a_model_of_the_other_task_is_refused():
    with pytest.raises(ValueError, match="has no 'positives' output"):
        multi_label_metrics([["cat"]], _one_hot(["cat"]))
    with pytest.raises(ValueError, match="test split is multi-class"):
        classification_metrics(["cat"], _multi_label([[0.9, 0.1, 0.1]]))


def test_blessing_without_baseline_uses_the_floors_only():
    candidate = classification_metrics(["cat", "dog"], _one_hot(["cat", "cat"]))
    checks = blessing_checks(candidate, None, BlessingRules(min_accuracy=0.5))
    assert [c["passed"] for c in checks] == [True, True]
    checks = blessing_checks(candidate, None, BlessingRules(min_accuracy=0.5, min_macro_f1=0.5))
    assert [c["passed"] for c in checks] == [True, False]


def test_blessing_refuses_a_regression_of_the_chosen_metric():
    truth = ["cat", "dog", "cat", "dog"]
    baseline = classification_metrics(truth, _one_hot(["cat", "dog", "cat", "cat"]))  # 0.75
    candidate = classification_metrics(truth, _one_hot(["cat", "cat", "cat", "cat"]))  # 0.5
    rules = BlessingRules(min_accuracy=0.1, max_regression=0.2, max_class_recall_drop=1)
    checks = blessing_checks(candidate, baseline, rules)
    assert checks[2]["threshold"] == pytest.approx(0.55)
    assert [c["passed"] for c in checks] == [True, True, False, True]
    rules.max_regression = 0.25
    assert all(c["passed"] for c in blessing_checks(candidate, baseline, rules))


def test_a_class_regression_hidden_by_flat_accuracy_is_refused():
    truth = ["cat"] * 4 + ["dog"] * 4 + ["owl"] * 2
    baseline = classification_metrics(
        truth, _one_hot(["cat"] * 4 + ["dog", "dog", "cat", "cat"] + ["owl", "owl"])
    )
    candidate = classification_metrics(truth, _one_hot(["cat"] * 4 + ["dog"] * 4 + ["cat", "dog"]))
    assert candidate.accuracy == baseline.accuracy == 0.8
    checks = blessing_checks(candidate, baseline, BlessingRules(min_accuracy=0.5))
    recall = checks[-1]
    assert not recall["passed"]
    assert recall["candidate"] == pytest.approx(1.0)
    assert recall["detail"] == "largest drop: owl, recall 1.000 -> 0.000"


def test_unknown_regression_metric_is_refused():
    with pytest.raises(
        ValueError, match="regression_metric must be one of accuracy, macro_f1, macro_average"
    ):
        BlessingRules(regression_metric="loss")


def _robust(pgd_at_2: float) -> Robustness:
    return Robustness(
        epsilons=[0.0, 2.0],
        accuracy={"fgsm": [0.9, 0.8], "pgd": [0.9, pgd_at_2]},
        images=10,
        seconds=1,
    )


def test_blessing_refuses_a_candidate_below_min_robust_accuracy_naming_rule_and_numbers():
    candidate = classification_metrics(["cat", "dog"], _one_hot(["cat", "dog"]))
    rules = BlessingRules(robust_epsilon=2, min_robust_accuracy=0.5)
    floor = blessing_checks(candidate, None, rules, _robust(0.3))[-1]
    assert floor["rule"] == "PGD robust accuracy at 2 grey levels >= min_robust_accuracy (0.5)"
    assert (floor["candidate"], floor["threshold"], floor["passed"]) == (0.3, 0.5, False)
    assert blessing_checks(candidate, None, rules, _robust(0.5))[-1]["passed"]
    # Off by default: no robustness rule at all.
    assert len(blessing_checks(candidate, None, BlessingRules(), _robust(0.0))) == 2


def test_blessing_refuses_a_robust_accuracy_regression_against_a_served_model_that_has_it():
    truth = ["cat", "dog"]
    candidate = baseline = classification_metrics(truth, _one_hot(truth))
    rules = BlessingRules(robust_epsilon=2, max_robust_regression=0.05)
    guard = blessing_checks(candidate, baseline, rules, _robust(0.5), _robust(0.6))[-1]
    assert guard["rule"].startswith("PGD robust accuracy at 2 grey levels >= baseline's")
    assert guard["threshold"] == pytest.approx(0.55) and not guard["passed"]
    checks = blessing_checks(candidate, baseline, rules, _robust(0.5), None)
    assert not any("baseline's" in check["rule"] for check in checks)


def test_a_robustness_rule_that_cannot_be_judged_refuses_and_says_why():
    candidate = classification_metrics(["cat", "dog"], _one_hot(["cat", "dog"]))
    rules = BlessingRules(robust_epsilon=2)
    check = blessing_checks(candidate, None, rules, None, None, "multi-label: not attacked")[-1]
    assert not check["passed"] and check["detail"] == "not measured: multi-label: not attacked"


def test_robustness_epsilons_are_parsed_and_bad_ones_refused_by_name():
    assert BlessingRules().measured_epsilons() == [1.0, 2.0, 4.0, 8.0]
    assert BlessingRules(robustness_epsilons="8, 0.5").measured_epsilons() == [0.5, 8.0]
    assert BlessingRules(robustness_epsilons="none", robust_epsilon=3).measured_epsilons() == [3.0]
    assert BlessingRules(robustness_epsilons="none").measured_epsilons() == []
    for bad in ("1,two", "0,2", "300", "nan"):
        with pytest.raises(SettingsError, match="robustness_epsilons: "):
            BlessingRules(robustness_epsilons=bad)


def test_candidate_against_the_served_model(trained_model, prepared, tmp_path):
    serving_root = str(tmp_path / "serving")
    rules = BlessingRules(min_accuracy=0.0)
    first = evaluate(
        trained_model, prepared["validated"], ServingTarget(serving_root, "colours"), rules
    )
    test_images = manifest.counts_by_split(manifest.read(prepared["validated"]))["test"]
    assert first.baseline is None and first.baseline_version is None
    assert first.candidate.images == test_images
    assert first.blessed and len(first.checks) == 2

    push(trained_model, ServingTarget(serving_root, "colours"), prepared["validated"])
    out = tmp_path / "out"
    second = evaluate(
        trained_model,
        prepared["validated"],
        ServingTarget(serving_root, "colours"),
        rules,
        output_dir=str(out),
        keras_model_path=keras_model_of(trained_model),
    )
    assert second.baseline_version == 1
    assert second.baseline.accuracy == second.candidate.accuracy
    assert second.blessed and len(second.checks) == 4

    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["baseline_version"] == 1 and saved["blessed"] is True
    report = (out / "report.html").read_text()
    assert "Evaluation: blessed" in report and "Baseline: version 1" in report
    assert "rgba(76, 120, 168" in report  # the confusion heatmap
    gradcam = report[report.index("(Grad-CAM)") :]
    assert gradcam.count("<img src='data:image/png;base64,") == min(6, test_images)
    assert "Training curves" in report
    summary = (out / "summary.md").read_text()
    assert summary.startswith("## Evaluation: **Blessed**")
    assert "against served version 1" in summary

    # Robust accuracy by default at 1, 2, 4 and 8 grey levels, on every test image here.
    assert saved["robustness"]["epsilons"] == [0, 1, 2, 4, 8]
    assert saved["robustness"]["images"] == test_images
    assert saved["robustness"]["accuracy"]["pgd"][0] == pytest.approx(second.candidate.accuracy)
    robustness = report[report.index("<h2>Robustness</h2>") :]
    assert "<svg" in robustness and "candidate PGD" in robustness
    assert "| PGD robust accuracy at 8 grey levels |" in summary


def test_a_candidate_below_min_robust_accuracy_is_not_blessed(trained_model, prepared, tmp_path):
    out = tmp_path / "out"
    rules = BlessingRules(
        min_accuracy=0.0, robustness_epsilons="none", robust_epsilon=64, min_robust_accuracy=0.99
    )
    result = evaluate(
        trained_model,
        prepared["validated"],
        ServingTarget(str(tmp_path / "serving"), "colours"),
        rules,
        output_dir=str(out),
    )
    assert result.robustness.epsilons == [0.0, 64.0]
    assert not result.blessed
    summary = (out / "summary.md").read_text()
    assert "| PGD robust accuracy at 64 grey levels >= min_robust_accuracy (0.99) | **fail** |" in (
        summary
    )


def _retrained(work, prepared: dict[str, str], shuffle_labels: bool) -> str:
    """A model trained long enough to learn the colours, on the train labels as given or
    shuffled (as a bad data drop or a broken labelling job would leave them)."""
    frame = manifest.read(prepared["validated"])
    if shuffle_labels:
        train = frame["split"] == "train"
        rng = np.random.default_rng(0)
        frame.loc[train, "label"] = rng.permutation(frame.loc[train, "label"].to_numpy())
    manifest.write(frame, work / "validated")
    paths = {"examples": str(work / "examples"), "transform": str(work / "transform")}
    preprocess(
        str(work / "validated"),
        paths["examples"],
        paths["transform"],
        PreprocessSettings(image_size=IMAGE_SIZE),
    )
    return _train_small_model(
        work / "model", paths, epochs=20, batch_size=4, early_stopping_patience=20
    )


@pytest.mark.slow
def test_a_worse_retrain_is_refused_by_name_and_a_better_one_blessed(prepared, tmp_path):
    good = _retrained(tmp_path / "good", prepared, shuffle_labels=False)
    shuffled = _retrained(tmp_path / "shuffled", prepared, shuffle_labels=True)
    rules = BlessingRules(min_accuracy=0.0, max_regression=0.02)
    good_served = str(tmp_path / "good-served")
    push(good, ServingTarget(good_served, "colours"), prepared["validated"])
    worse = evaluate(shuffled, prepared["validated"], ServingTarget(good_served, "colours"), rules)
    assert worse.baseline.accuracy >= 0.6, "the good model did not learn the colours"
    assert not worse.blessed
    failed = [check["rule"] for check in worse.checks if not check["passed"]]
    assert any(rule.startswith("accuracy >= baseline accuracy") for rule in failed), failed

    # Against the shuffled model the good one wins on accuracy. The per-class recall rule is
    # off here: a model that calls everything one colour has perfect recall on that colour.
    worse_served = str(tmp_path / "worse-served")
    push(shuffled, ServingTarget(worse_served, "colours"), prepared["validated"])
    rules = BlessingRules(min_accuracy=0.0, max_regression=0.02, max_class_recall_drop=1.0)
    better = evaluate(good, prepared["validated"], ServingTarget(worse_served, "colours"), rules)
    assert better.blessed and better.baseline_version == 1


def test_a_baseline_that_cannot_be_scored_fails_the_step_unless_told_to_judge_on_floors(
    trained_model, prepared, tmp_path, caplog
):
    """Failing open would let a worse model ship whenever the served one cannot be read."""
    broken = tmp_path / "serving" / "colours" / "3"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"garbage")
    serving = ServingTarget(str(tmp_path / "serving"), "colours")
    with pytest.raises(BaselineUnscorable, match="served version 3 .* unscorable_baseline="):
        evaluate(trained_model, prepared["validated"], serving, BlessingRules(min_accuracy=0.0))
    assert "Attempt 3: baseline version 3" in caplog.text  # retried before failing

    on_floors = BlessingRules(min_accuracy=0.0, unscorable_baseline="judge_on_floors")
    result = evaluate(trained_model, prepared["validated"], serving, on_floors)
    assert result.baseline is None and result.baseline_version == 3
    assert result.baseline_error
    assert result.blessed


def test_the_baseline_can_be_served_from_a_bucket(trained_model, prepared, bucket):
    serving = ServingTarget(f"{bucket.root}/serving", "colours")
    push(trained_model, serving, prepared["validated"])
    result = evaluate(
        trained_model,
        prepared["validated"],
        serving,
        BlessingRules(min_accuracy=0.0),
    )
    assert result.baseline_version == 1 and result.baseline_error is None
    assert result.baseline.accuracy == result.candidate.accuracy


def test_a_multi_label_candidate_against_a_served_model(
    multi_label_model, multi_label_prepared, trained_model, prepared, tmp_path
):
    serving_root = str(tmp_path / "serving")
    # A multi-class model served under the name cannot be scored on label sets.
    push(trained_model, ServingTarget(serving_root, "corners"), prepared["validated"])
    out = tmp_path / "out"
    result = evaluate(
        multi_label_model,
        multi_label_prepared["validated"],
        ServingTarget(serving_root, "corners"),
        BlessingRules(
            min_accuracy=0.0,
            regression_metric="macro_average_precision",
            unscorable_baseline="judge_on_floors",  # the task changed on purpose
        ),
        output_dir=str(out),
    )
    assert result.baseline is None and "trained on single-label data" in result.baseline_error
    assert result.candidate.task == "multi-label"
    assert result.candidate.macro_average_precision > 0.9
    assert result.blessed and len(result.checks) == 2
    assert result.robustness is None
    assert "robust exact-set accuracy is not measured" in (out / "report.html").read_text()

    push(
        multi_label_model, ServingTarget(serving_root, "corners"), multi_label_prepared["validated"]
    )
    second = evaluate(
        multi_label_model,
        multi_label_prepared["validated"],
        ServingTarget(serving_root, "corners"),
        BlessingRules(min_accuracy=0.0, regression_metric="macro_average_precision"),
        output_dir=str(out),
    )
    assert second.baseline_version == 2 and second.baseline_error is None
    assert second.checks[2]["rule"].startswith("macro_average_precision >= baseline")
    assert second.blessed
    report = (out / "report.html").read_text()
    assert "average precision (macro)" in report and "exactly its true set" in report
    assert "rgba(76, 120, 168" not in report  # no confusion heatmap
