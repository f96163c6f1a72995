"""The whole DAG through kfp.local, as `make run` and `imgclf run` run it."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import tensorflow as tf

from conftest import (
    CLOTHING,
    MOBILENET_WEIGHTS,
    colour_image,
    needs_clothing,
    needs_weights,
    offline_imgclf,
    write_colour_tree,
    write_multi_label_set,
)
from hostile import ACCEPTED, QUARANTINED, add_corpus
from imgclf.pipelines import cli

pytestmark = pytest.mark.slow

SAMPLE_ARGS = [
    "--backbone",
    "mobilenet",
    "--alpha",
    "0.5",
    "--weights",
    "none",
    "--image-size",
    "32",
    "--epochs",
    "8",
    "--fine-tune-epochs",
    "0",
    "--learning-rate",
    "0.002",
    "--augmentations",
    "rotation,zoom",
]


def _run(tmp_path, *args):
    summary = tmp_path / f"summary-{len(list(tmp_path.glob('summary-*')))}.json"
    code = cli.main(
        ["run", "--pipeline-root", str(tmp_path / "runs"), "--summary-json", str(summary), *args]
    )
    return code, (json.loads(summary.read_text()) if summary.exists() else None)


def test_a_train_step_that_fails_for_good_fails_once(tmp_path, capfd, monkeypatch):
    """kfp.local applies a task's retry policy with its backoff (kfp 2.17.0,
    kfp/local/orchestrator/task_executor.py: max_retry_count attempts, sleeping
    backoff_duration x backoff_factor^attempt); the cluster's 3 retries from 60 s would rerun
    this train four times over seven minutes. A TF_CONFIG that is not JSON fails train for good
    (train cannot read its cluster), and only train: the preflight cannot see it."""
    monkeypatch.setenv("TF_CONFIG", "{not json")
    for retries, attempts in ((None, 1), ("1", 2)):
        flags = ("--retries", retries) if retries else ()
        code, _ = _run(tmp_path, "--serving-dir", str(tmp_path / "serving"), *SAMPLE_ARGS, *flags)
        assert code != 0
        captured = capfd.readouterr()
        log = re.sub(r"\x1b\[[0-9;]*m", "", captured.out + captured.err)
        assert log.count("Executing task 'train'") == attempts, retries
        assert "imgclf run failed: step train: " in captured.err
        assert "Traceback" not in log


def test_a_run_without_arguments_pushes_a_good_model_of_the_sample_offline(tmp_path, capsys):
    """No flags but where things go, in a network namespace with no way out: the sample
    brings its own settings (no ImageNet weights to download). 0.977 to 0.989 test accuracy
    on seeds 42, 7 and 1 here (docs/defaults.md); a logistic regression on the raw pixels
    0.964."""
    serving_dir = tmp_path / "serving"
    summary_file = tmp_path / "summary.json"
    completed = subprocess.run(
        [
            *offline_imgclf(),
            "run",
            "--serving-dir",
            str(serving_dir),
            "--pipeline-root",
            str(tmp_path / "runs"),
            "--summary-json",
            str(summary_file),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "imgclf run summary" in completed.stdout
    first_lines = completed.stdout.splitlines()[:2]
    assert first_lines[0].startswith("imgclf run: sample:digits -> "), first_lines
    assert "mobilenet (alpha 0.5, weights none) at 32 px, 20 + 0 epochs" in first_lines[1]
    summary = json.loads(summary_file.read_text())
    assert summary["images"] == {"train": 1442, "validation": 181, "test": 174}
    assert summary["quarantined"] == 0
    assert summary["baseline"] is None
    assert summary["candidate"]["accuracy"] >= 0.95, summary
    assert summary["blessed"] is True
    assert summary["pushed"] == {
        "version": 1,
        "path": str(serving_dir / "imgclf" / "1"),
        "removed_versions": [],
    }
    assert "Data validation" in Path(summary["validation_report"]).read_text()
    assert "Evaluation: blessed" in Path(summary["evaluation_report"]).read_text()

    digit = next((tmp_path / "runs").glob("*/ingest/manifest/sample-digits/7/*.png"))
    assert cli.main(["predict", "--model", summary["pushed"]["path"], str(digit)]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in [str(d) for d in range(10)]


def test_a_failing_step_fails_the_run(tmp_path, capsys):
    only_class = tmp_path / "data" / "lonely"
    only_class.mkdir(parents=True)
    for i in range(12):
        (only_class / f"{i}.png").write_bytes(colour_image((90, 90, 90), seed=i))
    code, summary = _run(
        tmp_path,
        "--data",
        str(tmp_path / "data"),
        "--serving-dir",
        str(tmp_path / "serving"),
        *SAMPLE_ARGS,
    )
    assert code == 1 and summary is None
    output = capsys.readouterr()
    assert "expected at least 2 classes, found 1" in output.out
    assert "imgclf run failed" in output.err
    assert not (tmp_path / "serving").exists()


def test_junk_in_the_data_is_quarantined_without_a_traceback(tmp_path, capsys):
    tree = write_colour_tree(tmp_path / "data", per_class=14)
    add_corpus(tree / "red")
    code, summary = _run(
        tmp_path,
        "--data",
        str(tree),
        "--serving-dir",
        str(tmp_path / "serving"),
        "--backbone",
        "mobilenet",
        "--alpha",
        "0.25",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--epochs",
        "1",
        "--fine-tune-epochs",
        "0",
        "--max-invalid-fraction",
        "0.2",
        "--min-accuracy",
        "0",
    )
    output = capsys.readouterr()
    assert code == 0, output.err[-3000:]
    assert summary["quarantined"] == len(QUARANTINED)
    assert sum(summary["images"].values()) == 3 * 14 + len(ACCEPTED)
    assert "Traceback" not in output.out + output.err
    run_dir = next((tmp_path / "runs").glob("imgclf-*"))
    records = sum(
        1
        for path in run_dir.glob("preprocess/examples/*/*.tfrecord.gz")
        for _ in tf.data.TFRecordDataset(str(path), compression_type="GZIP")
    )
    assert records == sum(summary["images"].values())


def test_a_multi_label_csv_listing_runs_end_to_end(tmp_path, capsys):
    listing = write_multi_label_set(tmp_path / "data", images=140, listing="labels.csv")
    code, summary = _run(
        tmp_path,
        "--data",
        str(listing),
        "--serving-dir",
        str(tmp_path / "serving"),
        "--train-fraction",
        "0.6",
        "--validation-fraction",
        "0.2",
        "--min-images-per-class",
        "3",
        "--backbone",
        "mobilenet",
        "--alpha",
        "0.25",
        "--weights",
        "none",
        "--image-size",
        "32",
        "--epochs",
        "12",
        "--early-stopping-patience",
        "8",
        "--batch-size",
        "8",
        "--fine-tune-epochs",
        "0",
        "--learning-rate",
        "0.003",
        "--augmentations",
        "none",
        "--regression-metric",
        "macro_average_precision",
    )
    output = capsys.readouterr()
    assert code == 0, output.err[-3000:]
    assert summary["candidate"]["task"] == "multi-label"
    assert summary["candidate"]["macro_average_precision"] > 0.9, summary
    assert summary["blessed"] is True and summary["pushed"]["version"] == 1
    assert "(multi-label)" in output.out

    image = tmp_path / "data" / "images" / "image-006.png"  # red, green and blue squares
    assert cli.main(["predict", "--model", summary["pushed"]["path"], str(image)]) == 0
    assert sorted(json.loads(capsys.readouterr().out)["labels"]) == ["blue", "green", "red"]


@needs_clothing
@needs_weights
def test_twenty_photos_a_class_in_train_and_test_folders_only_give_a_blessed_model(tmp_path):
    """The small-data case of #27: three classes of 20 photos, train/ and test/ folders,
    3 + 1 epochs at 128 px. It exported a chance-level model (head: four optimizer steps;
    fine-tuning: wrecked) that the blessing floor refused. 18 train images a class are too few
    to fine-tune on (min_fine_tune_images_per_class): the head's model is the one exported."""
    data = tmp_path / "data"
    for label in ("dress", "shirt", "shorts"):
        for split, count in (("train", 20), ("test", None)):
            (data / split / label).mkdir(parents=True)
            for photo in sorted((CLOTHING / split / label).glob("*.jpg"))[:count]:
                (data / split / label / photo.name).symlink_to(photo)
    code, summary = _run(
        tmp_path,
        *("--data", str(data), "--serving-dir", str(tmp_path / "serving")),
        *("--backbone", "mobilenet", "--alpha", "0.25", "--weights", str(MOBILENET_WEIGHTS)),
        *("--image-size", "128", "--epochs", "3", "--fine-tune-epochs", "1"),
    )
    assert code == 0
    assert summary["images"] == {"train": 54, "validation": 6, "test": 71}
    assert summary["blessed"] is True, summary
    assert summary["candidate"]["accuracy"] >= 0.5
    trained = Path(summary["pushed"]["path"]) / "assets.extra" / "training.json"
    record = json.loads(trained.read_text())
    assert set(record["stages"]) == {"head"}
    assert record["fine_tune_skipped"].startswith("54 train images make 18 a class")


