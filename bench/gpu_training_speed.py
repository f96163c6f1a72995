"""Fine-tuning images/s of the train step's model in float32 against mixed_float16, under any
Keras backend.

``make bench`` measures this through the real train step, which needs TensorFlow. This script
is for machines that have a GPU but no TensorFlow (a JAX or PyTorch image): it builds the
train step's classifier (``imgclf.components.model.classifier``) and fine-tunes it as stage 2
does (the whole backbone trainable, BatchNormalization frozen) on random uint8 images held in
memory, so it measures the model's step alone, not the input pipeline.

    KERAS_BACKEND=jax python -m bench.gpu_training_speed --weights PATH [--batch-sizes 32,256]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np

from imgclf.components.model.augmentation import augmentation_layers
from imgclf.components.model.backbones import get_backbone
from imgclf.components.model.classifier import classifier, unfreeze_top
from imgclf.components.parameters import TrainSettings

CLASSES = 10
IMAGE_SIZE = 224
DROPOUT = 0.2
POLICIES = ("float32", "mixed_float16")


class EpochSeconds(keras.callbacks.Callback):
    """Seconds of each epoch, in order."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._started)


def fine_tuning_model(backbone_name: str, weights: str | None, alpha: float, policy: str):
    """The train step's classifier in the dtype ``policy``, compiled for stage 2 with the
    whole backbone unfrozen (BatchNormalization excepted)."""
    spec = get_backbone(backbone_name)
    previous_policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        backbone = spec.build((IMAGE_SIZE, IMAGE_SIZE, 3), weights, alpha)
        unfreeze_top(backbone, 1.0)
        layers = augmentation_layers(TrainSettings().augmentations)
        model = classifier(spec, backbone, layers, DROPOUT, CLASSES)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    # Keras wraps the optimizer in a LossScaleOptimizer under mixed_float16, as in training.
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    return model


def images_per_second(
    policy: str, batch_size: int, images: int, epochs: int, args: argparse.Namespace
) -> list[float]:
    """Images/s of each epoch after the first, which compiles the train step."""
    generator = np.random.default_rng(0)
    x = generator.integers(0, 256, (images, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    y = keras.utils.to_categorical(generator.integers(0, CLASSES, images), CLASSES)
    model = fine_tuning_model(args.backbone, args.weights, args.alpha, policy)
    timer = EpochSeconds()
    model.fit(x, y, batch_size=batch_size, epochs=1 + epochs, callbacks=[timer], verbose=0)
    return [images / seconds for seconds in timer.seconds[1:]]


def _device() -> str:
    backend = keras.config.backend()
    if backend == "jax":
        import jax

        return str(jax.devices()[0].device_kind)
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0])["device_name"] if gpus else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="mobilenet")
    parser.add_argument(
        "--weights", default=None, help="the backbone's weights file (none: random)"
    )
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--batch-sizes", default="32,256")
    parser.add_argument("--images", type=int, default=2048, help="images per epoch")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after a warm-up")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args()
    rows = []
    width = f" alpha {args.alpha:g}" if get_backbone(args.backbone).width_multiplier else ""
    header = (
        f"{args.backbone}{width} at {IMAGE_SIZE}px, keras {keras.__version__}, "
        f"backend {keras.config.backend()} on {_device()}"
    )
    print(header, flush=True)
    for batch_size in (int(size) for size in args.batch_sizes.split(",")):
        speeds = {
            policy: images_per_second(policy, batch_size, args.images, args.epochs, args)
            for policy in POLICIES
        }
        medians = {policy: statistics.median(values) for policy, values in speeds.items()}
        rows.append({"batch_size": batch_size, "images_per_second": speeds, "median": medians})
        print(
            f"batch {batch_size}: "
            + ", ".join(f"{p} {medians[p]:.0f} images/s {speeds[p]}" for p in POLICIES)
            + f"; mixed_float16 / float32 = {medians['mixed_float16'] / medians['float32']:.2f}",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"setup": header, "rows": rows}, file, indent=2)


if __name__ == "__main__":
    main()
