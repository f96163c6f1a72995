"""Every pipeline parameter, declared once: its type, default, choices and one line of help.

The settings of each step are one dataclass here, named for what they are and grouped by the
step that uses them. The pipeline's signature and the descriptions the KFP UI shows, the
``imgclf run`` flags, README's parameter table and the trainer's config are all made from these
declarations (``imgclf.pipelines.interface``), and the steps validate their settings with the
same choices and ranges. The measurements behind the defaults are in ``docs/defaults.md``.

This module imports no TensorFlow: parsing a command line or compiling the pipeline starts none.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from imgclf.components import storage

REQUIRED = dataclasses.MISSING

BACKBONES = (
    "mobilenet",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "vgg16",
    "resnet50",
    "resnet50v2",
    "inceptionv3",
    "xception",
    "densenet121",
    "efficientnetv2b0",
    "efficientnetv2b1",
    "efficientnetv2b2",
    "efficientnetv2b3",
    "efficientnetv2s",
    "convnext_tiny",
    "alexnet",
    "squeezenet1_1",
)
RESIZE_POLICIES = ("pad", "crop", "stretch")
JPEG_DECODINGS = ("scaled", "full")
AUGMENTATIONS = (
    "flip",
    "rotation",
    "zoom",
    "translation",
    "contrast",
    "brightness",
    "mixup",
    "cutmix",
)
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
LEARNING_RATE_SCHEDULES = ("constant", "cosine")
CLASS_WEIGHTS = ("none", "balanced")
LOSSES = ("crossentropy", "focal")
MIXED_PRECISION = ("auto", "on", "off")
QUANTIZATIONS = ("float16", "int8")
TUNE_ALGORITHMS = ("random", "bayesian", "hyperband")
REGRESSION_METRICS = ("accuracy", "macro_f1", "macro_average_precision")
ADVERSARIAL_TRAINING = ("none", "fgsm", "pgd")
# What a comma-separated setting (augmentations, tflite) takes to mean "none of them".
NONE = "none"
# data_uri's bundled samples (sample:digits) and weights' words, beside locations.
SAMPLE_PREFIX = "sample:"
NAMED_WEIGHTS = ("imagenet", "none")


@dataclass(frozen=True)
class Bounds:
    """An interval a number must lie in, written as a mathematician would: ``[0, 1)``."""

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    @classmethod
    def parse(cls, text: str) -> Bounds:
        low, high = (part.strip() for part in text[1:-1].split(","))
        return cls(
            low=float(low or "-inf"),
            high=float(high or "inf"),
            low_open=text[0] == "(",
            high_open=text[-1] == ")",
        )

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def in_words(self) -> str:
        """The interval as a reader says it: "0 or more", "above 0", "in [0, 1)"."""
        if math.isinf(self.high):
            return f"above {self.low:g}" if self.low_open else f"{self.low:g} or more"
        return f"in {self}"

    def requirement(self) -> str:
        """What a value must be, in words: "must not be negative", "must be in [0, 1)"."""
        if math.isinf(self.high) and not self.low_open and self.low == 0:
            return "must not be negative"
        if math.isinf(self.high) and self.low_open and self.low == 0:
            return "must be positive"
        if math.isinf(self.high) and not self.low_open:
            return f"must be at least {self.low:g}"
        return f"must be in {self}"

    def __str__(self) -> str:
        def number(value: float) -> str:
            return "" if math.isinf(value) else f"{value:g}"

        return (
            f"{'(' if self.low_open else '['}{number(self.low)}, "
            f"{number(self.high)}{')' if self.high_open else ']'}"
        )


def setting(
    default: Any,
    help: str,
    *,
    choices: tuple[str, ...] = (),
    each_of: tuple[str, ...] = (),
    item: str = "",
    within: str = "",
    local_default: Any = REQUIRED,
    flags: tuple[str, ...] = (),
    local_path: bool = False,
) -> Any:
    """A declared parameter: ``choices`` for one value of a set, ``each_of`` for a
    comma-separated list of a set's values (or ``none``), each called an ``item`` in errors,
    ``within`` for an interval, ``local_default`` where ``imgclf run`` has a default and the
    cluster pipeline has none, ``flags`` for the ``imgclf run`` spellings beside
    ``--name-with-dashes``, ``local_path`` for a location that ``imgclf run`` makes absolute."""
    metadata = {
        "help": help,
        "choices": choices,
        "each_of": each_of,
        "item": item,
        "bounds": Bounds.parse(within) if within else None,
        "local_default": local_default,
        "flags": flags,
        "local_path": local_path,
    }
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def comma_separated(value: str, vocabulary: tuple[str, ...], what: str) -> list[str]:
    """``"flip,zoom"`` -> ``["flip", "zoom"]``; an empty string or ``none`` means none."""
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    if names == [NONE]:
        return []
    unknown = sorted(set(names) - set(vocabulary))
    if unknown:
        raise ValueError(
            f"Unknown {what} {', '.join(unknown)}; choose from {', '.join(vocabulary)} "
            f"(comma-separated) or '{NONE}'."
        )
    return names


class SettingsError(ValueError):
    """Settings that cannot work, each problem one sentence that names its parameter."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(" ".join(problems))
        self.problems = problems


