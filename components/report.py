"""Self-contained HTML reports: inline styles, no external assets, so they render in the KFP UI."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import pandas as pd

from components.manifest import SPLITS

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
        kept.pivot_table(
            index="label", columns="split", values="uri", aggfunc="count", fill_value=0
        )
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
    quarantine = (
        table(quarantined[["uri", "label", "split", "reason"]])
        if len(quarantined)
        else "<p>No file quarantined.</p>"
    )
    return page(
        "Data validation",
        [
            summary,
            rules,
            "<h2>Images per class and split</h2>",
            table(per_class),
            "<h2>Quarantined and dropped files</h2>",
            quarantine,
        ],
    )
