"""Self-contained HTML reports: inline styles, no external assets, so they render in the KFP UI."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import pandas as pd

from components.manifest import SPLITS, label_column, per_label

if TYPE_CHECKING:
    from components.validate import ValidationResult

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
.pass { color: #1a7f37; font-weight: 600; }
.fail { color: #cf222e; font-weight: 600; }
.warn { color: #9a6700; font-weight: 600; }
"""


def page(title: str, sections: list[str]) -> str:
    body = "\n".join(sections)
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}</body></html>"
    )


def table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, escape=True)


def status(passed: bool, severity: str = "error") -> str:
    if passed:
        return "<span class='pass'>pass</span>"
    css = "fail" if severity == "error" else "warn"
    return f"<span class='{css}'>{'FAIL' if severity == 'error' else 'warning'}</span>"


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


def image_grid(items: list[dict]) -> str:
    """Thumbnails with their true and predicted labels; ``src`` must be a data URI."""
    if not items:
        return "<p>None.</p>"
    cells = "".join(
        "<figure style='display:inline-block; margin:4px; text-align:center; font-size:11px'>"
        f"<img src='{item['src']}' alt='' style='display:block; margin:auto'>"
        f"<figcaption>true: {html.escape(item['true'])}<br>"
        f"predicted: {html.escape(item['predicted'])}</figcaption></figure>"
        for item in items
    )
    return f"<div>{cells}</div>"


_SPLIT_COLOURS = {"train": "#4c78a8", "validation": "#f58518", "test": "#54a24b"}


