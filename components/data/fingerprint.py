"""The data's fingerprint: what ingest reads, told apart by names, labels, sizes and versions
without reading an image.

The fingerprint step runs on every run (uncached) and is cheap: a listing and a look at each
file. Ingest and everything after it are cached on its two outputs, so a scheduled run on
unchanged data trains nothing. Its snapshot is the data's own (the newest change among the files
it names), not the clock's, so unchanged data gives the same snapshot night after night, and
ingest reading "as of" it reads exactly the files fingerprinted.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from imgclf.components import storage
from imgclf.components.parameters import IngestSettings

_READERS = 16


@dataclass(frozen=True)
class DataFingerprint:
    digest: str
    snapshot: str
    files: int


def of_files(labelled: list[tuple], listing_uri: str | None = None) -> DataFingerprint:
    """The fingerprint of ``(uri, label, split)`` entries and of the listing naming them."""
    entries = [*labelled, *([(listing_uri, None, None)] if listing_uri else [])]
    with ThreadPoolExecutor(max_workers=_READERS) as pool:
        facts = list(pool.map(storage.stat, [uri for uri, _, _ in entries]))
    lines = sorted(
        json.dumps([*entry, size, modified.isoformat(), tag])
        for entry, (size, modified, tag) in zip(entries, facts, strict=True)
    )
    newest = max(modified for _, modified, _ in facts[: len(labelled)])
    return DataFingerprint(_digest(lines), newest.isoformat(), len(labelled))


def of_sample(settings: IngestSettings) -> DataFingerprint:
    """The bundled sample is rendered from scikit-learn's copy: the same images for the same
    settings."""
    return DataFingerprint(_digest([json.dumps(asdict(settings), sort_keys=True)]), "", 0)


def _digest(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
