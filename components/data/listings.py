"""Listings: a CSV (``uri,label[,split]``) or JSONL file naming the images, their labels and
optionally their splits. A ``labels`` column instead of ``label`` makes the data multi-label
(several labels per image: ``a|b`` in a CSV cell, a list or ``a|b`` in JSONL). Relative URIs
resolve against the listing's folder and may not leave it.
"""

from __future__ import annotations

import csv
import io
import json
import posixpath
from pathlib import Path

from imgclf.components import manifest, storage
from imgclf.components.data.splits import SPLIT_FOLDERS

LISTING_SUFFIXES = (".csv", ".jsonl")


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
    """An absolute URI as is; a relative one under ``base``, refusing ``..`` escapes and
    URIs of a scheme that cannot be read (a file name may hold a colon, so only ``scheme://``
    and ``gs:`` or ``s3:`` count as schemes here)."""
    if "://" in uri or uri.startswith(("gs:", "s3:")):
        error = storage.location_error(uri)
        if error:
            raise ValueError(f"{where}: {error}")
    if storage.is_remote(uri) or (not storage.is_remote(base) and Path(uri).is_absolute()):
        return uri
    if storage.is_remote(base):
        store, bucket, prefix = storage.split_bucket_uri(base)
        prefix = prefix.strip("/")
        joined = posixpath.normpath(posixpath.join(prefix, uri))
        joined = "" if joined == "." else joined
        if prefix:
            inside = joined == prefix or joined.startswith(prefix + "/")
        else:  # a listing at the bucket's root: anything that does not climb out
            inside = joined != ".." and not joined.startswith("../")
        resolved = f"{store}://{bucket}/{joined}".rstrip("/")
    else:
        resolved_path = (Path(base) / uri).resolve()
        inside = resolved_path.is_relative_to(Path(base).resolve())
        resolved = str(resolved_path)
    if not inside:
        raise ValueError(f"{where}: {uri!r} points outside the listing's folder {base}.")
    return resolved
