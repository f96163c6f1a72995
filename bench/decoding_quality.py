"""Test accuracy with scaled JPEG decoding against full decoding, on camera-sized photos.

    python -m bench.decoding_quality [--dataset two-class] [--seeds 42]

One of bench.quality's data sets, every photo scaled up to 12 megapixels and re-encoded
(``baselines.camera_photos``), goes through a whole ``imgclf run`` at the defaults twice per
seed, seeded alike: ``jpeg_decoding=scaled`` and ``jpeg_decoding=full``. Writes
``bench/decoding_quality.json`` and prints each run's test accuracy, macro F1 and preprocess
time.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from bench import baselines, quality
from bench.run import MOBILENET_WEIGHTS, RESULTS, _imgclf_run, machine, step_seconds
from imgclf.components.data.ingest import ingest
from imgclf.components.parameters import IngestSettings
from imgclf.components.training.config import TrainConfig

log = logging.getLogger("bench.decoding_quality")
DECODINGS = ("scaled", "full")


def measure(dataset: quality.DataSet, work: Path, seeds: list[int]) -> list[dict]:
    tree = quality.build(dataset, work / "tree")
    rows = ingest(IngestSettings(str(tree), validation_fraction=0.0), str(work / "manifest"))
    photos = baselines.camera_photos(rows, work / "camera")
    config = TrainConfig(weights=str(MOBILENET_WEIGHTS), alpha=0.25, image_size=dataset.image_size)
    runs = []
    for seed in seeds:
        for decoding in DECODINGS:
            out = work / f"{decoding}-{seed}"
            run_log = _imgclf_run(photos, out, config, seed, ("--jpeg-decoding", decoding))
            scores = json.loads((out / "summary.json").read_text())["candidate"]
            runs.append(
                {
                    "seed": seed,
                    "jpeg_decoding": decoding,
                    "accuracy": scores["accuracy"],
                    "macro_f1": scores["macro_f1"],
                    "preprocess_seconds": step_seconds(run_log)["preprocess"],
                }
            )
            log.info("%s", runs[-1])
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.decoding_quality", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--dataset", default="two-class", choices=quality.DATASETS)
    parser.add_argument("--seeds", default="42")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="imgclf-decoding-") as work:
        runs = measure(quality.DATASETS[args.dataset], Path(work), seeds)
    results = {"machine": machine(), "dataset": args.dataset, "runs": runs}
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "decoding_quality.json").write_text(json.dumps(results, indent=2) + "\n")
    for run in runs:
        print(
            f"seed {run['seed']}, {run['jpeg_decoding']}: "
            f"test accuracy {100 * run['accuracy']:.1f}%, macro F1 {100 * run['macro_f1']:.1f}, "
            f"preprocess {run['preprocess_seconds']:.0f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
