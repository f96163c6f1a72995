"""Ingest: turn a data URI into a manifest of every image with its label and split.

Sources: a class-per-folder tree (local or ``gs://``), optionally already split into
``train/``, ``val|validation|valid/`` and ``test/`` folders, or ``sample:digits`` (scikit-learn's
bundled handwritten digits rendered as PNGs, so a first run needs no download).
"""

from __future__ import annotations

import hashlib
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from PIL import Image

from components import manifest, storage

log = logging.getLogger(__name__)

SAMPLE_DIGITS = "sample:digits"
SAMPLE_DIGITS_SIDE = 32
SPLIT_FOLDERS = {
    "train": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}
_READERS = 16
_PROGRESS_EVERY = 500


def ingest(
    data_uri: str,
    output_dir: str,
    output_uri: str | None = None,
    train_fraction: float = 0.8,
    validation_fraction: float = 0.1,
) -> pd.DataFrame:
    """Writes ``manifest.csv`` into ``output_dir`` and returns it.

    ``output_uri`` is where ``output_dir`` is reachable from other steps (a ``gs://`` URI on a
    cluster); sample images rendered into ``output_dir`` are recorded under it.
    """
    _check_fractions(train_fraction, validation_fraction)
    if data_uri == SAMPLE_DIGITS:
        sample_dir = Path(output_dir) / "sample-digits"
        render_sample_digits(sample_dir)
        data_uri = storage.join(output_uri or output_dir, "sample-digits")
    elif data_uri.startswith("sample:"):
        raise ValueError(f"Unknown sample {data_uri!r}: the bundled sample is {SAMPLE_DIGITS!r}.")
    if not storage.is_gcs(data_uri):
        data_uri = str(Path(data_uri).resolve())
    if not storage.is_dir(data_uri):
        raise FileNotFoundError(f"Data folder {data_uri} does not exist or is empty.")

    labelled = list_labelled_files(data_uri)
    if not labelled:
        raise ValueError(
            f"No images found under {data_uri}: expected <class>/<image> or "
            "<split>/<class>/<image> folders."
        )
    log.info("Found %d files under %s; reading them", len(labelled), data_uri)
    # Only headers are read here, so Pillow's decompression-bomb guard would only hide the
    # size of a bomb; validate refuses those by max_pixels before anything decodes them.
    Image.MAX_IMAGE_PIXELS = None
    rows = _describe_all([storage.join(data_uri, rel) for rel, _, _ in labelled])
    frame = pd.DataFrame(rows, columns=["uri", "sha256", "bytes", "width", "height", "format"])
    frame["label"] = [label for _, label, _ in labelled]
    folder_splits = [split for _, _, split in labelled]
    if all(folder_splits):
        frame["split"] = folder_splits
    else:
        frame["split"] = hash_splits(frame, train_fraction, validation_fraction)
    frame = frame[manifest.COLUMNS].sort_values("uri", ignore_index=True)
    manifest.write(frame, output_dir)
    log.info("Manifest: %s images per split", manifest.counts_by_split(frame))
    return frame


def list_labelled_files(data_uri: str) -> list[tuple[str, str, str | None]]:
    """``(relative path, label, split or None)`` for every file in a class folder.

    Files that are not inside a class folder (a README or LICENSE at the top) are not images
    of any class and are skipped.
    """
    files = storage.list_files(data_uri)
    top_folders = {f.split("/")[0] for f in files if "/" in f}
    split_layout = bool(top_folders) and all(f.lower() in SPLIT_FOLDERS for f in top_folders)
    labelled = []
    for rel in files:
        parts = rel.split("/")
        if split_layout and len(parts) >= 3:
            labelled.append((rel, parts[1], SPLIT_FOLDERS[parts[0].lower()]))
        elif not split_layout and len(parts) >= 2:
            labelled.append((rel, parts[0], None))
        else:
            log.info("Skipping %s: not inside a class folder", rel)
    return labelled


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
    for _, rows in frame.groupby("label", sort=True):
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


def describe_image(uri: str) -> tuple[str, str, int, int | None, int | None, str]:
    """``(uri, sha256, bytes, width, height, format)``; size and format empty if unreadable."""
    data = storage.read_bytes(uri)
    width = height = None
    image_format = ""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            image_format = image.format or ""
    except Exception:  # noqa: BLE001 - any unreadable header is for validate to quarantine
        pass
    return uri, hashlib.sha256(data).hexdigest(), len(data), width, height, image_format


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


def _describe_all(uris: list[str]) -> list[tuple]:
    rows = []
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        for done, row in enumerate(pool.map(describe_image, uris), start=1):
            rows.append(row)
            if done % _PROGRESS_EVERY == 0 or done == len(uris):
                log.info("Read %d/%d files", done, len(uris))
    return rows


def _check_fractions(train_fraction: float, validation_fraction: float) -> None:
    if not (0 < train_fraction < 1 and 0 <= validation_fraction < 1):
        raise ValueError("train_fraction must be in (0, 1) and validation_fraction in [0, 1).")
    if train_fraction + validation_fraction >= 1:
        raise ValueError(
            f"train_fraction + validation_fraction = {train_fraction + validation_fraction:g} "
            "leaves no test split; make their sum below 1."
        )
