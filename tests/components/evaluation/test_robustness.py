"""Robust accuracy through the served model's own signatures (ART's FGSM and PGD)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import _train_small_model
from imgclf.components import manifest, storage
from imgclf.components.evaluation import robustness
from imgclf.components.serving import signature


def test_the_attacked_rows_are_spread_over_the_split_and_all_when_asked():
    assert robustness.attacked_rows(10, 0) == list(range(10))
    assert robustness.attacked_rows(10, 20) == list(range(10))
    assert robustness.attacked_rows(10, 4) == [0, 3, 6, 9]


@pytest.fixture(scope="module")
def learned_colours(prepared, tmp_path_factory) -> str:
    """A model that has learned the colours (the session's trained_model barely has)."""
    model_dir = tmp_path_factory.mktemp("learned-colours") / "saved_model"
    return _train_small_model(
        model_dir, prepared, epochs=20, batch_size=4, early_stopping_patience=20
    )


@pytest.mark.slow
def test_an_undefended_model_loses_accuracy_as_the_perturbation_grows(learned_colours, prepared):
    """At epsilon 0 the pixel signatures score what serving_default scores; then accuracy falls
    with epsilon, and at the largest it is below the clean accuracy."""
    test = manifest.split_rows(manifest.read(prepared["validated"]), "test")
    images, labels = [storage.read_bytes(uri) for uri in test["uri"]], test["label"].tolist()
    model = signature.ServedModel(learned_colours)
    measured, examples = robustness.measure(model, images, labels, [4.0, 16.0, 64.0])
    served = [label.decode() for label in model.predict_batches(images)[signature.LABEL_KEY]]
    clean = float(np.mean(np.array(served) == np.array(labels)))
    assert clean >= 0.6, "the model did not learn the colours"
    assert measured.epsilons == [0.0, 4.0, 16.0, 64.0]
    assert measured.at("fgsm", 0.0) == measured.at("pgd", 0.0) == pytest.approx(clean)
    for attack in robustness.ATTACKS:
        curve = measured.accuracy[attack]
        assert all(later <= earlier for earlier, later in zip(curve, curve[1:], strict=False)), (
            curve
        )
    assert measured.at("pgd", 64.0) < clean
    assert examples, "PGD at 64 grey levels flipped no image"
    assert all(e.original == e.true != e.perturbed for e in examples)
