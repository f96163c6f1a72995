"""The evaluation report as a person sees it: rendered by headless Chromium."""

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from imgclf.components.evaluation.blessing import blessing_checks
from imgclf.components.evaluation.evaluate import Evaluation
from imgclf.components.evaluation.metrics import Predictions, classification_metrics
from imgclf.components.evaluation.report import confusion_heatmap, evaluation_html
from imgclf.components.parameters import BlessingRules

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def _evaluation() -> Evaluation:
    classes = ["boot", "hat", "scarf"]
    rng = np.random.default_rng(0)
    truth = [classes[i] for i in rng.integers(0, 3, 60)]
    scores = rng.dirichlet([1, 1, 1], 60) + np.array(
        [[0.8 * (c == t) for c in classes] for t in truth]
    )
    scores /= scores.sum(axis=1, keepdims=True)
    predicted = Predictions([classes[i] for i in scores.argmax(axis=1)], scores, classes)
    candidate = classification_metrics(truth, predicted)
    checks = blessing_checks(candidate, None, BlessingRules())
    return Evaluation(candidate, None, None, all(c["passed"] for c in checks), checks)


def _screenshot(html_path, png_path):
    completed = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
            f"--user-data-dir={png_path.parent / 'chromium-profile'}",
            "--window-size=1000,1400",
            f"--screenshot={png_path}",
            f"file://{html_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return completed.stderr


def test_confusion_heatmap_shades_by_row_share():
    html = confusion_heatmap(["a", "b"], [[3, 1], [0, 4]])
    assert "rgba(76, 120, 168, 0.750)" in html and "rgba(76, 120, 168, 1.000)" in html
    assert "rgba(76, 120, 168, 0.000)" in html


_HISTORY = {
    "loss": [1.2, 0.9, 0.7],
    "val_loss": [1.3, 1.0, 0.8],
    "accuracy": [0.4, 0.6, 0.7],
    "val_accuracy": [0.35, 0.5, 0.65],
}
_STAGES = ["head", "head", "fine_tune"]


@needs_chromium
def test_the_evaluation_report_renders_with_its_confusion_matrix(tmp_path):
    html_path = tmp_path / "report.html"
    training = {"history": _HISTORY, "stages": _STAGES}
    html_path.write_text(evaluation_html(_evaluation(), [], training))
    png_path = tmp_path / "report.png"
    console = _screenshot(html_path, png_path)

    assert "Uncaught" not in console and "CONSOLE" not in console
    pixels = np.asarray(Image.open(png_path).convert("RGB")).astype(int)
    assert pixels.std() > 20, "the screenshot is blank"
    heatmap_blue = (abs(pixels - [76, 120, 168]).sum(axis=2) < 40).sum()
    assert heatmap_blue > 500, "no confusion-matrix heatmap in the rendering"
    curve_orange = (abs(pixels - [245, 133, 24]).sum(axis=2) < 40).sum()
    assert curve_orange > 50, "no validation curve in the rendering"


def test_the_robustness_plot_draws_each_attack_and_the_served_model_dashed():
    from imgclf.components.evaluation.report import robustness_plot
    from imgclf.components.evaluation.robustness import Robustness

    candidate = Robustness([0.0, 2.0, 8.0], {"fgsm": [0.9, 0.7, 0.4], "pgd": [0.9, 0.5, 0.1]}, 9, 3)
    served = Robustness([0.0, 2.0, 8.0], {"fgsm": [0.8, 0.6, 0.3], "pgd": [0.8, 0.4, 0.0]}, 9, 3)
    alone = robustness_plot(candidate)
    assert alone.count("<polyline") == 2 and "stroke-dasharray" not in alone
    assert "<title>candidate PGD at 8: 0.1000</title>" in alone
    beside = robustness_plot(candidate, served)
    assert beside.count("<polyline") == 3 and beside.count("stroke-dasharray='5 3'") == 1


def test_a_skipped_robustness_measurement_says_why():
    evaluation = _evaluation()
    evaluation.robustness_skipped = "robustness_epsilons is none"
    page = evaluation_html(evaluation, [])
    assert "<h2>Robustness</h2><p>Not measured: robustness_epsilons is none.</p>" in page
