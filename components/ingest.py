"""Ingest: turn a data URI into a manifest of every image with its label and split.

Sources: a class-per-folder tree (local or ``gs://``), optionally already split into
``train/``, ``val|validation|valid/`` and ``test/`` folders; a CSV (``uri,label[,split]``) or
JSONL listing, where a ``labels`` column instead of ``label`` makes the dataset multi-label
(several labels per image: ``a|b`` in a CSV cell, a list or ``a|b`` in JSONL); or
``sample:digits`` (scikit-learn's bundled handwritten digits rendered as PNGs, so a first run
needs no download).

A data snapshot (a UTC time) leaves out files changed after it, so that a rerun with the same
snapshot reads the same images while new ones keep arriving.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
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
LISTING_SUFFIXES = (".csv", ".jsonl")
_READERS = 16
_PROGRESS_EVERY = 500


def ingest(
    data_uri: str,
    output_dir: str,
    output_uri: str | None = None,
    train_fraction: float = 0.8,
    validation_fraction: float = 0.1,
    data_snapshot: str = "",
) -> pd.DataFrame:
    """Writes ``manifest.csv`` into ``output_dir`` and returns it.

    ``output_uri`` is where ``output_dir`` is reachable from other steps (a ``gs://`` URI on a
    cluster); sample images rendered into ``output_dir`` are recorded under it.
    ``data_snapshot`` (ISO 8601, UTC unless it says otherwise) leaves out files changed after
    it; empty reads everything there now.
    """
    _check_fractions(train_fraction, validation_fraction)
    snapshot = parse_snapshot(data_snapshot) if data_snapshot else None
    rendered_now = data_uri == SAMPLE_DIGITS
    if rendered_now:
        sample_dir = Path(output_dir) / "sample-digits"
        render_sample_digits(sample_dir)
        data_uri = storage.join(output_uri or output_dir, "sample-digits")
    elif data_uri.startswith("sample:"):
        raise ValueError(f"Unknown sample {data_uri!r}: the bundled sample is {SAMPLE_DIGITS!r}.")
    if not storage.is_gcs(data_uri):
        data_uri = str(Path(data_uri).resolve())
    labelled = read_listing(data_uri) if is_listing(data_uri) else list_labelled_files(data_uri)
    if snapshot is not None and not rendered_now:
        labelled = _as_of(snapshot, labelled)
    log.info("Found %d files under %s; reading them", len(labelled), data_uri)
    # Only headers are read here, so Pillow's decompression-bomb guard would only hide the
    # size of a bomb; validate refuses those by max_pixels before anything decodes them.
    Image.MAX_IMAGE_PIXELS = None
    rows = _describe_all([uri for uri, _, _ in labelled])
    frame = pd.DataFrame(rows, columns=["uri", "sha256", "bytes", "width", "height", "format"])
    labels = [label for _, label, _ in labelled]
    if any(isinstance(label, list) for label in labels):
        frame[manifest.LABELS_COLUMN] = [manifest.join_labels(label) for label in labels]
    else:
        frame["label"] = labels
    folder_splits = [split for _, _, split in labelled]
    if all(folder_splits):
        frame["split"] = folder_splits
    else:
        frame["split"] = hash_splits(frame, train_fraction, validation_fraction)
    frame = frame[manifest.columns(frame)].sort_values("uri", ignore_index=True)
    manifest.write(frame, output_dir)
    log.info("Manifest: %s images per split", manifest.counts_by_split(frame))
    return frame


def list_labelled_files(data_uri: str) -> list[tuple[str, str, str | None]]:
    """``(uri, label, split or None)`` for every file in a class folder under ``data_uri``.

    Files that are not inside a class folder (a README or LICENSE at the top) are not images
    of any class and are skipped.
    """
    if not storage.is_dir(data_uri):
        raise FileNotFoundError(f"Data folder {data_uri} does not exist or is empty.")
    files = storage.list_files(data_uri)
    top_folders = {f.split("/")[0] for f in files if "/" in f}
    split_layout = bool(top_folders) and all(f.lower() in SPLIT_FOLDERS for f in top_folders)
    labelled = []
    for rel in files:
        parts = rel.split("/")
        uri = storage.join(data_uri, rel)
        if split_layout and len(parts) >= 3:
            labelled.append((uri, parts[1], SPLIT_FOLDERS[parts[0].lower()]))
        elif not split_layout and len(parts) >= 2:
            labelled.append((uri, parts[0], None))
        else:
            log.info("Skipping %s: not inside a class folder", rel)
    if not labelled:
        raise ValueError(
            f"No images found under {data_uri}: expected <class>/<image> or "
            "<split>/<class>/<image> folders."
        )
    return labelled


def snapshot_of_run(data_snapshot: str, scheduled_at: str) -> str:
    """The snapshot a run reads: the one asked for, else the time the run was scheduled for
    (KFP resolves it; backends that do not pass the placeholder through unresolved, which
    means none)."""
    if data_snapshot:
        return data_snapshot
    return "" if scheduled_at.startswith("{{") else scheduled_at


def parse_snapshot(text: str) -> datetime:
    try:
        moment = pd.Timestamp(text)
    except ValueError:
        moment = pd.NaT
    if pd.isna(moment):
        raise ValueError(
            f"data_snapshot must be an ISO 8601 time such as 2026-11-25T02:00:00Z, not {text!r}."
        )
    if moment.tzinfo is None:
        moment = moment.tz_localize(timezone.utc)
    return moment.to_pydatetime()


def _as_of(snapshot: datetime, labelled: list[tuple]) -> list[tuple]:
    """The files not changed after ``snapshot``. A file that cannot be looked at is kept, so
    that reading it names it among every unreadable file."""

    def changed_after_snapshot(uri: str) -> bool:
        try:
            return storage.modified_at(uri) > snapshot
        except Exception:  # noqa: BLE001 - OSError locally, NotFound etc. on GCS
            return False

    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        newer = list(pool.map(changed_after_snapshot, [uri for uri, _, _ in labelled]))
    kept = [entry for entry, is_newer in zip(labelled, newer, strict=True) if not is_newer]
    if len(kept) < len(labelled):
        log.warning(
            "%d files changed after the data snapshot %s are left out; a run with a later "
            "snapshot reads them",
            len(labelled) - len(kept),
            snapshot.isoformat(),
        )
    if not kept:
        raise ValueError(
            f"No file was there at the data snapshot {snapshot.isoformat()}: every one of the "
            f"{len(labelled)} files changed after it. Use a later data_snapshot, or none."
        )
    return kept


def is_listing(data_uri: str) -> bool:
    return data_uri.lower().endswith(LISTING_SUFFIXES)


def read_listing(listing_uri: str) -> list[tuple[str, str | list[str], str | None]]:
    """``(uri, label, split or None)`` from a CSV (``uri,label[,split]``) or JSONL file; the
    label is a list of labels where the listing has a ``labels`` column (multi-label).

    Relative URIs resolve against the listing's folder and may not leave it.
    """
    name = listing_uri.rsplit("/", 1)[-1]
    try:
        text = storage.read_bytes(listing_uri).decode("utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{name}: a listing must be UTF-8 text ({error}).") from None
    is_jsonl = listing_uri.lower().endswith(".jsonl")
    records = _jsonl_records(text, name) if is_jsonl else _csv_records(text, name)
    if not records:
        raise ValueError(f"{listing_uri} lists no images.")
    multi_label = manifest.LABELS_COLUMN in records[0]
    base = listing_uri.rsplit("/", 1)[0]
    labelled = []
    # Line numbers as an editor shows them: a CSV's first record is on line 2.
    for number, record in enumerate(records, start=1 if is_jsonl else 2):
        where = f"{name} line {number}"
        uri = str(record.get("uri") or "").strip()
        label = _listed_labels(record, where) if multi_label else _listed_label(record, where)
        if not uri:
            raise ValueError(f"{where}: every row needs a uri.")
        if any(ord(character) < 32 for character in uri):
            raise ValueError(f"{where}: the uri {uri!r} holds a control character.")
        split = str(record.get("split") or "").strip().lower() or None
        if split is not None and split not in SPLIT_FOLDERS:
            raise ValueError(f"{where}: split {split!r} is not one of train, validation, test.")
        labelled.append((_resolve(base, uri, where), label, split and SPLIT_FOLDERS[split]))
    if len({split for _, _, split in labelled} - {None}) and any(
        split is None for _, _, split in labelled
    ):
        raise ValueError(f"{name}: give a split for every row or for none.")
    return labelled


def _jsonl_records(text: str, name: str) -> list[dict]:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{name} line {number}: not a JSON object ({error}).") from None
        if not isinstance(record, dict):
            raise ValueError(f"{name} line {number}: not a JSON object with uri and label.")
        records.append(record)
    return records


def _csv_records(text: str, name: str) -> list[dict]:
    try:
        # newline="": the csv module reads line ends itself, \r inside quoted fields included.
        return list(csv.DictReader(io.StringIO(text, newline="")))
    except csv.Error as error:
        raise ValueError(f"{name}: not a valid CSV listing ({error}).") from None


def _listed_label(record: dict, where: str) -> str:
    if manifest.LABELS_COLUMN in record:
        raise ValueError(
            f"{where}: has 'labels' where earlier rows have 'label'; use one of the two."
        )
    label = str(record.get("label") or "").strip()
    if not label:
        raise ValueError(f"{where}: every row needs a label.")
    return label


def _listed_labels(record: dict, where: str) -> list[str]:
    """A multi-label row's labels, from ``a|b`` or (JSONL) a list; at least one."""
    if "label" in record:
        raise ValueError(
            f"{where}: has 'label' where earlier rows have 'labels'; use one of the two."
        )
    cell = record.get(manifest.LABELS_COLUMN)
    if isinstance(cell, list):
        labels = [str(label).strip() for label in cell]
        if any(manifest.LABEL_SEPARATOR in label for label in labels):
            raise ValueError(
                f"{where}: a label may not contain {manifest.LABEL_SEPARATOR!r}, which "
                "separates labels."
            )
    else:
        labels = [label.strip() for label in str(cell or "").split(manifest.LABEL_SEPARATOR)]
    labels = [label for label in labels if label]
    if not labels:
        raise ValueError(f"{where}: every row needs at least one label in 'labels'.")
    return labels


