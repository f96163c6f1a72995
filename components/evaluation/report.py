"""The evaluation's outputs for people and machines: ``evaluation.json``, the HTML report
(candidate against baseline, every blessing rule, per-class metrics, the confusion matrix,
misclassified and Grad-CAM images, the training curves) and a Markdown summary."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from imgclf.components import artifacts, reporting
from imgclf.components.evaluation.metrics import MULTI_LABEL, ModelMetrics
from imgclf.components.training.curves import training_curves

if TYPE_CHECKING:
    from imgclf.components.evaluation.evaluate import Evaluation

HEADLINE_METRICS = (
    ("accuracy", "accuracy"),
    ("macro F1", "macro_f1"),
    ("weighted F1", "weighted_f1"),
    ("top-k accuracy", "top_k_accuracy"),
    ("ROC AUC (macro, one-vs-rest)", "roc_auc_macro"),
    ("average precision (macro)", "macro_average_precision"),
    ("expected calibration error", "expected_calibration_error"),
)


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
    (folder / artifacts.EVALUATION_RECORD).write_text(evaluation.to_json())
    (folder / artifacts.EVALUATION_REPORT).write_text(
        evaluation_html(evaluation, misclassified, training, explained)
    )
    (folder / artifacts.EVALUATION_SUMMARY).write_text(evaluation_markdown(evaluation))


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
    for name, key in HEADLINE_METRICS:
        value = getattr(candidate, key)
        base = getattr(baseline, key) if baseline else None
        lines.append(f"| {name} | {_number(value)} | {_number(base)} |")
    lines += ["", "| rule | result |", "|---|---|"]
    for check in evaluation.checks:
        result = "pass" if check["passed"] else "**fail**"
        detail = f" ({check['detail']})" if "detail" in check else ""
        lines.append(f"| {check['rule']}{detail} | {result} |")
    return "\n".join(lines) + "\n"


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
            "metric": [name for name, _ in HEADLINE_METRICS] + ["test images"],
            "candidate": [_number(getattr(candidate, key)) for _, key in HEADLINE_METRICS]
            + [candidate.images],
            "baseline": (
                [_number(getattr(baseline, key)) for _, key in HEADLINE_METRICS] + [baseline.images]
                if baseline
                else ["-"] * (len(HEADLINE_METRICS) + 1)
            ),
        }
    )
    checks = "".join(
        f"<tr><td>{reporting.status(c['passed'])}</td><td>{html.escape(c['rule'])}</td>"
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
    return reporting.page(
        f"Evaluation: {verdict}",
        [
            baseline_note,
            reporting.table(compare),
            "<h2>Blessing rules</h2><table><tr><th>result</th><th>rule</th><th>candidate</th>"
            f"<th>threshold</th><th>detail</th></tr>{checks}</table>",
            "<h2>Candidate per class</h2>",
            reporting.table(per_class.round(4)),
            *_confusion_section(candidate),
            "<h2>Misclassified test images</h2>",
            reporting.image_grid(misclassified),
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
        reporting.image_grid(explained),
    ]


def _training_section(training: dict | None) -> list[str]:
    if not training or not training.get("history"):
        return []
    return [
        "<h2>Training curves</h2>",
        training_curves(training["history"], training["stages"]),
    ]


def _confusion_section(metrics: ModelMetrics) -> list[str]:
    if metrics.task == MULTI_LABEL:
        return [
            "<p>Multi-label: accuracy counts an image as right only when its predicted set of "
            "labels is exactly its true set; per-class precision and recall above replace a "
            "confusion matrix.</p>"
        ]
    return [
        "<h2>Candidate confusion matrix</h2>",
        confusion_heatmap(metrics.labels, metrics.confusion_matrix),
    ]


def confusion_heatmap(labels: list[str], matrix: list[list[int]]) -> str:
    """The confusion matrix as a table whose cells darken with their share of the true row."""
    header = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    rows = []
    for label, counts in zip(labels, matrix, strict=True):
        total = max(sum(counts), 1)
        cells = []
        for count in counts:
            share = count / total
            text = "#222" if share < 0.5 else "#fff"
            cells.append(
                f"<td style='background: rgba(76, 120, 168, {share:.3f}); color: {text}; "
                f"text-align: right'>{count}</td>"
            )
        rows.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}</tr>")
    return f"<table><tr><th>true \\ predicted</th>{header}</tr>{''.join(rows)}</table>"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
