"""How well a model did on the test images, computed from what it answered through its serving
signature.

Multi-label data (a set of labels per image) is scored on the set each model's ``positives``
output predicts: accuracy is the share of images whose set is exactly right, F1 is computed per
class over images, and average precision ranks each class's scores; there is no single
confusion matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn import metrics as skm

from imgclf.components import manifest
from imgclf.components.serving import signature

MULTI_CLASS, MULTI_LABEL = "multi-class", "multi-label"
_CALIBRATION_BINS = 15
_TOP_K = 3


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
class Predictions:
    """What one model said about the test images."""

    labels: list[str]  # the top-scoring class of each image
    scores: np.ndarray  # [images, classes]
    classes: list[str]  # the class of each score column
    positives: np.ndarray | None = None  # multi-label models: [images, classes] bool


def predict(model: signature.ServedModel, images: list[bytes], batch_size: int) -> Predictions:
    outputs = model.predict_batches(images, batch_size)
    return Predictions(
        labels=[label.decode() for label in outputs[signature.LABEL_KEY]],
        scores=outputs[signature.SCORES_KEY],
        classes=[name.decode() for name in outputs[signature.CLASSES_KEY][0]],
        positives=outputs.get(signature.POSITIVES_KEY),
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
    prf_support = skm.precision_recall_fscore_support(
        true_labels, predicted, labels=labels, zero_division=0
    )
    ranking, auc, _ = _ranking(
        _indicator([[label] for label in true_labels], predictions.classes), predictions
    )
    return ModelMetrics(
        task=MULTI_CLASS,
        accuracy=float(skm.accuracy_score(true_labels, predicted)),
        **_f1(true_labels, predicted, sorted(set(true_labels))),
        **ranking,
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
    model_truth = _indicator(true_sets, predictions.classes)
    ranking, auc, average_precision = _ranking(model_truth, predictions)
    return ModelMetrics(
        task=MULTI_LABEL,
        accuracy=float(skm.accuracy_score(truth, predicted)),
        **_f1(truth, predicted, [i for i, count in enumerate(prf_support[3]) if count > 0]),
        **ranking,
        expected_calibration_error=_binary_calibration_error(
            predictions.scores.ravel(), model_truth.ravel()
        ),
        per_class=_per_class(labels, prf_support, roc_auc=auc, average_precision=average_precision),
        labels=labels,
        confusion_matrix=[],
        images=len(true_sets),
    )


def _f1(truth, predicted, occurring: list) -> dict[str, float]:
    """Macro and weighted F1 averaged over the classes that occur in the test set: a class the
    model invents but that never occurs would otherwise count as a zero."""
    return {
        f"{average}_f1": float(
            skm.f1_score(truth, predicted, labels=occurring, average=average, zero_division=0)
        )
        for average in ("macro", "weighted")
    }


def _ranking(truth: np.ndarray, predictions: Predictions) -> tuple[dict, dict, dict]:
    """What the order of the scores says, whatever the threshold: top-k accuracy and the mean
    ROC AUC and average precision, then those two per class."""
    top_k = min(_TOP_K, len(predictions.classes))
    auc = _roc_auc_by_class(truth, predictions)
    average_precision = _average_precision_by_class(truth, predictions)
    summary = {
        "top_k_accuracy": _top_k_accuracy(truth, predictions.scores, top_k),
        "top_k": top_k,
        "roc_auc_macro": _mean_of_defined(auc),
        "macro_average_precision": _mean_of_defined(average_precision),
    }
    return summary, auc, average_precision


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


def label_text(labels: str | list[str]) -> str:
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
