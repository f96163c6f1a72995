"""`make bench`: speed and memory of the pipeline's steps against the baselines they replace,
measured in the same run on the same images.

Each figure is repeated and reported as min, median and max; each ratio divides medians.
Writes ``bench/results.json`` and ``bench/results.md`` and prints the table.

    python -m bench.run [--repeats 3] [--quick] [--only NAME] [--seeds 42,7,1]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_transform as tft  # noqa: E402

from bench import baselines  # noqa: E402
from bench.gpu_training_speed import EpochSeconds  # noqa: E402
from imgclf.components import manifest  # noqa: E402
from imgclf.components.data.ingest import ingest  # noqa: E402
from imgclf.components.model import augmentation  # noqa: E402
from imgclf.components.parameters import IngestSettings, PreprocessSettings  # noqa: E402
from imgclf.components.serving import signature  # noqa: E402
from imgclf.components.training.config import TrainConfig  # noqa: E402
from imgclf.components.training.dataset import make_dataset  # noqa: E402
from imgclf.components.training.hardware import precision_policy  # noqa: E402
from imgclf.components.training.network import build_model  # noqa: E402
from imgclf.components.training.stages import fit_stages, new_result  # noqa: E402
from imgclf.components.transform import features, preprocess  # noqa: E402

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMGCLF_SHARED", REPO.parent / "shared"))
CLOTHING = SHARED / "data" / "clothing-small"
MOBILENET_WEIGHTS = SHARED / "weights" / "mobilenet_2_5_224_tf_no_top.h5"
RESULTS = REPO / "bench"
IMAGE_SIZE = 224
BATCH_SIZE = 32
AUGMENTATIONS = "flip,rotation,zoom"
# Enough photos for steady throughput (Beam's start-up is a few seconds of each run) and a
# 10x memory comparison, small enough that this part of make bench takes minutes.
PREPROCESS_PHOTOS = 1500
MEMORY_PHOTOS = 150
# 12-megapixel photos, made here (about 0.25 s each); with 10 times as many rows, the
# large-photo benchmarks take about 21 minutes on 2 cores.
LARGE_PHOTOS = 200
BENCHMARKS = ("preprocess", "input", "training", "serving", "large-photos", "end-to-end")


@dataclass
class Figure:
    name: str
    unit: str
    values: list[float]

    def __post_init__(self):
        self.values = [float(value) for value in self.values]

    def summary(self) -> dict[str, float]:
        return {
            "min": min(self.values),
            "median": statistics.median(self.values),
            "max": max(self.values),
        }


@dataclass
class Comparison:
    """Ours against a baseline; ``ratio`` is ours / baseline of the medians, and the target
    says which way is better."""

    title: str
    ours: Figure
    baseline: Figure
    higher_is_better: bool
    target_ratio: float
    note: str = ""
    # Quality targets are margins, not ratios: ours minus the baseline must reach this.
    target_margin: float | None = None
    ratio: float = field(init=False)
    met: bool = field(init=False)

    @property
    def target(self) -> str:
        if self.target_margin is not None:
            return f"at least +{self.target_margin:g} points"
        bound = "at least" if self.higher_is_better else "within"
        return f"{bound} {self.target_ratio:g}x"

    @property
    def margin(self) -> float:
        return self.ours.summary()["median"] - self.baseline.summary()["median"]

    def __post_init__(self):
        self.ratio = float(self.ours.summary()["median"] / self.baseline.summary()["median"])
        if self.target_margin is not None:
            self.met = bool(self.margin >= self.target_margin)
        elif self.higher_is_better:
            self.met = bool(self.ratio >= self.target_ratio)
        else:
            self.met = bool(self.ratio <= self.target_ratio)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="fewer images and batches: a smoke run, not figures"
    )
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument(
        "--only",
        choices=BENCHMARKS,
        action="append",
        help="run only these benchmarks (repeatable); end-to-end includes quality",
    )
    parser.add_argument(
        "--seeds",
        default=str(TrainConfig.seed),
        help="comma-separated: one imgclf run and one run of the seeds' recipe per seed, for "
        "end-to-end and quality (default: the trainer's seed)",
    )
    args = parser.parse_args(argv)
    chosen = set(args.only or BENCHMARKS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    scale = 0.1 if args.quick else 1.0

    with tempfile.TemporaryDirectory(prefix="imgclf-bench-") as work:
        work = Path(work)
        photos, source = baselines.photo_tree(CLOTHING, work / "photos")
        log.info("Images: %s", source)
        full = ingest(IngestSettings(str(photos)), str(work / "manifest"))
        comparisons = []
        if chosen & {"preprocess", "input", "training", "serving"}:
            comparisons += preprocess_benchmarks(full, work, args.repeats, scale)
        if "input" in chosen:
            comparisons += training_input_benchmarks(photos, work, args.repeats, scale)
        if "training" in chosen:
            comparisons.append(training_speed_benchmark(work, args.repeats, scale))
        if "serving" in chosen:
            comparisons.append(serving_benchmark(work, args.repeats, scale))
        if "large-photos" in chosen:
            comparisons += large_photo_benchmarks(full, work, args.repeats, scale)
        if "end-to-end" in chosen:
            seeds = [int(seed) for seed in args.seeds.split(",")]
            comparisons += end_to_end_and_quality_benchmarks(photos, work, scale, seeds)
    results = {
        "machine": machine(),
        "images": source,
        "comparisons": [
            {
                **asdict(c),
                "target": c.target,
                "ours": {**asdict(c.ours), **c.ours.summary()},
                "baseline": {**asdict(c.baseline), **c.baseline.summary()},
            }
            for c in comparisons
        ],
    }
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results, comparisons)
    (output / "results.md").write_text(table)
    print(table)
    return 0


def preprocess_benchmarks(full, work: Path, repeats: int, scale: float) -> list[Comparison]:
    """TFT on Beam against a one-process decode-resize-write loop; then peak memory of the
    step at 1x and 10x the images."""
    images = max(50, int(min(len(full), PREPROCESS_PHOTOS) * scale))
    subset = _subset(full, images, work / "subset")
    ours, loop = [], []
    for repeat in range(repeats):
        out = work / f"preprocess-{repeat}"
        started = time.perf_counter()
        preprocess.preprocess(
            str(subset),
            str(out / "examples"),
            str(out / "transform"),
            PreprocessSettings(image_size=IMAGE_SIZE),
        )
        ours.append(images / (time.perf_counter() - started))
        started = time.perf_counter()
        baselines.decode_resize_write_loop(
            manifest.read(subset), out / "loop.tfrecord.gz", IMAGE_SIZE
        )
        loop.append(images / (time.perf_counter() - started))
    speed = Comparison(
        f"Preprocess {images} photos to {IMAGE_SIZE}px TFRecords",
        Figure("tensorflow-transform on Beam (DirectRunner)", "images/s", ours),
        Figure("single-process decode-resize-write loop", "images/s", loop),
        higher_is_better=True,
        target_ratio=1.0,
    )

    small = max(30, int(MEMORY_PHOTOS * scale))
    memory = {}
    for factor in (1, 10):
        folder = _subset(full, small * factor, work / f"memory-{factor}")
        memory[factor] = [
            _peak_memory_of_preprocess(folder, work / f"memory-{factor}-{r}") / 2**20
            for r in range(repeats)
        ]
    peak = Comparison(
        f"Preprocess peak memory, {small * 10} photos against {small}",
        Figure(f"{small * 10} images", "MiB", memory[10]),
        Figure(f"{small} images", "MiB", memory[1]),
        higher_is_better=False,
        target_ratio=1.2,
        note="peak resident memory of a process running the step (in-memory DirectRunner)",
    )
    return [speed, peak]


def training_input_benchmarks(
    photos: Path, work: Path, repeats: int, scale: float
) -> list[Comparison]:
    """Images/s reaching the model, augmented and batched: our TFRecords through tf.data and
    the model's augmentation layers, against the seeds' ImageDataGenerator on the JPEGs; and
    the same without augmentation, which on a GPU node runs on the GPU instead."""
    batches = max(5, int(60 * scale))
    out = work / "preprocess-0"
    transform = tft.TFTransformOutput(str(out / "transform"))
    config = TrainConfig(
        weights="none",
        image_size=IMAGE_SIZE,
        batch_size=BATCH_SIZE,
        augmentations=AUGMENTATIONS,
    )
    layers = augmentation.augmentation_layers(AUGMENTATIONS, seed=0)

    @tf.function
    def augment(images):
        images = tf.cast(images, tf.float32)  # as the model's input does
        for layer in layers:
            images = layer(images, training=True)
        return images

    epoch = make_dataset(str(out / "examples"), "train", transform, config, training=True)
    for _ in epoch:  # the first pass reads the files and fills the in-memory cache
        pass
    dataset = epoch.repeat()
    ours = [
        _images_per_second(((augment(x), y) for x, y in dataset), batches) for _ in range(repeats)
    ]
    plain = [_images_per_second(dataset, batches) for _ in range(repeats)]
    generator = baselines.seed_image_generator(photos / "train", IMAGE_SIZE, BATCH_SIZE)
    seeds = [_images_per_second(generator, batches) for _ in range(repeats)]
    generator = baselines.seed_image_generator(photos / "train", IMAGE_SIZE, BATCH_SIZE, {})
    seeds_plain = [_images_per_second(generator, batches) for _ in range(repeats)]
    title = f"{batches} batches of {BATCH_SIZE} at {IMAGE_SIZE}px"
    seeds_name = "ImageDataGenerator.flow_from_directory on the JPEGs"
    warm_up = (
        "both after a warm-up batch; ours reads the split cached in memory after its first "
        "pass, as training does when it fits"
    )
    return [
        Comparison(
            f"Training input{kind}: {title}",
            Figure(ours_name, "images/s", ours_figures),
            Figure(seeds_name, "images/s", seeds_figures),
            higher_is_better=True,
            target_ratio=10.0,
            note=note,
        )
        for kind, ours_name, ours_figures, seeds_figures, note in (
            (
                f", augmented ({AUGMENTATIONS})",
                "TFRecords -> tf.data -> Keras augmentation layers",
                ours,
                seeds,
                warm_up,
            ),
            (" without augmentation", "TFRecords -> tf.data", plain, seeds_plain, ""),
        )
    ]


def training_speed_benchmark(work: Path, repeats: int, scale: float) -> Comparison:
    """Fine-tuning images/s of the train step in the precision ``mixed_precision=auto``
    picks, against the other: float32 on a GPU, where auto computes in mixed_float16;
    mixed_float16 on a CPU, where auto keeps float32."""
    out = work / "preprocess-0"
    train_images = features.read_counts(str(out / "examples"))["train"]
    gpu = bool(tf.config.list_logical_devices("GPU"))
    # Epochs of a few seconds on either device: float16 trains about 60 images/s on 2 CPU cores.
    batches = max(1, min(int((100 if gpu else 10) * scale), train_images // BATCH_SIZE))
    other = "off" if gpu else "on"
    speeds = {
        setting: _fine_tuning_images_per_second(out, setting, batches, repeats)
        for setting in ("auto", other)
    }
    return Comparison(
        f"Training speed: fine-tuning, {batches} batches of {BATCH_SIZE} at {IMAGE_SIZE}px "
        "per epoch",
        Figure(f"mixed_precision=auto ({precision_policy('auto')})", "images/s", speeds["auto"]),
        Figure(f"mixed_precision={other} ({precision_policy(other)})", "images/s", speeds[other]),
        higher_is_better=True,
        target_ratio=1.0,
        note="MobileNet v1 0.25, the whole backbone trainable, augmentation (flip, rotation, "
        "zoom) in the model, one device; each repeat is an epoch after a warm-up one",
    )


def _fine_tuning_images_per_second(
    out: Path, mixed_precision: str, batches: int, repeats: int
) -> list[float]:
    """Images/s of each epoch after the first (which traces the train step), through the
    train step's own stages with the head stage skipped."""
    config = TrainConfig(
        weights=_shared_weights(),
        alpha=0.25,
        image_size=IMAGE_SIZE,
        batch_size=BATCH_SIZE,
        augmentations=AUGMENTATIONS,
        epochs=0,
        fine_tune_epochs=1 + repeats,
        mixed_precision=mixed_precision,
    )
    examples = str(out / "examples")
    transform = tft.TFTransformOutput(str(out / "transform"))
    class_names = features.class_names(transform)
    result = new_result(examples, class_names, False, config)
    train_data = make_dataset(examples, "train", transform, config, training=True)
    for _ in train_data:  # fills the in-memory cache, which training reads after its first epoch
        pass
    model, backbone = build_model(config, len(class_names))
    epochs = EpochSeconds()
    fit_stages(model, backbone, train_data.take(batches), None, config, result, [epochs])
    return [batches * BATCH_SIZE / seconds for seconds in epochs.seconds[1:]]