class Settings:
    """The base of each step's settings: checks every value against its declaration, then
    the combinations (``combination_problems``), and raises every problem found at once."""

    # The steps that take these settings, in the order they run.
    USED_BY: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        problems = [
            problem
            for declared in fields(self)
            # A declared parameter, not a subclass's own field.
            if "help" in declared.metadata
            and (problem := _problem(declared, getattr(self, declared.name)))
        ]
        # Combinations are judged on values that are each valid.
        problems = problems or self.combination_problems()
        if problems:
            raise SettingsError(problems)

    def combination_problems(self) -> list[str]:
        """Values that are each valid but cannot work together."""
        return []

    @classmethod
    def from_step_input(cls, values: Mapping[str, Any]):
        """These settings from a KFP step's ``settings`` dict (the others in it are left
        out). KFP substitutes the dict's values as text: ``"3"`` (``"3.0"`` under
        ``kfp.local``) for 3, ``"true"`` for True, so each is parsed back to its type."""
        types = typing.get_type_hints(cls)
        return cls(
            **{
                declared.name: parse(types[declared.name], values[declared.name])
                for declared in fields(cls)
                if declared.name in values
            }
        )


def parse(kind: type, value: Any) -> Any:
    """``value``, or the text KFP made of it, as ``kind``."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ValueError(f"Expected true or false, not {value!r}.")
    if kind is int:
        number = float(value)
        if not number.is_integer():
            raise ValueError(f"Expected a whole number, not {value!r}.")
        return int(number)
    if kind is float:
        return float(value)
    if kind is list:
        return json.loads(value) if isinstance(value, str) else list(value)
    return str(value)


def _location_problems(name: str, uri: str) -> list[str]:
    error = storage.location_error(uri)
    return [f"{name}: {error}"] if error else []


def _problem(declared: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with one parameter's value, in one sentence, or None."""
    meta = declared.metadata
    if isinstance(value, str) and any(c in '"\\' or ord(c) < 32 for c in value):
        # KFP writes a step's settings into its JSON input as text (the launcher and kfp.local
        # alike), so a quote, a backslash or a control character would break that JSON.
        return (
            f"{declared.name} may not contain quotes, backslashes or control characters: {value!r}."
        )
    if meta["choices"] and value not in meta["choices"]:
        return f"{declared.name} must be one of {', '.join(meta['choices'])}, not {value!r}."
    if meta["each_of"]:
        try:
            comma_separated(value, meta["each_of"], meta["item"])
        except ValueError as error:
            return f"{declared.name}: {error}"
    if meta["bounds"] is not None and value not in meta["bounds"]:
        return f"{declared.name} {meta['bounds'].requirement()}, not {value}."
    return None


@dataclass
class ServingTarget(Settings):
    """Where TF Serving reads models: the served model is the baseline, the push target and
    the drift reference."""

    USED_BY = ("validate", "evaluate", "push")
    serving_root: str = setting(
        REQUIRED,
        "TF Serving model root: models go to <serving_root>/<model_name>/<version>/",
        local_default="serving",
        flags=("--serving-dir",),
        local_path=True,
    )
    model_name: str = setting(
        "imgclf",
        "the model's folder under serving_root and its name in TF Serving",
    )
    serving_url: str = setting(
        "",
        "TF Serving's REST address, e.g. http://tfserving.imgclf:8501: a push or rollback that "
        "moves a label waits until it reports the version AVAILABLE; empty: none is asked",
    )
    config_poll_seconds: int = setting(
        60,
        "how often TF Serving reads models.config (--model_config_file_poll_wait_seconds): a "
        "label moves only after every replica has read the config that loads its version; 0: "
        "no TF Serving reads serving_root",
        within="[0, )",
        local_default=0,
    )

    def combination_problems(self) -> list[str]:
        return _location_problems("serving_root", self.serving_root)


