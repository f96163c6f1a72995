"""Data snapshots: a UTC time that leaves out files changed after it, so that a rerun with the
same snapshot reads the same images while new ones keep arriving."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone

import pandas as pd

from imgclf.components import storage

log = logging.getLogger(__name__)

_READERS = 16


def snapshot_of_run(data_snapshot: str, scheduled_at: str) -> str:
    """The snapshot a run reads: the one asked for, else the time the run was scheduled for
    (KFP's placeholder: a recurring run's slot, a one-off run's creation), else none
    (everything present now); the log says which, and why."""
    if data_snapshot:
        log.info("Reading the data as of %s: the data_snapshot asked for", data_snapshot)
        return data_snapshot
    if scheduled_at.startswith("{{"):
        log.warning(
            "The schedule time reached this step unresolved (%s): KFP backends before 2.17.0 "
            "do not resolve it (kubeflow/pipelines#12616); reading everything present now",
            scheduled_at,
        )
        return ""
    if scheduled_at:
        log.info(
            "Reading the data as of %s: the time KFP scheduled this run for (a recurring "
            "run's slot, else its creation)",
            scheduled_at,
        )
        return scheduled_at
    log.info(
        "Reading everything present now: no data_snapshot, and no schedule time (a local run, "
        "or a KFP backend before 2.17.0)"
    )
    return ""


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


def as_of(snapshot: datetime, labelled: list[tuple]) -> list[tuple]:
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
