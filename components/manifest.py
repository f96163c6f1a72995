"""The manifest: one row per image, the table every step after ingest reads.

Stored as ``manifest.csv`` inside a manifest artifact folder, so that a step can put other files
(a quarantine list, sample images) beside it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

COLUMNS = ["uri", "label", "split", "sha256", "bytes", "width", "height", "format"]
SPLITS = ("train", "validation", "test")
MANIFEST_FILE = "manifest.csv"
QUARANTINE_FILE = "quarantine.csv"
QUARANTINE_COLUMNS = [*COLUMNS, "reason"]

_DTYPES = {
    "uri": str,
    "label": str,
    "split": str,
    "sha256": str,
    "bytes": "int64",
    "width": "Int64",
    "height": "Int64",
    "format": str,
}


def write(frame: pd.DataFrame, folder: str | Path, name: str = MANIFEST_FILE) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


def read(folder: str | Path, name: str = MANIFEST_FILE) -> pd.DataFrame:
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
