"""The data-validation report: the suite's rules, images per class and split, drift and the
quarantine, as one self-contained page."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import pandas as pd

from imgclf.components.manifest import SPLITS, label_column, per_label
from imgclf.components.reporting import page, status, table

if TYPE_CHECKING:
    from imgclf.components.data.validate import ValidationResult

_SPLIT_COLOURS = {"train": "#4c78a8", "validation": "#f58518", "test": "#54a24b"}


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
    if result.validation_carved_from_train:
        summary += (
            f"<p>The data had no validation split: {result.validation_carved_from_train} train "
            "images were moved to validation, chosen by content hash within each class.</p>"
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