def serving_benchmark(work: Path, repeats: int, scale: float) -> Comparison:
    """p50 latency at batch 1 of the serving signature on raw JPEG bytes, against the bare
    Keras model on an already-decoded, resized tensor."""
    calls = max(20, int(200 * scale))
    test = manifest.split_rows(manifest.read(work / "subset"), "test")
    raw = [Path(uri).read_bytes() for uri in test["uri"][:8]]
    ours, keras_model = _serving_latencies(
        work / "preprocess-0" / "transform", raw, work / "served", repeats, calls
    )
    return Comparison(
        f"Serving latency, batch 1, p50 over {calls} calls",
        Figure("serving signature on JPEG bytes (decode + resize inside)", "ms", ours),
        Figure("bare Keras model on a decoded, resized tensor", "ms", keras_model),
        higher_is_better=False,
        target_ratio=1.3,
        note="MobileNet v1 alpha 0.25 at 224 px",
    )


def _serving_latencies(
    transform_dir: Path,
    raw: list[bytes],
    export_dir: Path,
    repeats: int,
    calls: int,
    alpha: float = 0.25,
) -> tuple[list[float], list[float]]:
    """Milliseconds, p50 of each repeat: the serving signature of a MobileNet v1 of width
    ``alpha``, exported with ``transform_dir``, on the encoded ``raw`` images, and the bare
    model on them decoded and resized as that transform does."""
    class_names = features.class_names(tft.TFTransformOutput(str(transform_dir)))
    preprocessing = features.Preprocessing.read(str(transform_dir))
    config = TrainConfig(weights="none", alpha=alpha, image_size=IMAGE_SIZE, augmentations="none")
    model, _ = build_model(config, len(class_names))
    signature.export(model, str(transform_dir), class_names, IMAGE_SIZE, str(export_dir))
    served = signature.ServedModel(str(export_dir))
    tensors = [
        tf.cast(
            features.decode_and_resize(
                data, IMAGE_SIZE, preprocessing.resize_policy, preprocessing.jpeg_decoding
            ),
            tf.float32,
        )[tf.newaxis]
        for data in raw
    ]
    bare = tf.function(lambda images: model(images, training=False))

    def latencies(call, inputs) -> list[float]:
        call(inputs[0])
        times = []
        for i in range(calls):
            started = time.perf_counter()
            call(inputs[i % len(inputs)])
            times.append((time.perf_counter() - started) * 1000)
        return times

    ours, keras_model = [], []
    for _ in range(repeats):
        ours.append(np.percentile(latencies(lambda b: served.predict([b]), raw), 50))
        keras_model.append(np.percentile(latencies(lambda t: bare(t).numpy(), tensors), 50))
    return ours, keras_model


