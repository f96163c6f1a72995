"""`make bench-quality`: test accuracy and macro F1 of our defaults against the seeds' recipe and
a linear probe, on data sets of different shape built here, medians over seeds, in one table.

    python -m bench.quality [--datasets two-class,few-per-class,digits,clothing] [--seeds 42,7,1]

Every side trains MobileNet v1 0.25 from the shared ImageNet weights on the same photos and is
scored on the same test photos. Ours is a whole ``imgclf run`` at its defaults but for the
backbone, weights and image size; the seeds' recipe (frozen, Flatten, Dense 512, SGD 0.001)
trains as many epochs as our two stages together; the linear probe is a logistic regression on
the frozen backbone's pooled features. Writes ``bench/quality.json`` and ``bench/quality.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import baselines  # noqa: E402
from bench.run import CLOTHING, MOBILENET_WEIGHTS, RESULTS, _imgclf_run, machine  # noqa: E402
from imgclf.components.data.sample import render_sample_digits  # noqa: E402
from imgclf.components.data.splits import hash_split  # noqa: E402
from imgclf.components.training.config import TrainConfig  # noqa: E402

log = logging.getLogger("bench.quality")


@dataclass(frozen=True)
class DataSet:
    name: str
    shape: str
    image_size: int


DATASETS = {
    d.name: d
    for d in (
        DataSet(
            "two-class",
            "longsleeve against t-shirt, 125 train photos each, train/ and test/ folders only",
            224,
        ),
        DataSet("few-per-class", "dress, shirt, shorts: 20 train photos each, no validation", 224),
        DataSet("digits", "the bundled 32x32 digits: 1,797 in 10 classes, hash splits", 32),
        DataSet("clothing", "the shared clothing photos: 10 classes, 3,068 train", 224),
    )
}
METHODS = ("ours", "seeds' recipe", "linear probe")


def build(dataset: DataSet, folder: Path) -> Path:
    """The data set as ``split/class/image`` folders (links to the shared photos)."""
    if dataset.name == "clothing":
        return CLOTHING
    if dataset.name == "digits":
        rendered = folder / "rendered"
        render_sample_digits(rendered)
        for image in sorted(rendered.glob("*/*.png")):
            split = hash_split(_sha256(image), 0.8, 0.1)
            _link(image, folder / "tree" / split / image.parent.name / image.name)
        return folder / "tree"
    classes, per_class = (
        (("longsleeve", "t-shirt"), 125)
        if dataset.name == "two-class"
        else (("dress", "shirt", "shorts"), 20)
    )
    for label in classes:
        for photo in sorted((CLOTHING / "train" / label).iterdir())[:per_class]:
            _link(photo, folder / "tree" / "train" / label / photo.name)
        for photo in sorted((CLOTHING / "test" / label).iterdir()):
            _link(photo, folder / "tree" / "test" / label / photo.name)
    return folder / "tree"


def linear_probe(photos: Path, weights: str, image_size: int) -> dict[str, float]:
    """Logistic regression on the frozen backbone's global-average-pooled features of the
    train (and validation) photos, scored on the test photos."""
    import keras
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    backbone = keras.applications.MobileNet(
        input_shape=(image_size, image_size, 3),
        alpha=0.25,
        include_top=False,
        weights=weights,
        pooling="avg",
    )

    def features(splits: tuple[str, ...]):
        rows, labels = [], []
        for split in splits:
            if not (photos / split).is_dir():
                continue
            batches = baselines.seed_image_generator(
                photos / split, image_size, 64, {}, shuffle=False
            )
            names = {index: name for name, index in batches.class_indices.items()}
            for _ in range(len(batches)):
                images, onehot = next(batches)
                # The generator rescales to [0, 1]; MobileNet was trained on [-1, 1].
                rows.append(backbone.predict(images * 2 - 1, verbose=0))
                labels += [names[i] for i in onehot.argmax(axis=1)]
        return np.concatenate(rows), np.array(labels)

    train_x, train_y = features(("train", "validation"))
    test_x, test_y = features(("test",))
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    predicted = probe.fit(train_x, train_y).predict(test_x)
    return {
        "accuracy": float(accuracy_score(test_y, predicted)),
        "macro_f1": float(f1_score(test_y, predicted, average="macro")),
    }


def measure(dataset: DataSet, work: Path, seeds: list[int]) -> dict[str, list[dict]]:
    photos = build(dataset, work / dataset.name)
    config = TrainConfig(weights=str(MOBILENET_WEIGHTS), alpha=0.25, image_size=dataset.image_size)
    epochs = config.epochs + config.fine_tune_epochs
    scores = {method: [] for method in METHODS}
    probe = linear_probe(photos, config.weights, dataset.image_size)
    for seed in seeds:
        out = work / dataset.name / f"seed-{seed}"
        _imgclf_run(photos, out, config, seed)
        scores["ours"].append(json.loads((out / "summary.json").read_text())["candidate"])
        scores["seeds' recipe"].append(
            baselines.seed_recipe(photos, config.weights, dataset.image_size, epochs, seed)
        )
        # The probe's fit is deterministic: one per data set.
        scores["linear probe"].append(probe)
        log.info("%s, seed %d: %s", dataset.name, seed, {m: s[-1] for m, s in scores.items()})
        shutil.rmtree(out / "runs", ignore_errors=True)
    return scores


def markdown(results: dict) -> str:
    described = ", ".join(f"{key} {value}" for key, value in results["machine"].items())
    lines = [
        "# Quality on several data sets",
        "",
        f"Machine: {described}. Seeds: {', '.join(map(str, results['seeds']))}; each cell is "
        "the median test accuracy (macro F1) in %.",
        "",
        "| data set | shape | " + " | ".join(METHODS) + " | ours - best other (accuracy) |",
        "|---|---|" + "---|" * (len(METHODS) + 1),
    ]
    for name, entry in results["datasets"].items():
        medians = entry["medians"]
        others = max(medians[m]["accuracy"] for m in METHODS if m != "ours")
        cells = " | ".join(
            f"{100 * medians[m]['accuracy']:.1f} ({100 * medians[m]['macro_f1']:.1f})"
            for m in METHODS
        )
        margin = 100 * (medians["ours"]["accuracy"] - others)
        lines.append(f"| {name} | {entry['shape']} | {cells} | {margin:+.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="42,7,1")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if not (CLOTHING.is_dir() and MOBILENET_WEIGHTS.is_file()):
        raise SystemExit(f"bench.quality needs {CLOTHING} and {MOBILENET_WEIGHTS} (../shared).")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    results = {"machine": machine(), "seeds": seeds, "datasets": {}}
    with tempfile.TemporaryDirectory(prefix="imgclf-quality-") as work:
        for name in args.datasets.split(","):
            scores = measure(DATASETS[name], Path(work), seeds)
            results["datasets"][name] = {
                "shape": DATASETS[name].shape,
                "scores": scores,
                "medians": {
                    method: {
                        key: statistics.median(run[key] for run in runs)
                        for key in ("accuracy", "macro_f1")
                    }
                    for method, runs in scores.items()
                },
            }
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (output / "quality.md").write_text(table)
    print(table)
    return 0


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _link(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source.resolve())


if __name__ == "__main__":
    raise SystemExit(main())
