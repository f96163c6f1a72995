"""TF Serving's model layout: ``<serving_root>/<model_name>/<version>/`` with integer versions.

TF Serving serves the highest integer version it finds and ignores other names, so a version is
assembled under a hidden name and renamed into place: a watcher polling the root never sees it
half-written.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from components import storage


def list_versions(serving_root: str, model_name: str) -> list[int]:
    if storage.is_gcs(serving_root):
        raise NotImplementedError(
            "gs:// serving roots are not supported yet; push to a local or mounted path."
        )
    model_root = Path(serving_root) / model_name
    if not model_root.is_dir():
        return []
    return sorted(int(p.name) for p in model_root.iterdir() if p.name.isdigit() and p.is_dir())


def latest_version(serving_root: str, model_name: str) -> tuple[int, str] | None:
    """The version TF Serving serves by default (the newest) and its path, or None."""
    versions = list_versions(serving_root, model_name)
    if not versions:
        return None
    return versions[-1], str(Path(serving_root) / model_name / str(versions[-1]))


def publish(staged_dir: str, serving_root: str, model_name: str) -> tuple[int, str]:
    """Moves a fully written model folder into place as the next version.

    ``staged_dir`` must be on the same filesystem as ``serving_root`` for the rename to be
    atomic; :func:`staging_dir` gives such a place. Two publishers racing for one number both
    succeed: the loser of the rename takes the next number.
    """
    model_root = Path(serving_root) / model_name
    version = max(list_versions(serving_root, model_name), default=0) + 1
    while True:
        target = model_root / str(version)
        try:
            # rename() onto an existing non-empty folder fails, so a version is never clobbered;
            # an empty one (a crashed mkdir) is replaced, which is what we want.
            Path(staged_dir).rename(target)
            return version, str(target)
        except OSError:
            if not target.exists():
                raise
            version += 1


def staging_dir(serving_root: str, model_name: str) -> Path:
    """A hidden folder beside the versions, invisible to TF Serving until renamed."""
    path = Path(serving_root) / model_name / f".staging-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    return path


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