@dataclass
class IngestSettings(Settings):
    """What to read and how to split it: the data, the snapshot it is read at, and the shares
    of the hash split when the data brings no split of its own."""

    USED_BY = ("fingerprint", "ingest")
    data_uri: str = setting(
        "sample:digits",
        "the images: a class-per-folder tree (local, gs:// or s3://), a .csv/.jsonl listing, or "
        "the bundled sample:digits",
        flags=("--data",),
        local_path=True,
    )
    data_snapshot: str = setting(
        "",
        "ISO 8601 time (UTC unless it says otherwise): read only files not changed after it, so "
        "that a rerun reads the same images; empty: the run's scheduled time on a recurring run, "
        "else everything there now",
    )
    train_fraction: float = setting(
        0.8,
        "train share of the hash split when the data has no split folders",
        within="(0, 1)",
    )
    validation_fraction: float = setting(
        0.1,
        "validation share of the hash split when the data has no split folders; data split "
        "into train and test only gets validation_fraction / (train_fraction + "
        "validation_fraction) of each class's train images as validation; 0: none",
        within="[0, 1)",
    )

    def combination_problems(self) -> list[str]:
        problems = (
            []
            if self.data_uri.startswith(SAMPLE_PREFIX)
            else _location_problems("data_uri", self.data_uri)
        )
        if self.train_fraction + self.validation_fraction >= 1:
            problems.append(
                f"train_fraction + validation_fraction = "
                f"{self.train_fraction + self.validation_fraction:g} leaves no test split; make "
                "their sum below 1."
            )
        return problems


@dataclass
class ValidationRules(Settings):
    """The data-validation suite's thresholds: which files are quarantined, and how much
    quarantine, imbalance or drift the data may show."""

    USED_BY = ("validate",)
    min_side: int = setting(
        16,
        "images with a shorter side are quarantined",
        within="[1, )",
    )
    min_images_per_class: int = setting(
        5,
        "train images every class needs",
        within="[1, )",
    )
    max_invalid_fraction: float = setting(
        0.05,
        "share of quarantined files past which validation fails",
        within="[0, 1]",
    )
    max_pixels: int = setting(
        50_000_000,
        "larger images (by their header) are quarantined before decoding: decompression bombs",
        within="[1, )",
    )
    max_imbalance_ratio: float = setting(
        10.0,
        "warn when the largest class has this many times the smallest's train images",
        within="[1, )",
    )
    drift_warning: float = setting(
        0.15,
        "warn when the label mix (total variation), the median image size (relative) or the "
        "mean brightness (of full scale) moved this far from the served model's data",
        within="[0, )",
    )
    max_label_drift: float = setting(
        0.5,
        "fail when the label mix moved this far (total variation) from the served model's data",
        within="[0, 1]",
    )


@dataclass
class PreprocessSettings(Settings):
    """How images become model input (the transform graph that training and serving share),
    and where Beam runs it."""

    USED_BY = ("preprocess",)
    image_size: int = setting(
        224,
        "side of the square model input, in pixels",
        within="[1, )",
    )
    resize_policy: str = setting(
        "stretch",
        "how images become square: stretch (all of the image, distorted), pad with black (all "
        "of it, no distortion, fewer pixels for the subject) or crop to the centre square (the "
        "edges of long images are lost)",
        choices=RESIZE_POLICIES,
    )
    jpeg_decoding: str = setting(
        "scaled",
        "scaled: a JPEG larger than image_size needs is decoded at 1/2, 1/4 or 1/8 scale in "
        "libjpeg's DCT domain, the smallest that still covers the square (a 12-megapixel photo "
        "at 224 px decodes at 1/8), then resized; full: every JPEG decoded at full size first",
        choices=JPEG_DECODINGS,
    )
    rebalance_to: int = setting(
        0,
        "write augmented copies of each smaller class's train images until every class has "
        "this many; single-label data only; 0 is off",
        within="[0, )",
    )
    beam_pipeline_args: list = setting(
        ["--runner=DirectRunner"],
        "Beam pipeline options, passed untouched (imgclf run --beam-arg=--option=value, "
        "repeatable), e.g. --runner=DataflowRunner --project=P --region=R "
        "--temp_location=gs://B/tmp; DirectRunner runs Beam's FnApiRunner, which downloads "
        "nothing (--runner=SwitchingDirectRunner: Beam's own, which tries Prism first)",
        flags=("--beam-arg",),
    )


