"""Ingest: turn a data URI into a manifest of every image with its label and split.

Sources: a class-per-folder tree (a local path or a bucket prefix), optionally already split into
``train/``, ``val|validation|valid/`` and ``test/`` folders; a listing (``listings``); or the
bundled ``sample:digits`` (``sample``). Without split folders or a split column, splits come
from content hashes (``splits``). A data snapshot (``snapshot``) leaves out files changed after
it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from PIL import Image

from imgclf.components import artifacts, manifest, storage
from imgclf.components.data.fingerprint import DataFingerprint, of_files, of_sample
from imgclf.components.data.listings import is_listing, read_listing
from imgclf.components.data.sample import SAMPLE_DIGITS, render_sample_digits
from imgclf.components.data.snapshot import as_of, parse_snapshot
from imgclf.components.data.splits import SPLIT_FOLDERS, carve_validation, hash_splits
from imgclf.components.parameters import IngestSettings

log = logging.getLogger(__name__)

_READERS = 16
_PROGRESS_EVERY = 500
# The key of the splits record (artifacts.SPLITS_RECORD): train images moved to validation.
CARVED_FROM_TRAIN = "validation_carved_from_train"


def fingerprint(settings: IngestSettings) -> DataFingerprint:
    """The fingerprint of the files ``settings`` name, as of its ``data_snapshot``."""
    if settings.data_uri == SAMPLE_DIGITS:
        return of_sample(settings)
    _check_not_unknown_sample(settings.data_uri)
    labelled = _listed(settings)
    return of_files(labelled, _listing_of(settings.data_uri))


def ingest(
    settings: IngestSettings,
    output_dir: str,
    output_uri: str | None = None,
    expected_fingerprint: str = "",
) -> pd.DataFrame:
    """Writes ``manifest.csv``, and what was asked for (``ingest.json``), into ``output_dir``
    and returns the manifest.

    ``output_uri`` is where ``output_dir`` is reachable from other steps (an object-store URI on a
    cluster); sample images rendered into ``output_dir`` are recorded under it. With
    ``expected_fingerprint`` (the fingerprint step's), the files read must be the ones it
    fingerprinted: later steps are cached on it.
    """
    if settings.data_uri == SAMPLE_DIGITS:
        frame, carved = _rendered_sample(settings, output_dir, output_uri)
    else:
        _check_not_unknown_sample(settings.data_uri)
        labelled = _listed(settings)
        if expected_fingerprint:
            _check_fingerprint(labelled, settings.data_uri, expected_fingerprint)
        frame, carved = _manifest_of(labelled, settings)
    manifest.write(frame, output_dir)
    (Path(output_dir) / artifacts.INGEST_RECORD).write_text(json.dumps(asdict(settings), indent=2))
    (Path(output_dir) / artifacts.SPLITS_RECORD).write_text(json.dumps({CARVED_FROM_TRAIN: carved}))
    log.info("Manifest: %s images per split", manifest.counts_by_split(frame))
    return frame


def _check_not_unknown_sample(data_uri: str) -> None:
    if data_uri.startswith("sample:"):
        raise ValueError(f"Unknown sample {data_uri!r}: the bundled sample is {SAMPLE_DIGITS!r}.")


def _listing_of(data_uri: str) -> str | None:
    return data_uri if is_listing(data_uri) else None


def _check_fingerprint(labelled: list[tuple], data_uri: str, expected: str) -> None:
    if of_files(labelled, _listing_of(data_uri)).digest != expected:
        raise ValueError(
            f"The data under {data_uri} changed between the fingerprint step and ingest (a file "
            "written with an old modification time, or a listing rewritten): run again, so "
            "that later runs are not cached on data they did not read."
        )


def _listed(settings: IngestSettings) -> list[tuple]:
    """``(uri, label, split or None)`` of every file the data URI names, as of the snapshot."""
    data_uri = settings.data_uri
    if not storage.is_remote(data_uri):
        data_uri = str(Path(data_uri).resolve())
    labelled = read_listing(data_uri) if is_listing(data_uri) else list_labelled_files(data_uri)
    if settings.data_snapshot:
        labelled = as_of(parse_snapshot(settings.data_snapshot), labelled)
    log.info("Found %d files under %s; reading them", len(labelled), data_uri)
    return labelled


def _rendered_sample(
    settings: IngestSettings, output_dir: str, output_uri: str | None
) -> tuple[pd.DataFrame, int]:
    """The bundled sample, rendered into the manifest artifact now (whatever the snapshot) and
    recorded under ``output_uri``, where later steps (other pods on a cluster) find it. It is
    read back from ``output_dir``: KFP's launcher uploads the artifact to its URI only after the
    step exits, so nothing is there yet."""
    sample_dir = (Path(output_dir) / artifacts.SAMPLE_FOLDER).resolve()
    render_sample_digits(sample_dir)
    frame, carved = _manifest_of(list_labelled_files(str(sample_dir)), settings)
    if output_uri:
        reachable = storage.join(output_uri, artifacts.SAMPLE_FOLDER)
        frame["uri"] = reachable + frame["uri"].str.removeprefix(str(sample_dir))
    return frame, carved


def carved_from_train(manifest_dir: str) -> int:
    """How many train images ingest moved to a validation split the data did not have."""
    record = Path(manifest_dir) / artifacts.SPLITS_RECORD
    return json.loads(record.read_text())[CARVED_FROM_TRAIN] if record.exists() else 0


def read_record(manifest_dir: str) -> IngestSettings:
    """What ingest was asked for, from its manifest artifact; the defaults for a manifest that
    was written without ingest."""
    record = Path(manifest_dir) / artifacts.INGEST_RECORD
    if not record.exists():
        return IngestSettings()
    return IngestSettings(**json.loads(record.read_text()))


def _manifest_of(labelled: list[tuple], settings: IngestSettings) -> tuple[pd.DataFrame, int]:
    """One row per file: its header's facts, its label(s) and its split; and how many train
    images were moved to validation."""
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
    folder_splits = pd.Series([split for _, _, split in labelled], dtype=object)
    carved = 0
    if folder_splits.notna().all():
        frame["split"] = _with_validation(frame, folder_splits, settings)
        carved = int((frame["split"] != folder_splits).sum())
    else:
        frame["split"] = hash_splits(frame, settings.train_fraction, settings.validation_fraction)
    return frame[manifest.columns(frame)].sort_values("uri", ignore_index=True), carved


def _with_validation(frame: pd.DataFrame, splits: pd.Series, settings: IngestSettings):
    """The data's own splits; without a validation split (train/ and test/ only), one carved
    from train: early stopping, the best epoch and the thresholds all need one."""
    if (splits == "validation").any() or settings.validation_fraction == 0:
        return splits
    carved = carve_validation(frame, splits, settings.train_fraction, settings.validation_fraction)
    moved = int((carved == "validation").sum())
    if moved == 0:
        raise ValueError(
            "The data has train and test splits but no validation split, and no class has two "
            "distinct train images to carve one from: add a val/ folder (or validation rows to "
            "the listing), add images, or set validation_fraction=0 to train without one."
        )
    labels = manifest.per_label(frame.assign(split=carved))
    unseen = sorted(
        set(labels.loc[labels["split"] == "train", "label"])
        - set(labels.loc[labels["split"] == "validation", "label"])
    )
    log.warning(
        "No validation split in the data: %d of %d train images moved to validation, by "
        "content hash per class (validation_fraction=%g of train + validation)%s",
        moved,
        int((splits == "train").sum()),
        settings.validation_fraction,
        f"; classes with one train image have none in validation: {unseen}" if unseen else "",
    )
    return carved


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
