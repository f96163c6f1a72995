"""Evaluate: score the candidate and the served baseline on the test split, and bless or not.

Both models are scored the way TF Serving runs them, through their ``serving_default``
signature on the raw image bytes, so the numbers include any skew a client would meet
(``metrics``), and attacked through their pixel signatures for robust accuracy
(``robustness``). The rules (``blessing``) decide; ``report`` writes what people and machines
read.
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from imgclf.components import manifest, storage
from imgclf.components.evaluation import robustness
from imgclf.components.evaluation.blessing import blessing_checks
from imgclf.components.evaluation.gallery import gradcam_grid, misclassified_grid
from imgclf.components.evaluation.metrics import (
    ModelMetrics,
    classification_metrics,
    label_text,
    multi_label_metrics,
    predict,
    predicted_labels,
)
from imgclf.components.evaluation.report import write_outputs
from imgclf.components.parameters import BlessingRules, ServingTarget
from imgclf.components.serving import layout, models_config, signature
from imgclf.components.training import record
from imgclf.components.transform import features

log = logging.getLogger(__name__)

_READERS = 16
# Scoring the served model is tried this often, waiting 2 s, then 4 s: a store's hiccup
# passes, a broken model does not.
BASELINE_ATTEMPTS = 3
BASELINE_RETRY_SECONDS = 2


@dataclass
class Evaluation:
    candidate: ModelMetrics
    baseline: ModelMetrics | None
    baseline_version: int | None
    blessed: bool
    checks: list[dict] = field(default_factory=list)
    baseline_error: str | None = None
    robustness: robustness.Robustness | None = None
    baseline_robustness: robustness.Robustness | None = None
    # Why robust accuracy was not measured, where it was not.
    robustness_skipped: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def evaluate(
    candidate_dir: str,
    manifest_dir: str,
    serving: ServingTarget,
    rules: BlessingRules | None = None,
    output_dir: str | None = None,
    batch_size: int = 32,
    keras_model_path: str | None = None,
) -> Evaluation:
    """Scores both models and applies ``rules``; with ``output_dir``, writes
    ``evaluation.json``, ``report.html`` and ``summary.md`` there, and with the candidate's
    ``keras_model_path`` Grad-CAM heatmaps of a few test images in the report (the images
    resized as the candidate's training record says preprocess resized them)."""
    rules = rules or BlessingRules()
    test = manifest.split_rows(manifest.read(manifest_dir), "test")
    if test.empty:
        raise ValueError("The validated manifest has no test images to evaluate on.")
    images = _read_all(test["uri"].tolist())
    multi_label = manifest.is_multi_label(test)
    truth = manifest.label_sets(test) if multi_label else test["label"].tolist()
    score = multi_label_metrics if multi_label else classification_metrics
    attack = _Attack(images, truth, rules, batch_size, multi_label)
    log.info("Scoring the candidate on %d test images", len(images))
    candidate_model = signature.ServedModel(candidate_dir)
    candidate_predictions = predict(candidate_model, images, batch_size)
    candidate = score(truth, candidate_predictions)
    candidate_robustness, perturbed = attack.measure(candidate_model)
    baseline_version, baseline_scored, baseline_error = _score_baseline(
        serving,
        lambda model: (
            score(truth, predict(model, images, batch_size)),
            attack.measure(model)[0] if rules.robust_epsilon > 0 else None,
        ),
        rules,
    )
    baseline, baseline_robustness = baseline_scored or (None, None)
    checks = blessing_checks(
        candidate, baseline, rules, candidate_robustness, baseline_robustness, attack.skipped
    )
    evaluation = Evaluation(
        candidate=candidate,
        baseline=baseline,
        baseline_version=baseline_version,
        blessed=all(check["passed"] for check in checks),
        checks=checks,
        baseline_error=baseline_error,
        robustness=candidate_robustness,
        baseline_robustness=baseline_robustness,
        robustness_skipped=attack.skipped,
    )
    if output_dir:
        true_texts = [label_text(labels) for labels in truth]
        predicted_texts = [label_text(labels) for labels in predicted_labels(candidate_predictions)]
        training = record.read(candidate_dir)
        explained = None
        if keras_model_path:
            # Grad-CAM looks at the pixels the model saw: decoded and resized as preprocess
            # did.
            explained = gradcam_grid(
                keras_model_path,
                images,
                true_texts,
                predicted_texts,
                features.Preprocessing(**training["preprocessing"]),
            )
        write_outputs(
            evaluation,
            output_dir,
            misclassified_grid(images, true_texts, predicted_texts),
            training,
            explained,
            perturbed,
        )
    return evaluation


class _Attack:
    """Robust accuracy on the test images ``rules`` choose, or why it is skipped."""

    def __init__(self, images, truth, rules: BlessingRules, batch_size: int, multi_label: bool):
        self.epsilons = rules.measured_epsilons()
        rows = robustness.attacked_rows(len(images), rules.robustness_images)
        self.images = [images[row] for row in rows]
        self.truth = [truth[row] for row in rows]
        self.batch_size = batch_size
        self.skipped = None
        if multi_label:
            self.skipped = (
                "multi-label models are not attacked: robust exact-set accuracy is not measured"
            )
        elif not self.epsilons:
            self.skipped = "robustness_epsilons is none"

    def measure(
        self, model: signature.ServedModel
    ) -> tuple[robustness.Robustness | None, list[robustness.Perturbed]]:
        if self.skipped:
            return None, []
        if not model.scores_pixels:
            log.warning(
                "%s has no pixel signatures to attack (exported before them)", model.model_dir
            )
            return None, []
        log.info("Attacking %d test images (FGSM, PGD): %s", len(self.images), model.model_dir)
        return robustness.measure(model, self.images, self.truth, self.epsilons, self.batch_size)


class BaselineUnscorable(RuntimeError):
    """The served model could not be scored, so the candidate cannot be judged against it."""


def _score_baseline(
    serving: ServingTarget, score, rules: BlessingRules
) -> tuple[int | None, tuple | None, str | None]:
    """``(version, score(model), error)`` of the version TF Serving serves now: all None when
    there is none. One that cannot be scored, after ``BASELINE_ATTEMPTS`` tries (a store's hiccup
    passes), fails the step, unless ``rules.unscorable_baseline`` says to judge on the floors
    alone: then None and the error. Failing open would let a worse model ship."""
    served = models_config.served_version(serving.serving_root, serving.model_name)
    if served is None:
        log.info(
            "No model under %s/%s yet: judging on the floors alone",
            serving.serving_root,
            serving.model_name,
        )
        return None, None, None
    version, baseline_dir = served
    for attempt in range(1, BASELINE_ATTEMPTS + 1):
        log.info("Scoring the baseline, version %d at %s", version, baseline_dir)
        try:
            with layout.local_copy(baseline_dir) as local_dir:
                return version, score(signature.ServedModel(local_dir)), None
        except Exception as error:  # noqa: BLE001 - whatever it is, the rule below decides
            error_text = f"{type(error).__name__}: {error}"
            log.warning("Attempt %d: baseline version %d: %s", attempt, version, error_text)
            if attempt < BASELINE_ATTEMPTS:
                time.sleep(BASELINE_RETRY_SECONDS * attempt)
    if rules.unscorable_baseline == "judge_on_floors":
        log.warning("Judging the candidate on the floors alone (unscorable_baseline)")
        return version, None, error_text
    raise BaselineUnscorable(
        f"The served version {version} at {baseline_dir} could not be scored "
        f"({error_text}), so the candidate cannot be compared with it. Fix or roll back the "
        "served model, or set unscorable_baseline=judge_on_floors to judge on the floors alone."
    )


def _read_all(uris: list[str]) -> list[bytes]:
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        return list(pool.map(storage.read_bytes, uris))
