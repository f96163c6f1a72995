"""Evaluate: score the candidate and the served baseline on the test split, and bless or not.

Both models are scored the way TF Serving runs them, through their ``serving_default``
signature on the raw image bytes, so the numbers include any skew a client would meet.

Multi-label data (a set of labels per image) is scored on the set each model's ``positives``
output predicts: accuracy is the share of images whose set is exactly right, F1 is computed per
class over images, and average precision ranks each class's scores; there is no single
confusion matrix.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn import metrics as skm

from components import (
    gradcam,
    manifest,
    preprocess,
    report,
    serving,
    serving_config,
    serving_layout,
    storage,
)

log = logging.getLogger(__name__)

REGRESSION_METRICS = ("accuracy", "macro_f1", "macro_average_precision")
MULTI_CLASS, MULTI_LABEL = "multi-class", "multi-label"
_READERS = 16
_CALIBRATION_BINS = 15
_TOP_K = 3
_GRID_IMAGES = 24
_THUMBNAIL = 96
_GRADCAM_IMAGES = 6


@dataclass
class ModelMetrics:
    task: str  # MULTI_CLASS or MULTI_LABEL
    accuracy: float
    macro_f1: float
    weighted_f1: float
    top_k_accuracy: float
    top_k: int
    roc_auc_macro: float | None
    macro_average_precision: float | None
    expected_calibration_error: float
    per_class: dict[str, dict[str, float | None]]
    labels: list[str]
    confusion_matrix: list[list[int]]  # empty for multi-label
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


@dataclass
class BlessingRules:
    min_accuracy: float = 0.5
    min_macro_f1: float = 0.0
    max_regression: float = 0.0
    regression_metric: str = "accuracy"
    max_class_recall_drop: float = 0.1

    def __post_init__(self):
        if self.regression_metric not in REGRESSION_METRICS:
            raise ValueError(
                f"regression_metric must be one of {', '.join(REGRESSION_METRICS)}, "
                f"not {self.regression_metric!r}."
            )


@dataclass
class Predictions:
    """What one model said about the test images."""

    labels: list[str]  # the top-scoring class of each image
    scores: np.ndarray  # [images, classes]
    classes: list[str]  # the class of each score column
    positives: np.ndarray | None = None  # multi-label models: [images, classes] bool


def evaluate(
    candidate_dir: str,
    manifest_dir: str,
    serving_root: str,
    model_name: str,
    rules: BlessingRules | None = None,
    output_dir: str | None = None,
    batch_size: int = 32,
    keras_model_path: str | None = None,
    resize_policy: str = "stretch",
) -> Evaluation:
    """Scores both models and applies ``rules``; with ``output_dir``, writes
    ``evaluation.json``, ``report.html`` and ``summary.md`` there, and with the candidate's
    ``keras_model_path`` Grad-CAM heatmaps of a few test images in the report (the images
    resized by the ``resize_policy`` preprocess used)."""
    rules = rules or BlessingRules()
    test = manifest.split_rows(manifest.read(manifest_dir), "test")
    if test.empty:
        raise ValueError("The validated manifest has no test images to evaluate on.")
    images = _read_all(test["uri"].tolist())
    multi_label = manifest.is_multi_label(test)
    truth = manifest.label_sets(test) if multi_label else test["label"].tolist()
    score = multi_label_metrics if multi_label else classification_metrics
    log.info("Scoring the candidate on %d test images", len(images))
    candidate_predictions = predict(serving.ServedModel(candidate_dir), images, batch_size)
    candidate = score(truth, candidate_predictions)

    baseline = baseline_version = baseline_error = None
    served = serving_config.served_version(serving_root, model_name)
    if served is not None:
        baseline_version, baseline_dir = served
        log.info("Scoring the baseline, version %d at %s", baseline_version, baseline_dir)
        try:
            with serving_layout.local_copy(baseline_dir) as local_dir:
                baseline_model = serving.ServedModel(local_dir)
                baseline = score(truth, predict(baseline_model, images, batch_size))
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

    checks = blessing_checks(candidate, baseline, rules)
    evaluation = Evaluation(
        candidate=candidate,
        baseline=baseline,
        baseline_version=baseline_version,
        blessed=all(check["passed"] for check in checks),
        checks=checks,
        baseline_error=baseline_error,
    )
    if output_dir:
        true_texts = [_label_text(labels) for labels in truth]
        predicted_texts = [
            _label_text(labels) for labels in predicted_labels(candidate_predictions)
        ]
        explained = (
            gradcam_grid(keras_model_path, images, true_texts, predicted_texts, resize_policy)
            if keras_model_path
            else None
        )
        write_outputs(
            evaluation,
            output_dir,
            misclassified_grid(images, true_texts, predicted_texts),
            _training_record(candidate_dir),
            explained,
        )
    return evaluation


def predict(model: serving.ServedModel, images: list[bytes], batch_size: int) -> Predictions:
    outputs = model.predict_batches(images, batch_size)
    return Predictions(
        labels=[label.decode() for label in outputs[serving.LABEL_KEY]],
        scores=outputs[serving.SCORES_KEY],
        classes=[name.decode() for name in outputs[serving.CLASSES_KEY][0]],
        positives=outputs.get(serving.POSITIVES_KEY),
    )


def predicted_labels(predictions: Predictions) -> list[str] | list[list[str]]:
    """Per image, the predicted class, or for a multi-label model the classes present."""
    if predictions.positives is None:
        return predictions.labels
    return [
        [name for name, present in zip(predictions.classes, row, strict=True) if present]
        for row in predictions.positives
    ]


def classification_metrics(true_labels: list[str], predictions: Predictions) -> ModelMetrics:
    """Scores a multi-class model's top label against each image's one label."""
    if predictions.positives is not None:
        raise ValueError(
            "The test split is multi-class but the model has a 'positives' output: it was "
            "trained on multi-label data."
        )
    predicted = predictions.labels
    labels = sorted(set(true_labels) | set(predicted))
    true_classes = sorted(set(true_labels))
    prf_support = skm.precision_recall_fscore_support(
        true_labels, predicted, labels=labels, zero_division=0
    )
    truth = _indicator([[label] for label in true_labels], predictions.classes)
    auc = _roc_auc_by_class(truth, predictions)
    top_k = min(_TOP_K, len(predictions.classes))
    return ModelMetrics(
        task=MULTI_CLASS,
        accuracy=float(skm.accuracy_score(true_labels, predicted)),
        # Averaged over the classes in the test set: a class the model invents but that
        # never occurs would otherwise count as a zero.
        macro_f1=float(
            skm.f1_score(
                true_labels, predicted, labels=true_classes, average="macro", zero_division=0
            )
        ),
        weighted_f1=float(
            skm.f1_score(
                true_labels, predicted, labels=true_classes, average="weighted", zero_division=0
            )
        ),
        top_k_accuracy=_top_k_accuracy(truth, predictions.scores, top_k),
        top_k=top_k,
        roc_auc_macro=_mean_of_defined(auc),
        macro_average_precision=_mean_of_defined(_average_precision_by_class(truth, predictions)),
        expected_calibration_error=expected_calibration_error(true_labels, predictions),
        per_class=_per_class(labels, prf_support, roc_auc=auc),
        labels=labels,
        confusion_matrix=skm.confusion_matrix(true_labels, predicted, labels=labels).tolist(),
        images=len(true_labels),
    )


def multi_label_metrics(true_sets: list[list[str]], predictions: Predictions) -> ModelMetrics:
    """Scores a multi-label model's ``positives`` against each image's set of labels."""
    if predictions.positives is None:
        raise ValueError(
            "The test split is multi-label but the model has no 'positives' output: it was "
            "trained on single-label data."
        )
    labels = sorted({label for labels in true_sets for label in labels} | set(predictions.classes))
    truth = _indicator(true_sets, labels)
    predicted = _indicator(predicted_labels(predictions), labels)
    prf_support = skm.precision_recall_fscore_support(truth, predicted, zero_division=0)
    # As for multi-class: averaged over the classes that occur in the test set.
    occurring = [i for i, count in enumerate(prf_support[3]) if count > 0]
    model_truth = _indicator(true_sets, predictions.classes)
    auc = _roc_auc_by_class(model_truth, predictions)
    average_precision = _average_precision_by_class(model_truth, predictions)
    top_k = min(_TOP_K, len(predictions.classes))
    return ModelMetrics(
        task=MULTI_LABEL,
        accuracy=float(skm.accuracy_score(truth, predicted)),
        macro_f1=float(
            skm.f1_score(truth, predicted, labels=occurring, average="macro", zero_division=0)
        ),
        weighted_f1=float(
            skm.f1_score(truth, predicted, labels=occurring, average="weighted", zero_division=0)
        ),
        top_k_accuracy=_top_k_accuracy(model_truth, predictions.scores, top_k),
        top_k=top_k,
        roc_auc_macro=_mean_of_defined(auc),
        macro_average_precision=_mean_of_defined(average_precision),
        expected_calibration_error=_binary_calibration_error(
            predictions.scores.ravel(), model_truth.ravel()
        ),
        per_class=_per_class(labels, prf_support, roc_auc=auc, average_precision=average_precision),
        labels=labels,
        confusion_matrix=[],
        images=len(true_sets),
    )


def expected_calibration_error(true_labels: list[str], predictions: Predictions) -> float:
    """How far the top score is from the chance of being right, averaged over score bins."""
    confidence = predictions.scores.max(axis=1)
    correct = np.array(predictions.labels) == np.array(true_labels)
    return _binary_calibration_error(confidence, correct)


def _binary_calibration_error(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Over score bins, the gap between mean confidence and the share that came true,
    weighted by the bin's size. Multi-label models are judged on every (image, class)
    score, whose truth is whether the class is present."""
    bins = np.minimum((confidence * _CALIBRATION_BINS).astype(int), _CALIBRATION_BINS - 1)
    error = 0.0
    for index in np.unique(bins):
        members = bins == index
        error += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    return float(error)