def _resolve(base: str, uri: str, where: str) -> str:
    """An absolute URI as is; a relative one under ``base``, refusing ``..`` escapes."""
    if storage.is_gcs(uri) or (not storage.is_gcs(base) and Path(uri).is_absolute()):
        return uri
    if storage.is_gcs(base):
        bucket, prefix = storage.split_gcs_uri(base)
        prefix = prefix.strip("/")
        joined = posixpath.normpath(posixpath.join(prefix, uri))
        joined = "" if joined == "." else joined
        if prefix:
            inside = joined == prefix or joined.startswith(prefix + "/")
        else:  # a listing at the bucket's root: anything that does not climb out
            inside = joined != ".." and not joined.startswith("../")
        resolved = f"{storage.GCS_SCHEME}{bucket}/{joined}".rstrip("/")
    else:
        resolved_path = (Path(base) / uri).resolve()
        inside = resolved_path.is_relative_to(Path(base).resolve())
        resolved = str(resolved_path)
    if not inside:
        raise ValueError(f"{where}: {uri!r} points outside the listing's folder {base}.")
    return resolved


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
    """Describes every file; one error naming the files that cannot be read, if any (a
    listing may name files that do not exist)."""

    def describe_or_error(uri: str) -> tuple | str:
        try:
            return describe_image(uri)
        except Exception as error:  # noqa: BLE001 - OSError locally, NotFound etc. on GCS
            return f"{uri} ({type(error).__name__}: {error})"

    rows, unreadable = [], []
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        for done, row in enumerate(pool.map(describe_or_error, uris), start=1):
            (unreadable if isinstance(row, str) else rows).append(row)
            if done % _PROGRESS_EVERY == 0 or done == len(uris):
                log.info("Read %d/%d files", done, len(uris))
    if unreadable:
        raise FileNotFoundError(
            f"{len(unreadable)} of {len(uris)} files cannot be read: "
            + "; ".join(unreadable[:5])
            + ("; ..." if len(unreadable) > 5 else "")
        )
    return rows


def _check_fractions(train_fraction: float, validation_fraction: float) -> None:
    if not (0 < train_fraction < 1 and 0 <= validation_fraction < 1):
        raise ValueError("train_fraction must be in (0, 1) and validation_fraction in [0, 1).")
    if train_fraction + validation_fraction >= 1:
        raise ValueError(
            f"train_fraction + validation_fraction = {train_fraction + validation_fraction:g} "
            "leaves no test split; make their sum below 1."
        )
