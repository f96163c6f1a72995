"""What the three HTML reports (validation, training curves, evaluation) are made of: one
self-contained page style (inline, no external assets, so they render in the KFP UI), tables,
pass/fail marks and image grids."""

from __future__ import annotations

import base64
import html
import io

import pandas as pd
from PIL import Image

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


def svg_line(
    points: list[tuple[float, float]], colour: str, titles: list[str], dashed: bool = False
) -> str:
    """An SVG polyline through ``points`` with a dot at each, whose title shows on hover."""
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    dash = " stroke-dasharray='5 3'" if dashed else ""
    dots = "".join(
        f"<circle cx='{x:.1f}' cy='{y:.1f}' r='2.5' fill='{colour}'>"
        f"<title>{html.escape(title)}</title></circle>"
        for (x, y), title in zip(points, titles, strict=True)
    )
    return f"<polyline points='{path}' fill='none' stroke='{colour}' stroke-width='2'{dash}/>{dots}"


def png_data_uri(image: Image.Image) -> str:
    """An image inline in a page, as a PNG data URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
