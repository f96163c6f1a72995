import json

import pytest

from components import manifest
from components.evaluate import (
    blessing_checks,
    classification_metrics,
    evaluate,
    write_outputs,
)
from components.push import push


def test_classification_metrics_on_known_predictions():
    truth = ["cat", "cat", "cat", "dog", "dog", "owl"]
    predicted = ["cat", "cat", "dog", "dog", "dog", "cat"]
    metrics = classification_metrics(truth, predicted)
    assert metrics.accuracy == pytest.approx(4 / 6)
    assert metrics.labels == ["cat", "dog", "owl"]
    assert metrics.confusion_matrix == [[2, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert metrics.per_class["cat"]["precision"] == pytest.approx(2 / 3)
    assert metrics.per_class["cat"]["recall"] == pytest.approx(2 / 3)
    assert metrics.per_class["owl"]["recall"] == 0
    # cat F1 2/3, dog F1 0.8, owl 0
    assert metrics.macro_f1 == pytest.approx((2 / 3 + 0.8 + 0) / 3)


def test_blessing_without_baseline_uses_the_floor_only():
    candidate = classification_metrics(["a", "b"], ["a", "a"])
    assert [c["passed"] for c in blessing_checks(candidate, None, 0.5, 0.0)] == [True]
    assert [c["passed"] for c in blessing_checks(candidate, None, 0.6, 0.0)] == [False]


def test_blessing_refuses_a_regression_beyond_the_allowance():
    baseline = classification_metrics(["a", "b", "a", "b"], ["a", "b", "a", "a"])  # 0.75
    candidate = classification_metrics(["a", "b", "a", "b"], ["a", "a", "a", "a"])  # 0.5
    checks = blessing_checks(candidate, baseline, 0.1, 0.2)
    assert checks[1]["threshold"] == pytest.approx(0.55)
    assert [c["passed"] for c in checks] == [True, False]
    assert all(c["passed"] for c in blessing_checks(candidate, baseline, 0.1, 0.25))


def test_candidate_against_the_served_model(trained_model, prepared, tmp_path):
    serving_root = str(tmp_path / "serving")
    first = evaluate(
        trained_model, prepared["validated"], serving_root, "colours", min_accuracy=0.0
    )
    test_images = manifest.counts_by_split(manifest.read(prepared["validated"]))["test"]
    assert first.baseline is None and first.baseline_version is None
    assert first.candidate.images == test_images
    assert first.blessed and len(first.checks) == 1

    push(trained_model, serving_root, "colours", prepared["validated"])
    second = evaluate(
        trained_model,
        prepared["validated"],
        serving_root,
        "colours",
        min_accuracy=0.0,
        max_regression=0.0,
    )
    assert second.baseline_version == 1
    assert second.baseline.accuracy == second.candidate.accuracy
    assert second.blessed and len(second.checks) == 2

    write_outputs(second, str(tmp_path / "out"))
    saved = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert saved["baseline_version"] == 1 and saved["blessed"] is True
    report = (tmp_path / "out" / "report.html").read_text()
    assert "Evaluation: blessed" in report and "Baseline: version 1" in report


def test_a_broken_baseline_does_not_block_a_fix(trained_model, prepared, tmp_path):
    broken = tmp_path / "serving" / "colours" / "3"
    broken.mkdir(parents=True)
    (broken / "saved_model.pb").write_bytes(b"garbage")
    result = evaluate(
        trained_model, prepared["validated"], str(tmp_path / "serving"), "colours", min_accuracy=0.0
    )
    assert result.baseline is None and result.baseline_version == 3
    assert "saved_model.pb" in result.baseline_error or "parse" in result.baseline_error.lower()
    assert result.blessed