def blessing_checks(
    candidate: ModelMetrics, baseline: ModelMetrics | None, rules: BlessingRules
) -> list[dict]:
    """Every rule with its numbers: a floor on accuracy and macro F1 always; with a baseline,
    no regression of the chosen metric and no class whose recall drops too far."""
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


def misclassified_grid(
    images: list[bytes], true_labels: list[str], predicted: list[str]
) -> list[dict]:
    """Thumbnails (PNG data URIs) of the first misclassified test images, for the report."""
    grid = []
    for data, truth, guess in zip(images, true_labels, predicted, strict=True):
        if truth == guess:
            continue
        with Image.open(io.BytesIO(data)) as image:
            thumbnail = image.convert("RGB")
            thumbnail.thumbnail((_THUMBNAIL, _THUMBNAIL))
        grid.append({"true": truth, "predicted": guess, "src": _png_data_uri(thumbnail)})
        if len(grid) == _GRID_IMAGES:
            break
    return grid


def gradcam_grid(
    keras_model_path: str,
    images: list[bytes],
    true_labels: list[str],
    predicted: list[str],
    resize_policy: str = "stretch",
) -> list[dict]:
    """Grad-CAM overlays (PNG data URIs) of the top predicted class for the first
    misclassified test images and as many correctly classified ones."""
    model = gradcam.load_classifier(keras_model_path)
    size = model.input_shape[1]
    wrong = [i for i, (t, p) in enumerate(zip(true_labels, predicted, strict=True)) if t != p]
    right = [i for i in range(len(images)) if i not in set(wrong)]
    chosen = wrong[: _GRADCAM_IMAGES // 2]
    chosen += right[: _GRADCAM_IMAGES - len(chosen)]
    if not chosen:
        return []
    pixels = np.stack(
        [preprocess.decode_and_resize(images[i], size, resize_policy).numpy() for i in chosen]
    )
    heat, _ = gradcam.heatmaps(model, pixels)
    return [
        {
            "true": true_labels[index],
            "predicted": predicted[index],
            "src": _png_data_uri(_at_least_thumbnail(gradcam.overlay(image, heatmap))),
        }
        for index, image, heatmap in zip(chosen, pixels, heat, strict=True)
    ]


def _at_least_thumbnail(pixels: np.ndarray) -> Image.Image:
    """Small model inputs scaled up (nearest neighbour, so pixels stay visible)."""
    image = Image.fromarray(pixels)
    if image.width < _THUMBNAIL:
        image = image.resize((_THUMBNAIL, _THUMBNAIL), Image.Resampling.NEAREST)
    return image


def _png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def write_outputs(
    evaluation: Evaluation,
    output_dir: str,
    misclassified: list[dict],
    training: dict | None = None,
    explained: list[dict] | None = None,
) -> None:
    """``evaluation.json`` for machines, ``report.html`` and ``summary.md`` for people."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evaluation.json").write_text(evaluation.to_json())
    (folder / "report.html").write_text(
        evaluation_html(evaluation, misclassified, training, explained)
    )
    (folder / "summary.md").write_text(evaluation_markdown(evaluation))


def evaluation_markdown(evaluation: Evaluation) -> str:
    candidate, baseline = evaluation.candidate, evaluation.baseline
    verdict = "**Blessed**" if evaluation.blessed else "**Not blessed**"
    against = (
        f"against served version {evaluation.baseline_version}"
        if baseline
        else "with no served model to compare with"
    )
    lines = [
        f"## Evaluation: {verdict}",
        "",
        f"{candidate.images} test images, {against}.",
        "",
        "| metric | candidate | baseline |",
        "|---|---|---|",
    ]
    for name, key in _HEADLINE_METRICS:
        value = getattr(candidate, key)
        base = getattr(baseline, key) if baseline else None
        lines.append(f"| {name} | {_number(value)} | {_number(base)} |")
    lines += ["", "| rule | result |", "|---|---|"]
    for check in evaluation.checks:
        result = "pass" if check["passed"] else "**fail**"
        detail = f" ({check['detail']})" if "detail" in check else ""
        lines.append(f"| {check['rule']}{detail} | {result} |")
    return "\n".join(lines) + "\n"


_HEADLINE_METRICS = (
    ("accuracy", "accuracy"),
    ("macro F1", "macro_f1"),
    ("weighted F1", "weighted_f1"),
    ("top-k accuracy", "top_k_accuracy"),
    ("ROC AUC (macro, one-vs-rest)", "roc_auc_macro"),
    ("average precision (macro)", "macro_average_precision"),
    ("expected calibration error", "expected_calibration_error"),
)


def evaluation_html(
    evaluation: Evaluation,
    misclassified: list[dict],
    training: dict | None = None,
    explained: list[dict] | None = None,
) -> str:
    """The page a person reads; ``training`` is the candidate's training record (its
    ``history`` and ``stages`` become the training curves), ``explained`` Grad-CAM
    overlays."""
    candidate, baseline = evaluation.candidate, evaluation.baseline
    verdict = "blessed" if evaluation.blessed else "not blessed"
    compare = pd.DataFrame(
        {
            "metric": [name for name, _ in _HEADLINE_METRICS] + ["test images"],
            "candidate": [_number(getattr(candidate, key)) for _, key in _HEADLINE_METRICS]
            + [candidate.images],
            "baseline": (
                [_number(getattr(baseline, key)) for _, key in _HEADLINE_METRICS]
                + [baseline.images]
                if baseline
                else ["-"] * (len(_HEADLINE_METRICS) + 1)
            ),
        }
    )
    checks = "".join(
        f"<tr><td>{report.status(c['passed'])}</td><td>{html.escape(c['rule'])}</td>"
        f"<td>{c['candidate']:.4f}</td><td>{c['threshold']:.4f}</td>"
        f"<td>{html.escape(c.get('detail', ''))}</td></tr>"
        for c in evaluation.checks
    )
    per_class = pd.DataFrame(candidate.per_class).T.reset_index(names="class")
    per_class["support"] = per_class["support"].astype(int)
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
            f"<th>threshold</th><th>detail</th></tr>{checks}</table>",
            "<h2>Candidate per class</h2>",
            report.table(per_class.round(4)),
            *_confusion_section(candidate),
            "<h2>Misclassified test images</h2>",
            report.image_grid(misclassified),
            *_gradcam_section(explained),
            *_training_section(training),
        ],
    )


def _gradcam_section(explained: list[dict] | None) -> list[str]:
    if explained is None:
        return []
    return [
        "<h2>Where the candidate looked (Grad-CAM)</h2>",
        "<p>Warm colours mark the regions that raised the predicted class's score the most.</p>",
        report.image_grid(explained),
    ]


def _training_section(training: dict | None) -> list[str]:
    if not training or not training.get("history"):
        return []
    return [
        "<h2>Training curves</h2>",
        report.training_curves(training["history"], training["stages"]),
    ]


def _training_record(model_dir: str) -> dict | None:
    """What train wrote beside the candidate SavedModel, if anything."""
    record = storage.join(model_dir, "assets.extra", serving.TRAINING_FILE)
    return json.loads(storage.read_bytes(record)) if storage.exists(record) else None


def _confusion_section(metrics: ModelMetrics) -> list[str]:
    if metrics.task == MULTI_LABEL:
        return [
            "<p>Multi-label: accuracy counts an image as right only when its predicted set of "
            "labels is exactly its true set; per-class precision and recall above replace a "
            "confusion matrix.</p>"
        ]
    return [
        "<h2>Candidate confusion matrix</h2>",
        report.confusion_heatmap(metrics.labels, metrics.confusion_matrix),
    ]


def _check(rule: str, candidate: float, threshold: float) -> dict:
    return {
        "rule": rule,
        "candidate": candidate,
        "threshold": threshold,
        "passed": candidate >= threshold,
    }


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _label_text(labels: str | list[str]) -> str:
    if isinstance(labels, str):
        return labels
    return manifest.join_labels(labels) or "(none)"


def _indicator(label_sets: list[list[str]], classes: list[str]) -> np.ndarray:
    """``[images, classes]`` bool: whether each image has each class."""
    column = {name: i for i, name in enumerate(classes)}
    matrix = np.zeros((len(label_sets), len(classes)), dtype=bool)
    for row, labels in enumerate(label_sets):
        matrix[row, [column[label] for label in labels if label in column]] = True
    return matrix


def _top_k_accuracy(truth: np.ndarray, scores: np.ndarray, k: int) -> float:
    """The share of images with a true class among their ``k`` highest scores."""
    best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.take_along_axis(truth, best, axis=1).any(axis=1)))


def _per_class(labels: list[str], prf_support, **by_class: dict[str, float | None]) -> dict:
    """Per label: precision, recall, F1 and support (sklearn's four arrays, in ``labels``'
    order), and each of ``by_class``'s per-class numbers (None where undefined)."""
    return {
        label: {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": int(s),
            **{name: values.get(label) for name, values in by_class.items()},
        }
        for label, p, r, f, s in zip(labels, *prf_support, strict=True)
    }


def _mean_of_defined(by_class: dict[str, float | None]) -> float | None:
    defined = [value for value in by_class.values() if value is not None]
    return float(np.mean(defined)) if defined else None


def _roc_auc_by_class(truth: np.ndarray, predictions: Predictions) -> dict[str, float | None]:
    """One-vs-rest ROC AUC per class the model scores; None where the test split has no
    positives or no negatives of the class."""
    return {
        name: (
            float(skm.roc_auc_score(truth[:, index], predictions.scores[:, index]))
            if 0 < truth[:, index].sum() < len(truth)
            else None
        )
        for index, name in enumerate(predictions.classes)
    }


def _average_precision_by_class(
    truth: np.ndarray, predictions: Predictions
) -> dict[str, float | None]:
    """Average precision (area under the precision-recall curve, as sklearn steps it) per
    class the model scores; None where the test split has no positive of the class."""
    return {
        name: (
            float(skm.average_precision_score(truth[:, index], predictions.scores[:, index]))
            if truth[:, index].any()
            else None
        )
        for index, name in enumerate(predictions.classes)
    }


def _read_all(uris: list[str]) -> list[bytes]:
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        return list(pool.map(storage.read_bytes, uris))