@dataclass
class TrainSettings(Settings):
    """The model and how it is trained; tune searches some of these and train uses them all."""

    USED_BY = ("tune", "train")
    backbone: str = setting(
        "mobilenet",
        "the Keras Applications network (or AlexNet, SqueezeNet 1.1) under the classifier head; "
        "`imgclf backbones` lists their sizes and input scaling",
        choices=BACKBONES,
    )
    weights: str = setting(
        "imagenet",
        "imagenet (the Keras download cache), none (train from scratch), or a Keras weights "
        "file of the headless backbone (local, gs:// or s3://)",
    )
    alpha: float = setting(
        1.0,
        "width multiplier of the MobileNets",
        within="(0, )",
    )
    epochs: int = setting(
        2,
        "stage 1: epochs of the new head on a frozen backbone",
        within="[0, )",
    )
    min_head_steps: int = setting(
        150,
        "stage 1 runs at least this many optimizer steps before early stopping may stop it or "
        "keep one of its epochs, so small data gets more head epochs than epochs (a head that "
        "saw four batches is no start for fine-tuning); 0: exactly epochs",
        within="[0, )",
    )
    fine_tune_epochs: int = setting(
        30,
        "stage 2: epochs of the top unfreeze_fraction of the backbone (BatchNormalization stays "
        "frozen) at a tenth of the learning rate",
        within="[0, )",
    )
    min_fine_tune_images_per_class: int = setting(
        50,
        "stage 2 runs only where the train split has at least this many images a class (on "
        "average): on fewer, fine-tuning the backbone overfits them and a validation split of a "
        "few images cannot tell that it did, so the head stage's model is exported; 0: always",
        within="[0, )",
    )
    batch_size: int = setting(
        32,
        "images per step (per replica with several GPUs)",
        within="[1, )",
    )
    learning_rate: float = setting(
        0.01,
        "stage 1's learning rate; stage 2 uses a tenth",
        within="(0, )",
    )
    augmentations: str = setting(
        "flip,rotation,zoom",
        "training-only augmentations: flip, rotation (±18°), zoom and translation (±10%), "
        "contrast and brightness (±20%) as layers in the model; mixup and cutmix on batches",
        each_of=AUGMENTATIONS,
        item="augmentation",
    )
    early_stopping_patience: int = setting(
        10,
        "epochs without a better validation loss before a stage stops; the best epoch's weights "
        "are kept",
        within="[0, )",
    )
    optimizer: str = setting(
        "adam",
        "the optimizer (sgd with Nesterov momentum 0.9)",
        choices=OPTIMIZERS,
    )
    learning_rate_schedule: str = setting(
        "cosine",
        "cosine: a linear warmup over warmup_epochs, then cosine decay to zero over each stage",
        choices=LEARNING_RATE_SCHEDULES,
    )
    warmup_epochs: int = setting(
        1,
        "warmup length of the cosine schedule",
        within="[0, )",
    )
    label_smoothing: float = setting(
        0.0,
        "softens the one-hot (or multi-hot) targets",
        within="[0, 1)",
    )
    class_weight: str = setting(
        "none",
        "balanced: each class weighs train images / (classes x its images), as scikit-learn's; "
        "single-label data only",
        choices=CLASS_WEIGHTS,
    )
    dropout: float = setting(
        0.2,
        "dropout before the classifier head",
        within="[0, 1)",
    )
    unfreeze_fraction: float = setting(
        1.0,
        "stage 2: the top share of the backbone's layers that is fine-tuned",
        within="(0, 1]",
    )
    loss: str = setting(
        "crossentropy",
        "focal: cross-entropy times (1 - p)^focal_gamma, weighting the images the model gets "
        "wrong (binary focal for multi-label data)",
        choices=LOSSES,
    )
    focal_gamma: float = setting(
        2.0,
        "the focusing exponent of the focal loss",
        within="[0, )",
    )
    l2: float = setting(
        0.0,
        "L2 penalty on the head's weights (adamw decays every trainable weight)",
        within="[0, )",
    )
    mixed_precision: str = setting(
        "auto",
        "auto: mixed_float16 on a GPU (float32 output layer, loss scaling), float32 on a CPU",
        choices=MIXED_PRECISION,
    )
    workers: int = setting(
        1,
        "training processes: 1 trains in the train step's pod; more launch a Kubeflow TFJob of "
        "that many worker pods (each with train's image, resources and GPUs; needs the training "
        "operator, README: Training across nodes); batch_size stays per replica",
        within="[1, )",
    )
    xla: bool = setting(
        False,
        "compile train steps with XLA; refuses rotation, zoom and translation, whose warp has no "
        "XLA kernel",
    )
    seed: int = setting(
        42,
        "seeds initialisation, shuffling, augmentation and dropout: the same seed, data and "
        "machine train the same model",
    )
    tflite: str = setting(
        NONE,
        "TFLite exports beside the SavedModel (assets.extra/tflite/): float16, int8 (dynamic "
        "range), or both, each checked against the model",
        each_of=QUANTIZATIONS,
        item="TFLite quantisation",
    )

    adversarial_training: str = setting(
        NONE,
        "train the stage that trains the backbone (fine-tuning; from scratch, the one stage) on "
        "adversarial examples made against the model as it learns: fgsm (one step) or pgd "
        "(5 steps, about 3x fgsm's time)",
        choices=ADVERSARIAL_TRAINING,
    )
    adversarial_epsilon: float = setting(
        2.0,
        "the perturbation of adversarial training: at most this many grey levels per pixel "
        "(L-infinity, in the model's 0-255 input scale)",
        within="(0, 255]",
    )
    adversarial_share: float = setting(
        0.5,
        "the share of each training batch replaced by its adversarial version",
        within="(0, 1]",
    )

    def combination_problems(self) -> list[str]:
        if self.weights.lower() in NAMED_WEIGHTS:
            return []
        return _location_problems("weights", self.weights)


