"""The bundled offline sample: scikit-learn's handwritten digits, rendered as PNG files, so that a
first run needs no download."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

SAMPLE_DIGITS = "sample:digits"
SAMPLE_DIGITS_SIDE = 32
# What `imgclf run` trains the sample with where no flag says otherwise: no ImageNet weights
# can be had offline, so MobileNet (half width) learns from scratch at the sample's own size,
# in one stage. The measurements behind them are in docs/defaults.md ("The bundled sample").
SAMPLE_SETTINGS = {
    "backbone": "mobilenet",
    "alpha": 0.5,
    "weights": "none",
    "image_size": SAMPLE_DIGITS_SIDE,
    "epochs": 20,
    "fine_tune_epochs": 0,
    "learning_rate": 0.005,
    "augmentations": "rotation,zoom",
}


def render_sample_digits(folder: Path) -> None:
    """scikit-learn's 1,797 8x8 digits as 32x32 grayscale PNGs in ``<digit>/`` folders."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index, (pixels, target) in enumerate(zip(digits.images, digits.target, strict=True)):
        class_dir = folder / str(target)
        class_dir.mkdir(parents=True, exist_ok=True)
        image = Image.fromarray((pixels * (255 / 16)).astype("uint8"))
        image = image.resize((SAMPLE_DIGITS_SIDE, SAMPLE_DIGITS_SIDE), Image.Resampling.BICUBIC)
        image.save(class_dir / f"digit-{index:04d}.png", optimize=False)
