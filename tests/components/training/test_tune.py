import json
import shutil

import pytest

from conftest import IMAGE_SIZE, MOBILENET_WEIGHTS, needs_weights
from imgclf.components import artifacts
from imgclf.components.training import tune
from imgclf.components.training.config import TrainConfig

pytestmark = pytest.mark.slow


def _config(**options) -> TrainConfig:
    return TrainConfig(
        alpha=0.25,
        image_size=IMAGE_SIZE,
        batch_size=16,
        augmentations="none",
        **{"weights": "none", "epochs": 2, "fine_tune_epochs": 0, "min_head_steps": 0, **options},
    )


def test_a_random_search_scores_each_trial_on_validation_and_returns_the_best(prepared, tmp_path):
    best = tune.tune(
        prepared["examples"], prepared["transform"], str(tmp_path), _config(), max_trials=2
    )
    # From scratch there is no fine-tuning stage, so its unfrozen share is not searched.
    assert set(best) == {"learning_rate", "dropout", "label_smoothing"}
    assert 1e-3 <= best["learning_rate"] <= 3e-2
    trials = json.loads((tmp_path / artifacts.TRIALS).read_text())
    assert len(trials) == 2
    scores = [trial["validation_accuracy"] for trial in trials]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert {k: trials[0][k] for k in best} == best
    assert json.loads((tmp_path / artifacts.BEST_HYPERPARAMETERS).read_text()) == best
    table = tune.trials_markdown(trials)
    assert table.splitlines()[0].startswith("| learning_rate |") and table.count("\n") == 4


@needs_weights
def test_a_bayesian_search_of_a_pretrained_backbone_also_tunes_the_unfrozen_share(
    prepared, tmp_path
):
    config = _config(
        weights=str(MOBILENET_WEIGHTS),
        epochs=1,
        fine_tune_epochs=1,
        min_fine_tune_images_per_class=0,
    )
    best = tune.tune(
        prepared["examples"], prepared["transform"], str(tmp_path), config, 2, "bayesian"
    )
    assert 0.2 <= best["unfreeze_fraction"] <= 1.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_trials": 0}, "max_trials must be at least 1"),
        ({"max_trials": 1, "algorithm": "grid"}, "algorithm must be one of random, bayesian, "),
    ],
)
def test_bad_search_settings_are_refused(prepared, tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        tune.tune(prepared["examples"], prepared["transform"], str(tmp_path), _config(), **options)


def test_data_without_a_validation_split_cannot_be_tuned(prepared, tmp_path):
    examples = shutil.copytree(prepared["examples"], tmp_path / "examples")
    shutil.rmtree(examples / "validation")
    with pytest.raises(ValueError, match="Tuning scores trials on the validation split"):
        tune.tune(str(examples), prepared["transform"], str(tmp_path / "t"), _config(), 1)


def test_hyperband_continues_its_best_trials_within_the_epoch_budget(prepared, tmp_path):
    config = _config(epochs=3)
    best = tune.tune(
        prepared["examples"], prepared["transform"], str(tmp_path), config, 4, "hyperband"
    )
    assert set(best) == {"learning_rate", "dropout", "label_smoothing"}
    trials = json.loads((tmp_path / artifacts.TRIALS).read_text())
    assert 1 < len(trials) <= 4
    assert not any(name.startswith("tuner/") for trial in trials for name in trial)


@pytest.mark.parametrize(
    "weights, epochs, fine_tune_epochs, budget, expected",
    [
        ("none", 5, 3, 4, (4, 0)),
        ("imagenet", 5, 3, 4, (2, 2)),
        ("imagenet", 5, 3, 1, (1, 0)),
        ("imagenet", 4, 0, 9, (9, 0)),
    ],
)
def test_a_hyperband_round_shares_its_epochs_between_the_stages(
    weights, epochs, fine_tune_epochs, budget, expected
):
    config = TrainConfig(weights=weights, epochs=epochs, fine_tune_epochs=fine_tune_epochs)
    shared = tune.epoch_budget(config, budget)
    assert (shared.epochs, shared.fine_tune_epochs) == expected
