"""Training curves: loss and each metric per epoch, train against validation, across both
stages, as inline SVG (the evaluation report embeds them too)."""

from __future__ import annotations

import html

from imgclf.components.reporting import page, svg_line

_CURVE_COLOURS = {"train": "#4c78a8", "validation": "#f58518"}


def training_curves(history: dict[str, list[float]], stages: list[str]) -> str:
    """Inline SVG: one panel per metric (loss first), train and validation per epoch across
    both stages, with a dashed line where fine-tuning starts."""
    names = [name for name in history if not name.startswith("val_") and name != "learning_rate"]
    names.sort(key=lambda name: name != "loss")
    return "".join(_curve_panel(name, history, stages) for name in names)


def training_curves_page(
    history: dict[str, list[float]],
    stages: list[str],
    kept: dict | None = None,
    fine_tune_skipped: str | None = None,
) -> str:
    """The curves, with the epochs per stage, why fine-tuning did not run where it was asked
    for, and the epoch whose weights were exported."""
    epochs = ", ".join(f"{stage}: {stages.count(stage)}" for stage in dict.fromkeys(stages))
    skipped = (
        f" Fine-tuning skipped: {html.escape(fine_tune_skipped)}." if fine_tune_skipped else ""
    )
    exported = (
        f" Exported: the weights of epoch {kept['epoch']} ({html.escape(kept['stage'])} stage), "
        f"the lowest validation loss ({kept['val_loss']:.4g})."
        if kept
        else " Exported: the last stage's best epoch on training loss (no validation split)."
    )
    return page(
        "Training curves",
        [
            f"<p>Epochs per stage: {html.escape(epochs or 'none')}.{skipped}{exported}</p>",
            training_curves(history, stages),
        ],
    )


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
        parts.append(
            svg_line(
                [(x(i), y(v)) for i, v in enumerate(points)],
                colour,
                [f"{label} {name}, epoch {i + 1}: {v:.4f}" for i, v in enumerate(points)],
            )
            + f"<text x='{left + 140 + 80 * legend_index}' y='14' fill='{colour}'>{label}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)
