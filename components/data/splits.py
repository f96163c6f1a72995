"""Splits from content: the same file always lands in the same split, so the same data always
gives the same manifest, and identical copies never straddle train and test."""

from __future__ import annotations

import pandas as pd

from imgclf.components import manifest

# Split folder names as people write them, to the manifest's split names.
SPLIT_FOLDERS = {
    "train": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}


def hash_splits(
    frame: pd.DataFrame, train_fraction: float, validation_fraction: float
) -> pd.Series:
    """Splits from content hashes, then every class with at least 3 images gets one in each
    split: per missing split, the image whose hash lies nearest that split's share moves
    there from the class's largest split, with every identical copy of it."""
    splits = frame["sha256"].map(lambda sha: hash_split(sha, train_fraction, validation_fraction))
    positions = frame["sha256"].map(_hash_position)
    bands = {
        "train": train_fraction / 2,
        "validation": train_fraction + validation_fraction / 2,
        "test": (1 + train_fraction + validation_fraction) / 2,
    }
    wanted = [s for s in manifest.SPLITS if s != "validation" or validation_fraction > 0]
    for _, rows in manifest.per_label(frame).groupby("label", sort=True):
        if len(rows) < 3:
            continue
        for missing in wanted:
            class_splits = splits[rows.index]
            if (class_splits == missing).any():
                continue
            donor = class_splits.value_counts().sort_index().idxmax()
            candidates = rows.index[class_splits == donor]
            nearest = (positions[candidates] - bands[missing]).abs().sort_values(kind="stable")
            sha = frame.at[nearest.index[0], "sha256"]
            splits[frame["sha256"] == sha] = missing
    return splits


def carve_validation(
    frame: pd.DataFrame, splits: pd.Series, train_fraction: float, validation_fraction: float
) -> pd.Series:
    """``splits`` with a validation split carved from train, for data split into train and
    test only: per class, the share ``validation_fraction / (train_fraction +
    validation_fraction)`` of its distinct train images (at least one, never its last), those
    whose content hash comes first, so every ingest carves the same; identical copies move
    together."""
    share = validation_fraction / (train_fraction + validation_fraction)
    carved = splits.copy()
    in_train = frame[splits == "train"]
    for _, rows in manifest.per_label(in_train).groupby("label", sort=True):
        contents = sorted(set(frame.loc[rows.index, "sha256"]))
        if len(contents) < 2:
            continue
        moved = contents[: min(len(contents) - 1, max(1, round(share * len(contents))))]
        carved[frame["sha256"].isin(moved) & (carved == "train")] = "validation"
    return carved


def hash_split(sha256: str, train_fraction: float, validation_fraction: float) -> str:
    """Deterministic split from content, so identical files always share a split."""
    position = _hash_position(sha256)
    if position < train_fraction:
        return "train"
    if position < train_fraction + validation_fraction:
        return "validation"
    return "test"


def _hash_position(sha256: str) -> float:
    return int(sha256[:16], 16) / 16**16
