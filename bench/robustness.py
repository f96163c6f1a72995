"""Clean and robust accuracy with and without adversarial training, and what each costs.

    python -m bench.robustness [--seed 42] [--epochs 2] [--fine-tune-epochs 6]
        [--attack fgsm] [--epsilon 2]

A whole ``imgclf run`` on the shared clothing photos (MobileNet v1 0.25 from the shared
ImageNet weights), twice with the same seed: ``adversarial_training=none`` and the chosen
attack at ``--epsilon`` grey levels. Each run's evaluation measures FGSM and PGD robust
accuracy at its default sizes, on every test image (about 20 minutes on 2 cores). Writes
``bench/robustness.json`` and prints one table.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from bench.run import CLOTHING, MOBILENET_WEIGHTS, RESULTS, _imgclf_run, machine, step_seconds
from imgclf.components.training.config import TrainConfig

log = logging.getLogger("bench.robustness")


def measure(work: Path, config: TrainConfig, seed: int, attack: str, epsilon: float) -> list[dict]:
    runs = []
    for training in ("none", attack):
        out = work / training
        extra = (
            *("--adversarial-training", training, "--adversarial-epsilon", str(epsilon)),
            *("--robustness-images", "0"),  # every test image
        )
        seconds = step_seconds(_imgclf_run(CLOTHING, out, config, seed, extra))
        summary = json.loads((out / "summary.json").read_text())
        runs.append(
            {
                "adversarial_training": training,
                "adversarial_epsilon": epsilon if training != "none" else None,
                "accuracy": summary["candidate"]["accuracy"],
                "macro_f1": summary["candidate"]["macro_f1"],
                "robustness": summary["robustness"],
                "train_seconds": seconds["train"],
                "evaluate_seconds": seconds["evaluate"],
            }
        )
        log.info("%s", runs[-1])
    return runs


def markdown(runs: list[dict]) -> str:
    epsilons = runs[0]["robustness"]["epsilons"][1:]
    header = "| adversarial training | clean accuracy | " + " | ".join(
        f"FGSM / PGD at {epsilon:g}" for epsilon in epsilons
    )
    lines = [
        header + " | train time | robustness time |",
        "|---" * (len(epsilons) + 4) + "|",
    ]
    for run in runs:
        accuracy = run["robustness"]["accuracy"]
        cells = " | ".join(
            f"{100 * fgsm:.1f} / {100 * pgd:.1f}"
            for fgsm, pgd in zip(accuracy["fgsm"][1:], accuracy["pgd"][1:], strict=True)
        )
        training = run["adversarial_training"]
        if run["adversarial_epsilon"] is not None:
            training += f" at {run['adversarial_epsilon']:g}"
        lines.append(
            f"| {training} | {100 * run['accuracy']:.1f}% | {cells} | "
            f"{run['train_seconds']:.0f} s | {run['robustness']['seconds']:.0f} s |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.robustness", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--fine-tune-epochs", type=int, default=6)
    parser.add_argument("--attack", default="fgsm", choices=("fgsm", "pgd"))
    parser.add_argument("--epsilon", type=float, default=2.0)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    config = TrainConfig(
        weights=str(MOBILENET_WEIGHTS),
        alpha=0.25,
        epochs=args.epochs,
        fine_tune_epochs=args.fine_tune_epochs,
    )
    with tempfile.TemporaryDirectory(prefix="imgclf-robustness-") as work:
        runs = measure(Path(work), config, args.seed, args.attack, args.epsilon)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    results = {"machine": machine(), "seed": args.seed, "config": vars(args), "runs": runs}
    (output / "robustness.json").write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