@needs_clothing
@needs_weights
def test_second_run_on_real_photos_is_judged_against_the_first(tmp_path):
    data = tmp_path / "clothing"
    for split, count in (("train", 20), ("validation", 8), ("test", 10)):
        for label in ("dress", "hat", "shoes"):
            (data / split / label).mkdir(parents=True)
            for photo in sorted((CLOTHING / split / label).glob("*.jpg"))[:count]:
                shutil.copy(photo, data / split / label / photo.name)
    serving_dir = tmp_path / "serving"
    args = [
        "--data",
        str(data),
        "--serving-dir",
        str(serving_dir),
        "--model-name",
        "clothing",
        "--backbone",
        "mobilenet",
        "--alpha",
        "0.25",
        "--weights",
        str(MOBILENET_WEIGHTS),
        "--image-size",
        "128",
        "--epochs",
        "5",
        "--min-head-steps",
        "40",
        "--fine-tune-epochs",
        "0",
        "--batch-size",
        "8",
        "--min-accuracy",
        "0.5",
        "--max-regression",
        "0.05",
    ]

    code, first = _run(tmp_path, *args)
    assert code == 0
    assert first["images"] == {"train": 60, "validation": 24, "test": 30}
    assert first["blessed"] is True, first
    assert first["pushed"]["version"] == 1

    code, second = _run(tmp_path, *args)
    assert code == 0
    assert second["baseline"]["version"] == 1
    assert second["baseline"]["accuracy"] == pytest.approx(first["candidate"]["accuracy"])
    assert len(second["blessing"]) == 4  # two floors, regression, per-class recall
    versions = sorted(p.name for p in (serving_dir / "clothing").iterdir())
    if second["blessed"]:
        assert second["pushed"]["version"] == 2 and versions == ["1", "2"]
    else:
        assert second["pushed"] is None and versions == ["1"]


def test_a_tuned_run_trains_with_the_best_values_of_the_search(tmp_path):
    data = write_colour_tree(tmp_path / "colours", per_class=20)
    code, summary = _run(
        tmp_path,
        *("--data", str(data), "--serving-dir", str(tmp_path / "serving")),
        *("--weights", "none", "--alpha", "0.25", "--image-size", "32"),
        *("--epochs", "2", "--fine-tune-epochs", "0", "--augmentations", "none"),
        *("--min-images-per-class", "3", "--min-accuracy", "0"),
        *("--tune-trials", "1", "--tune-algorithm", "random"),
    )
    assert code == 0
    best = json.loads(
        next((tmp_path / "runs").glob("*/tune/trials/best_hyperparameters.json")).read_text()
    )
    trained = Path(summary["pushed"]["path"]) / "assets.extra" / "training.json"
    config = json.loads(trained.read_text())["config"]
    assert {name: config[name] for name in best} == pytest.approx(best)
    assert next((tmp_path / "runs").glob("*/tune/report")).read_text().startswith("# Tuning: 1")