def large_photo_benchmarks(full, work: Path, repeats: int, scale: float) -> list[Comparison]:
    """On 12-megapixel JPEGs (the photos scaled up to 4032x3024 and re-encoded): preprocess
    with scaled JPEG decoding against the full decode and against the one-process loop given
    the same scaled decoding; its peak memory at 10x the photos; serving latency against the
    bare model and against the full decode.

    The 10x runs list every photo ten times: a few hundred photos can be made in minutes, and
    Beam's start-up (about 10 s here) would be most of a run on them. Preprocess speeds are
    steady-state, the extra images of the 10x run over its extra seconds, as at a million
    photos; peak memory settles after the first few hundred photos (Beam's and TFXIO's
    buffers filling up), so the 10x run measures it where it has settled.
    """
    photos = max(20, int(LARGE_PHOTOS * scale))
    log.info("Making %d 12-megapixel photos", photos)
    folder = baselines.camera_photos(full.sort_values("sha256").head(photos), work / "large")
    large = ingest(IngestSettings(str(folder)), str(work / "large-manifest"))
    subsets = {1: work / "large-manifest", 10: work / "large-listed-10-times"}
    manifest.write(pd.concat([large] * 10), subsets[10])
    extra_images = len(large) * 9

    def preprocess_seconds(factor: int, decoding: str, repeat: int) -> float:
        out = work / f"large-{decoding}-{factor}x-{repeat}"
        started = time.perf_counter()
        preprocess.preprocess(
            str(subsets[factor]),
            str(out / "examples"),
            str(out / "transform"),
            PreprocessSettings(image_size=IMAGE_SIZE, jpeg_decoding=decoding),
        )
        return time.perf_counter() - started

    def loop_seconds(factor: int, repeat: int) -> float:
        started = time.perf_counter()
        baselines.decode_resize_write_loop(
            manifest.read(subsets[factor]), work / f"large-loop-{factor}x-{repeat}.gz", IMAGE_SIZE
        )
        return time.perf_counter() - started

    speeds = {"scaled": [], "full": [], "loop": []}
    for repeat in range(repeats):
        for decoding in ("scaled", "full"):
            extra = preprocess_seconds(10, decoding, repeat) - preprocess_seconds(
                1, decoding, repeat
            )
            speeds[decoding].append(extra_images / extra)
        speeds["loop"].append(extra_images / (loop_seconds(10, repeat) - loop_seconds(1, repeat)))
    rows = f"{len(large)} 12-megapixel photos (and 10 times as many rows)"
    steady = "steady-state: extra images over extra seconds between the two runs"
    ours = Figure(
        "tensorflow-transform on Beam, scaled JPEG decoding", "images/s", speeds["scaled"]
    )
    comparisons = [
        Comparison(
            f"Preprocess {rows} to {IMAGE_SIZE}px: scaled against full decoding",
            ours,
            Figure("the same, jpeg_decoding=full", "images/s", speeds["full"]),
            higher_is_better=True,
            target_ratio=3.0,
            note=steady,
        ),
        Comparison(
            f"Preprocess {rows} to {IMAGE_SIZE}px: Beam against a loop",
            ours,
            Figure("single-process loop, the same scaled decoding", "images/s", speeds["loop"]),
            higher_is_better=True,
            target_ratio=1.0,
            note=steady,
        ),
    ]

    memory = {
        factor: [
            _peak_memory_of_preprocess(folder, work / f"large-memory-{factor}-{r}") / 2**20
            for r in range(repeats)
        ]
        for factor, folder in subsets.items()
    }
    comparisons.append(
        Comparison(
            f"Preprocess peak memory, {len(large) * 10} rows of 12-megapixel photos against "
            f"{len(large)}",
            Figure(f"the {len(large)} photos listed 10 times", "MiB", memory[10]),
            Figure(f"{len(large)} photos", "MiB", memory[1]),
            higher_is_better=False,
            target_ratio=1.2,
            note="peak resident memory of a process running the step (in-memory DirectRunner)",
        )
    )

    calls = max(20, int(100 * scale))
    test = manifest.split_rows(large, "test")
    raw = [Path(uri).read_bytes() for uri in test["uri"][:8]]
    latency = {
        decoding: _serving_latencies(
            work / f"large-{decoding}-10x-0" / "transform",
            raw,
            work / f"large-served-{decoding}",
            repeats,
            calls,
        )
        for decoding in ("scaled", "full")
    }
    served = Figure(
        "serving signature on 12-megapixel JPEG bytes, scaled", "ms", latency["scaled"][0]
    )
    default_width = _serving_latencies(
        work / "large-scaled-10x-0" / "transform",
        raw,
        work / "large-served-alpha-1",
        repeats,
        calls,
        alpha=TrainConfig.alpha,
    )
    return [
        *comparisons,
        Comparison(
            f"Serving latency on 12-megapixel photos, batch 1, p50 over {calls} calls",
            served,
            Figure("bare Keras model on a decoded, resized tensor", "ms", latency["scaled"][1]),
            higher_is_better=False,
            target_ratio=1.5,
            note="MobileNet v1 alpha 0.25 at 224 px",
        ),
        Comparison(
            f"Serving latency on 12-megapixel photos, the default MobileNet (alpha "
            f"{TrainConfig.alpha:g}), batch 1, p50 over {calls} calls",
            Figure("serving signature on 12-megapixel JPEG bytes, scaled", "ms", default_width[0]),
            Figure("bare Keras model on a decoded, resized tensor", "ms", default_width[1]),
            higher_is_better=False,
            target_ratio=1.5,
            note=f"MobileNet v1 alpha {TrainConfig.alpha:g} at 224 px",
        ),
        Comparison(
            "Serving latency on 12-megapixel photos: scaled against full decoding",
            served,
            Figure("the same signature, jpeg_decoding=full", "ms", latency["full"][0]),
            higher_is_better=False,
            target_ratio=1.0,
        ),
    ]


