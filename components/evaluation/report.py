"""The evaluation's outputs for people and machines: ``evaluation.json``, the HTML report
(candidate against baseline, every blessing rule, per-class metrics, the confusion matrix,
robust accuracy against the perturbation size, misclassified, perturbed and Grad-CAM images,
the training curves) and a Markdown summary."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from imgclf.components import artifacts, reporting
from imgclf.components.evaluation.metrics import MULTI_LABEL, ModelMetrics
from imgclf.components.evaluation.robustness import ATTACKS, PGD_STEPS, Perturbed, Robustness
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
    perturbed: list[Perturbed] = (),
) -> None:
    """``evaluation.json`` for machines, ``report.html`` and ``summary.md`` for people."""
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / artifacts.EVALUATION_RECORD).write_text(evaluation.to_json())
    (folder / artifacts.EVALUATION_REPORT).write_text(
        evaluation_html(evaluation, misclassified, training, explained, perturbed)
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
    lines += _robustness_rows(evaluation.robustness, evaluation.baseline_robustness)
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
    perturbed: list[Perturbed] = (),
) -> str:
    """The page a person reads; ``training`` is the candidate's training record (its
    ``history`` and ``stages`` become the training curves), ``explained`` Grad-CAM
    overlays, ``perturbed`` test images beside the PGD perturbations that flipped them."""
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
            *_robustness_section(evaluation, perturbed),
            *_gradcam_section(explained),
            *_training_section(training),
        ],
    )


def _robustness_rows(candidate: Robustness | None, baseline: Robustness | None) -> list[str]:
    if candidate is None:
        return []
    rows = []
    for epsilon in candidate.epsilons[1:]:
        for attack in ATTACKS:
            base = baseline.at(attack, epsilon) if baseline else None
            rows.append(
                f"| {attack.upper()} robust accuracy at {epsilon:g} grey levels | "
                f"{_number(candidate.at(attack, epsilon))} | {_number(base)} |"
            )
    return rows


def _robustness_section(evaluation: Evaluation, perturbed: list[Perturbed]) -> list[str]:
    candidate = evaluation.robustness
    if candidate is None:
        reason = evaluation.robustness_skipped or "the candidate has no pixel signatures"
        return [f"<h2>Robustness</h2><p>Not measured: {html.escape(reason)}.</p>"]
    largest = candidate.epsilons[-1]
    pairs = "".join(
        "<figure style='display:inline-block; margin:6px; text-align:center; font-size:11px'>"
        f"<img src='{item.original_src}' alt=''> <img src='{item.perturbed_src}' alt=''>"
        f"<figcaption>true: {html.escape(item.true)}<br>as given: {html.escape(item.original)}"
        f"; perturbed: {html.escape(item.perturbed)}</figcaption></figure>"
        for item in perturbed
    )
    return [
        "<h2>Robustness</h2>",
        f"<p>Accuracy on {candidate.images} test images when each pixel may move by up to "
        "epsilon grey levels (of 0-255, in the image the model takes) to make the answer "
        f"wrong: FGSM (one gradient step) and PGD ({PGD_STEPS} steps), by the Adversarial "
        f"Robustness Toolbox, in {candidate.seconds:g} s. Epsilon 0 is the clean accuracy.</p>",
        robustness_plot(candidate, evaluation.baseline_robustness),
        f"<h3>Images PGD flipped at {largest:g} grey levels (left: as given, right: "
        "perturbed)</h3>",
        f"<div>{pairs}</div>" if pairs else "<p>None.</p>",
    ]


_ROBUSTNESS_COLOURS = {"fgsm": "#4c78a8", "pgd": "#e45756"}


def robustness_plot(candidate: Robustness, baseline: Robustness | None = None) -> str:
    """Inline SVG: accuracy against epsilon per attack (epsilons evenly spaced, as they
    usually double), the served model's PGD curve dashed beside the candidate's."""
    width, height, left, top, bottom = 460, 220, 46, 26, 34
    plot_w, plot_h = width - left - 110, height - top - bottom
    epsilons = candidate.epsilons

    def x(index: int) -> float:
        return left + plot_w * index / max(len(epsilons) - 1, 1)

    def y(accuracy: float) -> float:
        return top + plot_h * (1 - accuracy)

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        "font-family='sans-serif' font-size='11'>",
        f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' "
        "stroke='#999'/>",
        f"<text x='{left - 4}' y='{top + 4}' text-anchor='end'>1</text>",
        f"<text x='{left - 4}' y='{top + plot_h}' text-anchor='end'>0</text>",
        f"<text x='{left + plot_w / 2}' y='{height - 4}' text-anchor='middle'>epsilon "
        "(grey levels)</text>",
        *(
            f"<text x='{x(i):.1f}' y='{top + plot_h + 14}' text-anchor='middle'>{e:g}</text>"
            for i, e in enumerate(epsilons)
        ),
    ]
    curves = [(f"candidate {a.upper()}", candidate.accuracy[a], a, False) for a in ATTACKS]
    if baseline is not None and baseline.epsilons == epsilons:
        curves.append(("served PGD", baseline.accuracy["pgd"], "pgd", True))
    for legend, (label, points, attack, dashed) in enumerate(curves):
        colour = _ROBUSTNESS_COLOURS[attack]
        parts.append(
            reporting.svg_line(
                [(x(i), y(v)) for i, v in enumerate(points)],
                colour,
                [f"{label} at {epsilons[i]:g}: {v:.4f}" for i, v in enumerate(points)],
                dashed,
            )
            + f"<text x='{left + plot_w + 8}' y='{top + 12 + 16 * legend}' fill='{colour}'>"
            f"{html.escape(label)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


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
