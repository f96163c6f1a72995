"""The manifest: one row per image, the table every step after ingest reads.

Stored as ``manifest.csv`` inside a manifest artifact folder, so that a step can put other files
(a quarantine list, sample images) beside it. A multi-class manifest has a ``label`` column; a
multi-label one has a ``labels`` column instead, each cell the image's labels joined by ``|``,
so the task is written in the file itself and no step can mistake ``a|b`` for one class.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from imgclf.components import artifacts

COLUMNS = ["uri", "label", "split", "sha256", "bytes", "width", "height", "format"]
LABELS_COLUMN = "labels"
LABEL_SEPARATOR = "|"
SPLITS = ("train", "validation", "test")

_DTYPES = {
    "uri": str,
    "label": str,
    LABELS_COLUMN: str,
    "split": str,
    "sha256": str,
    "bytes": "int64",
    "width": "Int64",
    "height": "Int64",
    "format": str,
}


def write(frame: pd.DataFrame, folder: str | Path, name: str = artifacts.MANIFEST) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def read(folder: str | Path, name: str = artifacts.MANIFEST) -> pd.DataFrame:
    path = Path(folder) / name
    if not path.exists():
        raise FileNotFoundError(f"No {name} in {folder}: is this a manifest artifact folder?")
    frame = pd.read_csv(
        path, dtype=_DTYPES, keep_default_na=False, na_values={"width": [""], "height": [""]}
    )
    return frame


def split_rows(frame: pd.DataFrame, split: str) -> pd.DataFrame:
    return frame[frame["split"] == split].reset_index(drop=True)


def counts_by_split(frame: pd.DataFrame) -> dict[str, int]:
    return {split: int((frame["split"] == split).sum()) for split in SPLITS}


def is_multi_label(frame: pd.DataFrame) -> bool:
    return LABELS_COLUMN in frame.columns


def columns(frame: pd.DataFrame) -> list[str]:
    """The manifest columns of ``frame``'s task, in file order."""
    if not is_multi_label(frame):
        return COLUMNS
    return [LABELS_COLUMN if name == "label" else name for name in COLUMNS]


def quarantine_columns(frame: pd.DataFrame) -> list[str]:
    return [*columns(frame), "reason"]


def label_column(frame: pd.DataFrame) -> str:
    return LABELS_COLUMN if is_multi_label(frame) else "label"


def label_sets(frame: pd.DataFrame) -> list[list[str]]:
    """Each row's labels: one for a multi-class manifest, any number for a multi-label one."""
    if not is_multi_label(frame):
        return [[label] for label in frame["label"]]
    return [cell.split(LABEL_SEPARATOR) if cell else [] for cell in frame[LABELS_COLUMN]]


def join_labels(labels: list[str]) -> str:
    """The ``labels`` cell of a multi-label row: sorted, without repeats."""
    return LABEL_SEPARATOR.join(sorted(set(labels)))


def per_label(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (image, label) with a ``label`` column, keeping ``frame``'s index, so
    per-class counts read the same for both tasks."""
    if not is_multi_label(frame):
        return frame
    return frame.assign(label=label_sets(frame)).explode("label").dropna(subset=["label"])
