"""Evaluate: score the candidate and the served baseline on the test split, and bless or not.

Both models are scored the way TF Serving runs them, through their ``serving_default``
signature on the raw image bytes, so the numbers include any skew a client would meet.
"""

from __future__ import annotations

import html
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from sklearn import metrics as skm

from components import manifest, report, serving, serving_layout, storage

log = logging.getLogger(__name__)

_READERS = 16


@dataclass
class ModelMetrics:
    accuracy: float
    macro_f1: float
    per_class: dict[str, dict[str, float]]
    labels: list[str]
    confusion_matrix: list[list[int]]
    images: int


@dataclass
class Evaluation:
    candidate: ModelMetrics
    baseline: ModelMetrics | None
    baseline_version: int | None
    blessed: bool
    checks: list[dict] = field(default_factory=list)
    baseline_error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def evaluate(
    candidate_dir: str,
    manifest_dir: str,
    serving_root: str,
    model_name: str,
    min_accuracy: float = 0.5,
    max_regression: float = 0.0,
    batch_size: int = 32,
) -> Evaluation:
    test = manifest.split_rows(manifest.read(manifest_dir), "test")
    if test.empty:
        raise ValueError("The validated manifest has no test images to evaluate on.")
    images = _read_all(test["uri"].tolist())
    true_labels = test["label"].tolist()
    log.info("Scoring the candidate on %d test images", len(images))
    candidate = score(serving.ServedModel(candidate_dir), images, true_labels, batch_size)

    baseline = baseline_version = baseline_error = None
    served = serving_layout.latest_version(serving_root, model_name)
    if served is not None:
        baseline_version, baseline_dir = served
        log.info("Scoring the baseline, version %d at %s", baseline_version, baseline_dir)
        try:
            baseline = score(serving.ServedModel(baseline_dir), images, true_labels, batch_size)
        except Exception as error:  # noqa: BLE001 - a broken baseline must not block a fix
            baseline_error = f"{type(error).__name__}: {error}"
            log.warning(
                "Baseline version %d could not be scored (%s); judging the candidate "
                "on the floors alone",
                baseline_version,
                baseline_error,
            )
    else:
        log.info("No model under %s/%s yet: judging on the floors alone", serving_root, model_name)

    checks = blessing_checks(candidate, baseline, min_accuracy, max_regression)
    return Evaluation(
        candidate=candidate,
        baseline=baseline,
        baseline_version=baseline_version,
        blessed=all(check["passed"] for check in checks),
        checks=checks,
        baseline_error=baseline_error,
    )


def score(
    model: serving.ServedModel, images: list[bytes], true_labels: list[str], batch_size: int
) -> ModelMetrics:
    outputs = model.predict_batches(images, batch_size)
    predicted = [label.decode() for label in outputs[serving.LABEL_KEY]]
    return classification_metrics(true_labels, predicted)


def classification_metrics(true_labels: list[str], predicted: list[str]) -> ModelMetrics:
    labels = sorted(set(true_labels) | set(predicted))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        true_labels, predicted, labels=labels, zero_division=0
    )
    true_classes = sorted(set(true_labels))
    return ModelMetrics(
        accuracy=float(skm.accuracy_score(true_labels, predicted)),
        # Averaged over the classes in the test set: a class the model invents but that
        # never occurs would otherwise count as a zero.
        macro_f1=float(
            skm.f1_score(
                true_labels, predicted, labels=true_classes, average="macro", zero_division=0
            )
        ),
        per_class={
            label: {
                "precision": float(p),
                "recall": float(r),
                "f1": float(f),
                "support": int(s),
            }
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        labels=labels,
        confusion_matrix=skm.confusion_matrix(true_labels, predicted, labels=labels).tolist(),
        images=len(true_labels),
    )


def blessing_checks(
    candidate: ModelMetrics,
    baseline: ModelMetrics | None,
    min_accuracy: float,
    max_regression: float,
) -> list[dict]:
    checks = [
        {
            "rule": f"accuracy >= min_accuracy ({min_accuracy:g})",
            "candidate": candidate.accuracy,
            "threshold": min_accuracy,
            "passed": candidate.accuracy >= min_accuracy,
        }
    ]
    if baseline is not None:
        threshold = baseline.accuracy - max_regression
        checks.append(
            {
                "rule": f"accuracy >= baseline accuracy - max_regression ({max_regression:g})",
                "candidate": candidate.accuracy,
                "threshold": threshold,
                "passed": candidate.accuracy >= threshold,
            }
        )
    return checks


def write_outputs(evaluation: Evaluation, output_dir: str) -> None:
    """``evaluation.json`` for machines and ``report.html`` for people."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evaluation.json").write_text(evaluation.to_json())
    (folder / "report.html").write_text(evaluation_html(evaluation))


def evaluation_html(evaluation: Evaluation) -> str:
    candidate, baseline = evaluation.candidate, evaluation.baseline
    verdict = "blessed" if evaluation.blessed else "not blessed"
    compare = pd.DataFrame(
        {
            "metric": ["accuracy", "macro F1", "test images"],
            "candidate": [
                f"{candidate.accuracy:.4f}",
                f"{candidate.macro_f1:.4f}",
                candidate.images,
            ],
            "baseline": (
                [f"{baseline.accuracy:.4f}", f"{baseline.macro_f1:.4f}", baseline.images]
                if baseline
                else ["-", "-", "-"]
            ),
        }
    )
    checks = "".join(
        f"<tr><td>{report.status(c['passed'])}</td><td>{html.escape(c['rule'])}</td>"
        f"<td>{c['candidate']:.4f}</td><td>{c['threshold']:.4f}</td></tr>"
        for c in evaluation.checks
    )
    per_class = pd.DataFrame(candidate.per_class).T.reset_index(names="class")
    per_class["support"] = per_class["support"].astype(int)
    confusion = pd.DataFrame(candidate.confusion_matrix, columns=candidate.labels)
    confusion.insert(0, "true \\ predicted", candidate.labels)
    baseline_note = (
        f"<p>Baseline: version {evaluation.baseline_version}.</p>"
        if baseline
        else f"<p>No baseline: {html.escape(evaluation.baseline_error or 'nothing served yet')}"
        ".</p>"
    )
    return report.page(
        f"Evaluation: {verdict}",
        [
            baseline_note,
            report.table(compare),
            "<h2>Blessing rules</h2><table><tr><th>result</th><th>rule</th><th>candidate</th>"
            f"<th>threshold</th></tr>{checks}</table>",
            "<h2>Candidate per class</h2>",
            report.table(per_class.round(4)),
            "<h2>Candidate confusion matrix</h2>",
            report.table(confusion),
        ],
    )


def _read_all(uris: list[str]) -> list[bytes]:
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        return list(pool.map(storage.read_bytes, uris))
