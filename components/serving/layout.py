"""TF Serving's model layout: ``<serving_root>/<model_name>/<version>/`` with integer versions.

TF Serving serves the highest integer version it finds and ignores other names. On a local or
mounted path a version is assembled under a hidden name and renamed into place, so a watcher
polling the root never sees it half-written. Object stores (GCS, S3, MinIO) have no rename: a
version number is claimed with an object created under a condition (``.claims/<version>``,
which TF Serving ignores; GCS ``ifGenerationMatch=0``, S3 ``If-None-Match: *``), and the files
are uploaded with ``saved_model.pb`` last, so a version is loadable only once it is whole;
:func:`latest_version` skips versions without it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from imgclf.components import artifacts, storage

_CLAIMS = ".claims"


def list_versions(serving_root: str, model_name: str) -> list[int]:
    """Every integer version folder, complete or not."""
    names = storage.subfolders(storage.join(serving_root, model_name))
    return sorted(int(name) for name in names if name.isdigit())


def latest_version(serving_root: str, model_name: str) -> tuple[int, str] | None:
    """The newest complete version (what TF Serving serves) and its URI, or None."""
    for version in reversed(list_versions(serving_root, model_name)):
        uri = storage.join(serving_root, model_name, str(version))
        if storage.exists(storage.join(uri, artifacts.SAVED_MODEL)):
            return version, uri
    return None


def staging_dir(serving_root: str, model_name: str) -> Path:
    """Where to assemble a version: a hidden folder beside the versions (same filesystem, so
    the final rename is atomic), or a local temporary folder for a root on a store."""
    if storage.is_remote(serving_root):
        return Path(tempfile.mkdtemp(prefix="imgclf-staging-"))
    path = Path(serving_root) / model_name / f".staging-{uuid.uuid4().hex}"
    path.mkdir(parents=True)
    return path


def publish(staged_dir: str, serving_root: str, model_name: str) -> tuple[int, str]:
    """Makes a fully written model folder the next version; returns ``(version, uri)``.

    Two publishers racing for one number both succeed: the loser takes the next number.
    """
    if storage.is_remote(serving_root):
        return _publish_to_store(Path(staged_dir), serving_root, model_name)
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


def prune(
    serving_root: str, model_name: str, keep: int, protected: frozenset[int] = frozenset()
) -> list[int]:
    """Removes all but the newest ``keep`` versions and the ``protected`` ones (nothing when
    ``keep`` is 0); returns the removed version numbers. A version stops being loadable before
    any other file goes: renamed away locally, ``saved_model.pb`` deleted first on a store."""
    if keep <= 0:
        return []
    removed = [v for v in list_versions(serving_root, model_name)[:-keep] if v not in protected]
    for version in removed:
        uri = storage.join(serving_root, model_name, str(version))
        if storage.is_remote(uri):
            storage.delete(storage.join(uri, artifacts.SAVED_MODEL))
            for relative in storage.list_files(uri):
                storage.delete(storage.join(uri, relative))
        else:
            retired = Path(serving_root) / model_name / f".retired-{version}-{uuid.uuid4().hex}"
            Path(uri).rename(retired)
            discard(retired)
    return removed


def discard(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def local_copy(model_uri: str) -> Iterator[str]:
    """A local path to a served model: the path itself, or a temporary download from a store."""
    if not storage.is_remote(model_uri):
        yield model_uri
        return
    with tempfile.TemporaryDirectory(prefix="imgclf-model-") as folder:
        yield str(storage.download_folder(model_uri, folder))


def _publish_to_store(staged: Path, serving_root: str, model_name: str) -> tuple[int, str]:
    version = max(list_versions(serving_root, model_name), default=0) + 1
    while not storage.create_exclusively(
        storage.join(serving_root, model_name, _CLAIMS, str(version))
    ):
        version += 1
    target = storage.join(serving_root, model_name, str(version))
    # saved_model.pb last: until it lands, the version is not a loadable SavedModel.
    storage.upload_folder(staged, target, last=artifacts.SAVED_MODEL)
    discard(staged)
    return version, target