def end_to_end_and_quality_benchmarks(
    photos: Path, work: Path, scale: float, seeds: list[int]
) -> list[Comparison]:
    """Wall time of a whole local ``imgclf run`` with default settings against its train
    step's, as kfp.local timed it in the same run; then the run's test accuracy and macro F1
    against the seeds' recipe trained for as many epochs on the same photos. Each seed is one
    run of each side, seeded alike."""
    image_size = IMAGE_SIZE if scale == 1.0 else 96
    config = TrainConfig(
        weights=_shared_weights(),
        alpha=0.25,
        image_size=image_size,
        **({} if scale == 1.0 else {"epochs": 1, "fine_tune_epochs": 0}),
    )
    epochs = config.epochs + config.fine_tune_epochs
    run_seconds, train_seconds, other_steps, ours, recipe = [], [], {}, [], []
    for seed in seeds:
        log.info("Seed %d: imgclf run, then the seeds' recipe", seed)
        started = time.perf_counter()
        run = _imgclf_run(photos, work / f"seed-{seed}", config, seed)
        run_seconds.append(time.perf_counter() - started)
        steps = step_seconds(run)
        log.info("Steps of the run: %s", ", ".join(f"{k} {v:.1f} s" for k, v in steps.items()))
        train_seconds.append(steps.pop("train"))
        for step, seconds in steps.items():
            other_steps.setdefault(step, []).append(seconds)
        ours.append(json.loads((work / f"seed-{seed}" / "summary.json").read_text())["candidate"])
        log.info("Seed %d, imgclf run: %s", seed, _quality(ours[-1]))
        recipe.append(
            baselines.seed_recipe(
                photos,
                config.weights if config.weights != "none" else None,
                image_size,
                epochs=epochs,
                seed=seed,
            )
        )
        log.info("Seed %d, the seeds' recipe: %s", seed, _quality(recipe[-1]))

    runs = f"{len(seeds)} run{'s' if len(seeds) > 1 else ''}"
    end_to_end = Comparison(
        f"End to end: imgclf run against its train step ({config.epochs}+"
        f"{config.fine_tune_epochs} epochs at {image_size}px)",
        Figure("imgclf run, all steps through kfp.local", "s", run_seconds),
        Figure("its train step, as kfp.local timed it", "s", train_seconds),
        higher_is_better=False,
        target_ratio=1.5,
        note=f"{runs}; the other steps' medians: "
        + ", ".join(f"{k} {statistics.median(v):.0f} s" for k, v in other_steps.items()),
    )
    setting = (
        f"MobileNet v1 0.25 ({'shared ImageNet weights' if config.weights != 'none' else 'random'}"
        f"), {image_size}px, {epochs} epochs each; {runs} of each, seed "
        + ", ".join(map(str, seeds))
    )
    quality = [
        Comparison(
            f"Quality: test {name}",
            Figure("imgclf run, default settings", "%", [100 * run[key] for run in ours]),
            Figure(
                "seeds' recipe: frozen, Flatten, Dense 512, SGD 0.001, ImageDataGenerator",
                "%",
                [100 * run[key] for run in recipe],
            ),
            higher_is_better=True,
            target_ratio=1.0,
            target_margin=margin,
            note=setting,
        )
        for name, key, margin in (("accuracy", "accuracy", 8.0), ("macro F1", "macro_f1", 0.0))
    ]
    return [end_to_end, *quality]