@dataclass
class TuneSettings(Settings):
    """The hyperparameter search before train: how many trials, and how they are chosen."""

    USED_BY = ("tune",)
    tune_trials: int = setting(
        0,
        "trials of a KerasTuner search (learning rate, dropout, label smoothing, "
        "unfreeze_fraction) before train; 0: no search",
        within="[0, )",
    )
    tune_algorithm: str = setting(
        "random",
        "the search: random, bayesian, or hyperband (successive halving up to epochs + "
        "fine_tune_epochs)",
        choices=TUNE_ALGORITHMS,
    )


@dataclass
class BlessingRules(Settings):
    """What evaluate measures on the test split and what the candidate must score there to be
    pushed: floors, and how much it may lose against the served model."""

    USED_BY = ("evaluate",)
    min_accuracy: float = setting(
        0.5,
        "test accuracy the candidate needs (multi-label: the share of images whose label set is "
        "exactly right)",
        within="[0, 1]",
    )
    min_macro_f1: float = setting(
        0.0,
        "test macro F1 the candidate needs",
        within="[0, 1]",
    )
    max_regression: float = setting(
        0.0,
        "how much of regression_metric the candidate may lose against the served model",
        within="[0, 1]",
    )
    regression_metric: str = setting(
        "accuracy",
        "the metric compared with the served model's (macro_average_precision suits multi-label "
        "data)",
        choices=REGRESSION_METRICS,
    )
    max_class_recall_drop: float = setting(
        0.1,
        "refuse a candidate that loses this much recall on any class (the regression an average "
        "hides)",
        within="[0, 1]",
    )
    unscorable_baseline: str = setting(
        "fail",
        "when the served model cannot be scored (unreadable, or of another task): fail the step, "
        "or judge_on_floors to bless on the floors alone, on purpose",
        choices=("fail", "judge_on_floors"),
    )
    robustness_epsilons: str = setting(
        "1,2,4,8",
        "perturbation sizes, in grey levels per pixel (L-infinity, the model's 0-255 input "
        "scale), at which evaluate measures FGSM and PGD robust accuracy; none to skip",
    )
    robustness_images: int = setting(
        200,
        "test images attacked for robust accuracy, spread evenly over the test split (0: all); "
        "on a CPU about 0.5 s an image for MobileNet 0.25 at 224 px, more for larger backbones",
        within="[0, )",
    )
    robust_epsilon: float = setting(
        0.0,
        "the perturbation size at which the robustness rules judge the candidate by PGD robust "
        "accuracy (measured even when not in robustness_epsilons); 0: no robustness rules",
        within="[0, 255]",
    )
    min_robust_accuracy: float = setting(
        0.0,
        "PGD robust accuracy at robust_epsilon the candidate needs",
        within="[0, 1]",
    )
    max_robust_regression: float = setting(
        0.05,
        "how much PGD robust accuracy at robust_epsilon the candidate may lose against the served "
        "model, when both have it",
        within="[0, 1]",
    )

    def combination_problems(self) -> list[str]:
        try:
            self.measured_epsilons()
        except ValueError as error:
            return [f"robustness_epsilons: {error}"]
        return []

    def measured_epsilons(self) -> list[float]:
        """The perturbation sizes robust accuracy is measured at, rising: robustness_epsilons
        and robust_epsilon, without 0 (the clean accuracy, always measured beside them)."""
        text = self.robustness_epsilons.strip().lower()
        words = [] if text in ("", NONE) else text.split(",")
        try:
            epsilons = {float(word) for word in words}
        except ValueError:
            raise ValueError(
                f"expected comma-separated numbers of grey levels (for example 1,2,4,8) or "
                f"{NONE}, not {self.robustness_epsilons!r}."
            ) from None
        if any(not 0 < epsilon <= 255 for epsilon in epsilons):
            raise ValueError(
                f"each perturbation size must be above 0 and at most 255 grey levels, not "
                f"{self.robustness_epsilons!r}."
            )
        if self.robust_epsilon > 0:
            epsilons.add(self.robust_epsilon)
        return sorted(epsilons)