def counts_chart(per_class: pd.DataFrame) -> str:
    """Inline SVG: one group of horizontal bars per class, one bar per split column."""
    splits = [c for c in per_class.columns if c in _SPLIT_COLOURS]
    largest = max(int(per_class[splits].to_numpy().max()), 1) if splits else 1
    bar, gap, label_width, plot_width = 11, 8, 140, 420
    group = bar * len(splits) + gap
    legend = 22
    height = legend + group * len(per_class)
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_width + plot_width + 60}' "
        f"height='{height}' font-family='sans-serif' font-size='11'>"
    ]
    for i, split in enumerate(splits):
        x = label_width + i * 110
        parts.append(
            f"<rect x='{x}' y='4' width='10' height='10' fill='{_SPLIT_COLOURS[split]}'/>"
            f"<text x='{x + 14}' y='13'>{split}</text>"
        )
    for row_index, row in enumerate(per_class.itertuples(index=False)):
        top = legend + row_index * group
        label = html.escape(str(row.label))
        parts.append(
            f"<text x='{label_width - 6}' y='{top + group / 2}' text-anchor='end'>{label}</text>"
        )
        for i, split in enumerate(splits):
            count = int(getattr(row, split))
            width = plot_width * count / largest
            y = top + i * bar
            parts.append(
                f"<rect x='{label_width}' y='{y}' width='{width:.1f}' height='{bar - 1}' "
                f"fill='{_SPLIT_COLOURS[split]}'><title>{label} {split}: {count}</title></rect>"
                f"<text x='{label_width + width + 3:.1f}' y='{y + bar - 2}'>{count}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def validation_html(result: ValidationResult, kept: pd.DataFrame, quarantined: pd.DataFrame) -> str:
    rows = "".join(
        f"<tr><td>{status(r.passed, r.severity)}</td><td>{html.escape(r.severity)}</td>"
        f"<td>{html.escape(r.rule)}</td><td>{html.escape(r.observed)}</td>"
        f"<td><code>{html.escape(r.expectation)}</code></td></tr>"
        for r in result.rules
    )
    rules = (
        "<h2>Expectation suite</h2><table><tr><th>result</th><th>severity</th><th>rule</th>"
        f"<th>observed</th><th>great-expectations</th></tr>{rows}</table>"
    )
    per_class = (
        per_label(kept)
        .pivot_table(index="label", columns="split", values="uri", aggfunc="count", fill_value=0)
        .reindex(columns=[s for s in SPLITS if s in set(kept["split"])])
        .reset_index()
        .rename_axis(columns=None)
    )
    summary = (
        f"<p>{sum(result.images.values())} images kept "
        f"({', '.join(f'{k}: {v}' for k, v in result.images.items())}); "
        f"{result.quarantined} quarantined; {result.duplicates_dropped} copies of files in an "
        "earlier split dropped.</p>"
    )
    drift = (
        f"<h2>Drift against served version {result.drift_baseline_version}</h2>"
        + table(pd.DataFrame([result.drift]))
        if result.drift
        else "<h2>Drift</h2><p>No served model with a data profile to compare with.</p>"
    )
    quarantine = (
        table(quarantined[["uri", label_column(quarantined), "split", "reason"]])
        if len(quarantined)
        else "<p>No file quarantined.</p>"
    )
    return page(
        "Data validation",
        [
            summary,
            rules,
            "<h2>Images per class and split</h2>",
            counts_chart(per_class),
            table(per_class),
            drift,
            "<h2>Quarantined and dropped files</h2>",
            quarantine,
        ],
    )


def training_curves(history: dict[str, list[float]], stages: list[str]) -> str:
    """Inline SVG: one panel per metric (loss first), train and validation per epoch across
    both stages, with a dashed line where fine-tuning starts."""
    names = [name for name in history if not name.startswith("val_") and name != "learning_rate"]
    names.sort(key=lambda name: name != "loss")
    return "".join(_curve_panel(name, history, stages) for name in names)


def training_curves_page(history: dict[str, list[float]], stages: list[str]) -> str:
    epochs = ", ".join(f"{stage}: {stages.count(stage)}" for stage in dict.fromkeys(stages))
    return page(
        "Training curves",
        [
            f"<p>Epochs per stage: {html.escape(epochs or 'none')}.</p>",
            training_curves(history, stages),
        ],
    )


_CURVE_COLOURS = {"train": "#4c78a8", "validation": "#f58518"}


def _curve_panel(name: str, history: dict[str, list[float]], stages: list[str]) -> str:
    series = {"train": history[name], "validation": history.get(f"val_{name}", [])}
    series = {label: values for label, values in series.items() if values}
    values = [value for points in series.values() for value in points]
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    width, height, left, top, bottom = 420, 180, 50, 24, 28
    plot_w, plot_h = width - left - 12, height - top - bottom
    epochs = max(len(points) for points in series.values())

    def x(index: int) -> float:
        return left + plot_w * (index / max(epochs - 1, 1))

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - low) / span)

    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' "
        "font-family='sans-serif' font-size='11' style='margin-right:12px'>",
        f"<text x='{left}' y='14' font-weight='600'>{html.escape(name)}</text>",
        f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' "
        "stroke='#999'/>",
        f"<text x='{left - 4}' y='{top + 4}' text-anchor='end'>{high:.3g}</text>",
        f"<text x='{left - 4}' y='{top + plot_h}' text-anchor='end'>{low:.3g}</text>",
        f"<text x='{left + plot_w / 2}' y='{height - 6}' text-anchor='middle'>epoch</text>",
    ]
    for index in range(1, len(stages)):
        if stages[index] != stages[index - 1]:
            boundary = (x(index - 1) + x(index)) / 2
            parts.append(
                f"<line x1='{boundary:.1f}' y1='{top}' x2='{boundary:.1f}' y2='{top + plot_h}' "
                f"stroke='#888' stroke-dasharray='4 3'><title>{html.escape(stages[index])} "
                "starts</title></line>"
            )
    for legend_index, (label, points) in enumerate(series.items()):
        colour = _CURVE_COLOURS[label]
        path = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(points))
        parts.append(
            f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'/>"
            + "".join(
                f"<circle cx='{x(i):.1f}' cy='{y(v):.1f}' r='2.5' fill='{colour}'>"
                f"<title>{label} {html.escape(name)}, epoch {i + 1}: {v:.4f}</title></circle>"
                for i, v in enumerate(points)
            )
            + f"<text x='{left + 140 + 80 * legend_index}' y='14' fill='{colour}'>{label}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