def _quality(scores: dict) -> str:
    return f"test accuracy {100 * scores['accuracy']:.1f}%, macro F1 {100 * scores['macro_f1']:.1f}"


def _imgclf_run(
    photos: Path, out: Path, config: TrainConfig, seed: int, extra: tuple[str, ...] = ()
) -> str:
    """``imgclf run`` on the photos with ``config``'s backbone, weights, size and epochs and
    the ``extra`` arguments, the rest at its defaults; the run's log. The summary lands in
    ``out/summary.json``."""
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "imgclf.pipelines.cli",
            "run",
            *("--data", str(photos), "--pipeline-root", str(out / "runs")),
            *("--serving-dir", str(out / "serving"), "--min-accuracy", "0"),
            *("--backbone", config.backbone, "--alpha", str(config.alpha)),
            *("--weights", config.weights, "--image-size", str(config.image_size)),
            *("--epochs", str(config.epochs), "--fine-tune-epochs", str(config.fine_tune_epochs)),
            *("--seed", str(seed), "--summary-json", str(out / "summary.json")),
            *extra,
        ],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    )
    return run.stdout + run.stderr


_TASK_LINE = re.compile(
    r"^(\d\d):(\d\d):(\d\d\.\d+) - INFO - (?:Executing task '([\w-]+)'|"
    r"Task '([\w-]+)' finished with status)"
)