@dataclass
class PushSettings(Settings):
    """How push publishes a blessed model: how many versions stay beside it."""

    USED_BY = ("push",)
    keep_versions: int = setting(
        0,
        "after a push, keep only the newest N versions (0 keeps all)",
        within="[0, )",
    )


# In the order the pipeline's signature lists them: serving_root, the one required parameter,
# first.
GROUPS: tuple[type[Settings], ...] = (
    ServingTarget,
    IngestSettings,
    ValidationRules,
    PreprocessSettings,
    TrainSettings,
    TuneSettings,
    BlessingRules,
    PushSettings,
)


@dataclass(frozen=True)
class Parameter:
    """One declared parameter, as the pipeline, the CLI and README present it."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...]
    each_of: tuple[str, ...]
    item: str
    bounds: Bounds | None
    local_default: Any
    flags: tuple[str, ...]
    local_path: bool
    group: type[Settings]

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def description(self) -> str:
        """The help with the values the parameter takes: what the KFP UI, README and
        ``imgclf run --help`` show."""
        if self.choices:
            return f"{self.help} [{' | '.join(self.choices)}]"
        if self.each_of:
            return f"{self.help} [comma-separated: {', '.join(self.each_of)}; or {NONE}]"
        if self.bounds is not None:
            return f"{self.help} [{self.bounds.in_words()}]"
        return self.help

    @property
    def default_for_local_runs(self) -> Any:
        return self.default if self.local_default is REQUIRED else self.local_default


def parameters() -> list[Parameter]:
    """Every pipeline parameter, group by group."""
    declared = []
    for group in GROUPS:
        types = typing.get_type_hints(group)
        for item in fields(group):
            default = (
                item.default_factory()
                if item.default_factory is not dataclasses.MISSING
                else item.default
            )
            declared.append(
                Parameter(
                    name=item.name,
                    type=types[item.name],
                    default=default,
                    group=group,
                    **{key: item.metadata[key] for key in _METADATA},
                )
            )
    names = [parameter.name for parameter in declared]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValueError(f"Parameters declared twice: {', '.join(duplicated)}.")
    return declared


_METADATA = ("help", "choices", "each_of", "item", "bounds", "local_default", "flags", "local_path")
