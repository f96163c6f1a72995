"""Data profiles: what a model was trained on, stored next to it, to tell when data drifts.

Validate profiles the data it passes; push stores that profile in the model's
``assets.extra/``; the next validate compares its data with the profile of the model being
served.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from imgclf.components import artifacts, manifest, storage


def data_profile(kept: pd.DataFrame, brightness: pd.Series) -> dict:
    """``kept``: the validated manifest; ``brightness``: mean pixel value in [0, 1] per row."""
    shorter_side = kept[["width", "height"]].min(axis=1).astype(float)
    # Multi-label: the share of each label among all the labels given.
    shares = manifest.per_label(kept)["label"].value_counts(normalize=True).sort_index()
    return {
        "images": len(kept),
        "label_distribution": {label: float(share) for label, share in shares.items()},
        "shorter_side": {
            "median": float(shorter_side.median()),
            "mean": float(shorter_side.mean()),
        },
        "brightness": {"mean": float(brightness.mean()), "std": float(brightness.std(ddof=0))},
    }


def drift(current: dict, baseline: dict) -> dict[str, float]:
    """How far ``current`` is from ``baseline``.

    ``label_tvd``: total-variation distance of the label distributions (0 same, 1 disjoint);
    ``size_shift``: relative change of the median shorter side; ``brightness_shift``: change
    of mean brightness, on the [0, 1] pixel scale.
    """
    labels = set(current["label_distribution"]) | set(baseline["label_distribution"])
    tvd = 0.5 * sum(
        abs(
            current["label_distribution"].get(label, 0.0)
            - baseline["label_distribution"].get(label, 0.0)
        )
        for label in labels
    )
    base_side = baseline["shorter_side"]["median"]
    return {
        "label_tvd": round(tvd, 6),
        "size_shift": round(abs(current["shorter_side"]["median"] - base_side) / base_side, 6),
        "brightness_shift": round(
            abs(current["brightness"]["mean"] - baseline["brightness"]["mean"]), 6
        ),
    }


def write(profile: dict, folder: str | Path) -> Path:
    path = Path(folder) / artifacts.DATA_PROFILE
    path.write_text(json.dumps(profile, indent=2, sort_keys=True))
    return path


def read(folder: str) -> dict | None:
    """The profile in ``folder`` (a local path or a ``gs://`` URI), or None."""
    uri = storage.join(str(folder), artifacts.DATA_PROFILE)
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None
