"""The pieces the three HTML reports are made of."""

import re

from PIL import Image

from imgclf.components import reporting


def test_a_page_is_self_contained_and_escapes_what_it_is_given():
    html = reporting.page("<b>cats & dogs</b>", ["<p>body</p>"])
    assert "&lt;b&gt;cats &amp; dogs&lt;/b&gt;" in html
    assert not re.search(r"(src|href)=['\"]?https?:", html), "the KFP UI shows no external assets"
    assert "<style>" in html and "<p>body</p>" in html


def test_an_image_grid_shows_each_image_with_escaped_labels():
    src = reporting.png_data_uri(Image.new("RGB", (4, 4)))
    assert src.startswith("data:image/png;base64,")
    grid = reporting.image_grid([{"src": src, "true": "<cat>", "predicted": "dog"}])
    assert grid.count("<img") == 1 and "&lt;cat&gt;" in grid
    assert reporting.image_grid([]) == "<p>None.</p>"


def test_status_marks_a_failed_error_and_a_failed_warning_apart():
    assert "pass" in reporting.status(True)
    assert "FAIL" in reporting.status(False, "error")
    assert "warning" in reporting.status(False, "warning")
