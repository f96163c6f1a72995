"""Tune: a KerasTuner search over the trainer's hyperparameters, run before train.

Each trial trains exactly as train does (both stages, early stopping with the best weights
kept) with one draw of the learning rate, dropout, label smoothing and, when a pretrained
backbone is fine-tuned, the unfrozen share; it is scored on the validation split by accuracy
(average precision for multi-label data), which unlike the loss does not move with label
smoothing. Train then runs once more with the best values. For searches larger than one
step's budget, Katib runs trials as separate pods on the cluster.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import keras
import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft

from imgclf.components import artifacts
from imgclf.components.parameters import TUNE_ALGORITHMS
from imgclf.components.training.config import TrainConfig
from imgclf.components.training.dataset import make_dataset, sized_for_data
from imgclf.components.training.network import build_model
from imgclf.components.training.stages import fit_stages, new_result
from imgclf.components.transform import features

log = logging.getLogger(__name__)


class TwoStageTraining(keras_tuner.HyperModel):
    """Builds the trainer's model from a draw of hyperparameters and fits it as train does."""

    def __init__(self, config: TrainConfig, examples_dir: str, transform_dir: str):
        super().__init__(name="imgclf")
        self.config = config
        self.examples_dir = examples_dir
        tft_output = tft.TFTransformOutput(transform_dir)
        self.num_classes = tft_output.vocabulary_size_by_name(features.LABEL_VOCABULARY)
        self.multi_label = features.is_multi_label(tft_output)
        self.objective = "average_precision" if self.multi_label else "accuracy"
        self.train_data = make_dataset(examples_dir, "train", tft_output, config, training=True)
        self.validation_data = make_dataset(
            examples_dir, "validation", tft_output, config, training=False
        )
        self._backbone = None

    def trial_config(self, hp: keras_tuner.HyperParameters) -> TrainConfig:
        # The ranges include train's defaults (a learning rate of 0.01, the whole backbone
        # unfrozen), the best measured on the clothing photos.
        values = {
            "learning_rate": hp.Float("learning_rate", 1e-3, 3e-2, sampling="log"),
            "dropout": hp.Float("dropout", 0.0, 0.5, step=0.1),
            "label_smoothing": hp.Float("label_smoothing", 0.0, 0.2, step=0.05),
        }
        if self.config.pretrained and self.config.fine_tune_epochs > 0:
            values["unfreeze_fraction"] = hp.Float("unfreeze_fraction", 0.2, 1.0, step=0.2)
        # Trials keep no checkpoints or logs: only the final training run does.
        return replace(
            self.config, **values, checkpoint_dir="", checkpoint_mirror="", tensorboard_dir=""
        )

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        model, self._backbone = build_model(
            self.trial_config(hp), self.num_classes, self.multi_label
        )
        return model

    def fit(self, hp, model, *args, **kwargs) -> dict[str, float]:
        """``callbacks`` are KerasTuner's (they keep each trial's best weights); Hyperband also
        passes the round's ``epochs`` and ``initial_epoch``, and has loaded the weights of the
        trial this one continues."""
        config = self.trial_config(hp)
        if "epochs" in kwargs:
            config = epoch_budget(config, kwargs["epochs"] - kwargs.get("initial_epoch", 0))
        result = new_result(self.examples_dir, [""] * self.num_classes, self.multi_label, config)
        fit_stages(
            model,
            self._backbone,
            self.train_data,
            self.validation_data,
            config,
            result,
            callbacks=kwargs.get("callbacks", ()),
        )
        scores = model.evaluate(self.validation_data, return_dict=True, verbose=0)
        return {f"val_{self.objective}": float(scores[self.objective])}


def epoch_budget(config: TrainConfig, epochs: int) -> TrainConfig:
    """``config`` with ``epochs`` in all, shared between the stages as ``config`` shares its
    own (at least one for the head), and no min_head_steps: a trial's budget is exact, so
    that trials compare."""
    if not config.pretrained or config.fine_tune_epochs == 0:
        return replace(config, epochs=max(epochs, 1), fine_tune_epochs=0, min_head_steps=0)
    total = config.epochs + config.fine_tune_epochs
    head = max(1, round(epochs * config.epochs / total))
    return replace(config, epochs=head, fine_tune_epochs=max(epochs - head, 0), min_head_steps=0)


def tune(
    examples_dir: str,
    transform_dir: str,
    output_dir: str,
    config: TrainConfig,
    max_trials: int,
    algorithm: str = "random",
) -> dict[str, float]:
    """Runs at most ``max_trials`` trials (Hyperband: rounds of successive halving up to the
    configured epochs, each round continuing its best trials); writes
    ``best_hyperparameters.json`` and ``trials.json`` (every trial's values and score, best
    first) to ``output_dir`` and returns the best values."""
    if algorithm not in TUNE_ALGORITHMS:
        raise ValueError(
            f"algorithm must be one of {', '.join(TUNE_ALGORITHMS)}, not {algorithm!r}."
        )
    if max_trials < 1:
        raise ValueError(f"max_trials must be at least 1, not {max_trials}.")
    if not tf.io.gfile.glob(features.split_file_pattern(examples_dir, "validation")):
        raise ValueError(
            "Tuning scores trials on the validation split, and the data has none: add a "
            "validation split (validation_fraction > 0) or set tune_trials=0."
        )
    keras.utils.set_random_seed(config.seed)
    config = sized_for_data(config, transform_dir)
    hypermodel = TwoStageTraining(config, examples_dir, transform_dir)
    output = Path(output_dir)
    options = {
        "objective": keras_tuner.Objective(f"val_{hypermodel.objective}", "max"),
        "seed": config.seed,
        "directory": str(output),
        "project_name": "trials",
        "overwrite": True,
    }
    if algorithm == "hyperband":
        tuner = keras_tuner.Hyperband(
            hypermodel, max_epochs=config.epochs + config.fine_tune_epochs, factor=3, **options
        )
        tuner.oracle.max_trials = max_trials
    else:
        search = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization}
        tuner = search[algorithm](hypermodel, max_trials=max_trials, **options)
    log.info(
        "Tuning: %d %s trials, scored by validation %s", max_trials, algorithm, hypermodel.objective
    )
    tuner.search()
    trials = [
        {
            **_searched(trial.hyperparameters.values),
            f"validation_{hypermodel.objective}": trial.score,
        }
        for trial in tuner.oracle.get_best_trials(max_trials)
    ]
    best = _searched(tuner.get_best_hyperparameters(1)[0].values)
    output.mkdir(parents=True, exist_ok=True)
    (output / artifacts.BEST_HYPERPARAMETERS).write_text(json.dumps(best, indent=2))
    (output / artifacts.TRIALS).write_text(json.dumps(trials, indent=2))
    log.info("Best of %d trials: %s", len(trials), best)
    return best


def _searched(values: dict) -> dict[str, float]:
    """The searched values, without Hyperband's bookkeeping (``tuner/epochs`` and such)."""
    return {name: value for name, value in values.items() if not name.startswith("tuner/")}


def trials_markdown(trials: list[dict]) -> str:
    """The trials as a Markdown table, best first, for the KFP UI."""
    if not trials:
        return "No trials ran."
    columns = list(trials[0])
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *(
            "| " + " | ".join(_cell(trial.get(column)) for column in columns) + " |"
            for trial in trials
        ),
    ]
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