def step_seconds(run_log: str) -> dict[str, float]:
    """Each step's wall time, from kfp.local's "Executing task" and "finished" lines."""
    started, seconds = {}, {}
    for line in re.sub(r"\x1b\[[0-9;]*m", "", run_log).splitlines():
        match = _TASK_LINE.match(line)
        if not match:
            continue
        hours, minutes, secs, starting, finished = match.groups()
        clock = int(hours) * 3600 + int(minutes) * 60 + float(secs)
        if starting:
            started[starting] = clock
        else:
            seconds[finished] = (clock - started[finished]) % 86400  # past midnight
    return seconds


def _shared_weights() -> str:
    """The shared MobileNet v1 0.25 ImageNet weights as TrainConfig takes them, or "none"
    (random initialisation) without ``../shared``."""
    return str(MOBILENET_WEIGHTS) if MOBILENET_WEIGHTS.is_file() else "none"


def _subset(full, images: int, folder: Path) -> Path:
    """The first ``images`` rows in a fixed order, every split kept, as a manifest folder."""
    rows = full.sort_values("sha256").head(images)
    if not (rows["split"] == "train").any():
        raise ValueError(f"A subset of {images} images has no train image.")
    manifest.write(rows, folder)
    return folder


def _peak_memory_of_preprocess(manifest_dir: Path, out: Path) -> int:
    """Bytes: the peak resident memory of a fresh process that runs preprocess.

    Read from the process's own VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss
    over exec from the forked parent, so a child of this (large) process would report the
    parent's peak whatever preprocess used.
    """
    code = (
        "import re\n"
        "from imgclf.components.parameters import PreprocessSettings\n"
        "from imgclf.components.transform.preprocess import preprocess\n"
        f"preprocess({str(manifest_dir)!r}, {str(out / 'examples')!r}, "
        f"{str(out / 'transform')!r}, PreprocessSettings(image_size={IMAGE_SIZE}))\n"
        "status = open('/proc/self/status').read()\n"
        "print(re.search(r'VmHWM:\\s+(\\d+) kB', status).group(1))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[-1]) * 1024


def _images_per_second(batches, count: int) -> float:
    """Over ``count`` ``(images, labels)`` batches after a warm-up one (tracing, opening
    files)."""
    iterator = iter(batches)
    next(iterator)
    images = 0
    started = time.perf_counter()
    for _ in range(count):
        images += int(next(iterator)[0].shape[0])
    return images / (time.perf_counter() - started)


def machine() -> dict:
    packages = ("tensorflow", "tensorflow-transform", "apache-beam", "keras", "kfp")
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "packages": {name: metadata.version(name) for name in packages},
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }


def markdown(results: dict, comparisons: list[Comparison]) -> str:
    m = results["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    lines = [
        "# imgclf benchmarks",
        "",
        f"{m['platform']}, Python {m['python']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, "
        f"{m['gpus']} GPUs; {versions}.",
        f"Images: {results['images']}.",
        "",
        "| benchmark | ours (min / median / max) | baseline (min / median / max) | ratio | "
        "target | met |",
        "|---|---|---|---|---|---|",
    ]
    for c in comparisons:
        ratio = f"{c.margin:+.1f} points" if c.target_margin is not None else f"{c.ratio:.2f}x"
        lines.append(
            f"| {c.title} | {_cell(c.ours)} | {_cell(c.baseline)} | {ratio} | "
            f"{c.target} | {'yes' if c.met else '**no**'} |"
        )
    lines.append("")
    for c in comparisons:
        if c.note:
            lines.append(f"- {c.title}: {c.note}.")
    return "\n".join(lines) + "\n"


def _cell(figure: Figure) -> str:
    s = figure.summary()
    return f"{figure.name}: {s['min']:.1f} / {s['median']:.1f} / {s['max']:.1f} {figure.unit}"


if __name__ == "__main__":
    sys.exit(main())
