"""File I/O for local paths and object stores (``gs://``, ``s3://``), and what counts as either.

Steps address data by URI so that the same code reads a local folder in a test and a bucket on
a cluster. Object stores go through fsspec: gcsfs for Google Cloud Storage, s3fs for S3 and
S3-compatible stores (MinIO, Ceph, R2). Credentials and endpoints come from where those
libraries look for them, never from a pipeline parameter:

- GCS: workload identity, the metadata server or ``GOOGLE_APPLICATION_CREDENTIALS``;
  ``STORAGE_EMULATOR_HOST`` points at an emulator.
- S3: botocore's chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, IRSA's web identity,
  instance profiles); ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) points at MinIO or
  another S3-compatible store.

``minio://BUCKET/KEY`` is how Kubeflow Pipelines names artifacts on its bundled MinIO; it is the
S3 object ``BUCKET/KEY`` at ``AWS_ENDPOINT_URL``.

Writers that race (two pushes) rely on the stores' conditional writes: "create only if absent"
(:func:`create_exclusively`) and "replace only if unchanged" (:func:`update`): GCS generation
preconditions, S3's ``If-None-Match``/``If-Match``, and ``O_EXCL``/``flock`` on local paths.
"""

from __future__ import annotations

import fcntl
import functools
import os
import random
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

# gcsfs 2026.10 asks a gRPC API for each bucket's type (zonal, hierarchical) unless told not
# to, and waits 60 s when that API cannot be reached; plain buckets need none of it.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

GCS_SCHEME = "gs://"
S3_SCHEME = "s3://"
MINIO_SCHEME = "minio://"
_REMOTE_PROTOCOLS = {"gs": "gcs", "s3": "s3", "minio": "s3"}
SUPPORTED = (
    "a local path, gs://BUCKET/PATH or s3://BUCKET/PATH "
    "(MinIO and other S3-compatible stores through AWS_ENDPOINT_URL)"
)
# "s3:", "ftp:", "minio:": what a URI's scheme looks like (RFC 3986), before its "//".
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# Bucket names: GCS allows 3 to 63 lowercase letters, digits, dots, dashes and underscores;
# S3 (and MinIO) the same without underscores.
_BUCKET_URIS = {
    "gs": re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/.*)?$"),
    "s3": re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"),
    "minio": re.compile(r"^minio://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$"),
}
# How often a conditional write is retried when other writers keep winning.
UPDATE_ATTEMPTS = 20


class ConcurrentUpdateError(RuntimeError):
    """Other writers kept changing a file between our read and our conditional write."""


def scheme(uri: str) -> str:
    """``gs``, ``s3`` or ``minio`` for an object-store URI, ``""`` for a local path."""
    name, sep, _ = uri.partition("://")
    return name if sep and name in _REMOTE_PROTOCOLS else ""


def is_remote(uri: str) -> bool:
    """True for an object-store URI: anything but a local (or mounted) path."""
    return bool(scheme(uri))


def location_error(uri: str) -> str | None:
    """Why ``uri`` is no location this code can read and write, in one sentence, or None.

    A scheme other than ``gs://``, ``s3://`` and ``minio://`` is refused here, before any work:
    a path such as ``s3:/bucket`` taken as local would quietly write to the pod's own disk."""
    for name, pattern in _BUCKET_URIS.items():
        if uri.startswith(f"{name}:"):
            if pattern.match(uri):
                return None
            return f"{uri!r} is not a {name}://BUCKET/PATH URI; supported: {SUPPORTED}."
    if _SCHEME.match(uri):
        name = uri.split(":", 1)[0]
        return f"{uri!r}: the scheme {name}: is not supported; supported: {SUPPORTED}."
    if not uri.strip():
        return f"an empty location; supported: {SUPPORTED}."
    return None


def split_bucket_uri(uri: str) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` -> ``("s3", "bucket", "a/b")``."""
    name, _, rest = uri.partition("://")
    bucket, _, key = rest.partition("/")
    return name, bucket, key


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def _filesystem(uri: str):
    """The fsspec filesystem for ``uri`` and the path it takes (``bucket/key`` on a store)."""
    name, sep, rest = uri.partition("://")
    if sep and name in _REMOTE_PROTOCOLS:
        return _store(_REMOTE_PROTOCOLS[name], *_store_environment()), rest
    return _local(), uri


def _store_environment() -> tuple[str | None, ...]:
    """What decides which store a client talks to, so a changed endpoint gets a new client."""
    names = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "STORAGE_EMULATOR_HOST")
    return tuple(os.environ.get(name) for name in names)


@functools.cache
def _store(protocol: str, *environment: str | None):
    # Listings are not cached: other pods write the same prefixes (versions, claims) while
    # this one runs, and a stale listing would hide them.
    if protocol == "s3":
        import s3fs

        return s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True)
    import gcsfs

    emulated = bool(os.environ.get("STORAGE_EMULATOR_HOST"))
    return gcsfs.GCSFileSystem(
        token="anon" if emulated else None, use_listings_cache=False, skip_instance_cache=True
    )


@functools.cache
def _local():
    from fsspec.implementations.local import LocalFileSystem

    return LocalFileSystem()


def gcs_client():
    """google-cloud-storage, for the one thing gcsfs does not offer: a write conditional on
    an object's generation (:func:`update`)."""
    return _gcs_client(*_store_environment())


@functools.cache
def _gcs_client(*environment: str | None):
    from google.cloud import storage

    return storage.Client()


def list_files(root: str) -> list[str]:
    """Every file under ``root`` as a path relative to it, sorted, hidden names skipped."""
    if is_remote(root):
        fs, path = _filesystem(root)
        prefix = path.rstrip("/") + "/"
        names = (found[len(prefix) :] for found in fs.find(prefix) if found.startswith(prefix))
    else:
        base = Path(root)
        names = (p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    return sorted(n for n in names if n and not any(part.startswith(".") for part in n.split("/")))


def modified_at(uri: str) -> datetime:
    """When the file last changed, in UTC."""
    if is_remote(uri):
        fs, path = _filesystem(uri)
        modified = fs.modified(path)
        return modified if modified.tzinfo else modified.replace(tzinfo=timezone.utc)
    return datetime.fromtimestamp(Path(uri).stat().st_mtime, tz=timezone.utc)


def stat(uri: str) -> tuple[int, datetime, str]:
    """The file's size, when it last changed (UTC) and the store's tag of its contents (GCS
    generation and MD5, S3 ETag; empty locally, where size and time are all there is)."""
    if not is_remote(uri):
        facts = Path(uri).stat()
        return facts.st_size, datetime.fromtimestamp(facts.st_mtime, tz=timezone.utc), ""
    fs, path = _filesystem(uri)
    info = fs.info(path)
    tag = ":".join(
        str(info[key]) for key in ("generation", "md5Hash", "ETag") if info.get(key) is not None
    )
    return int(info["size"]), modified_at(uri), tag


def read_bytes(uri: str) -> bytes:
    if is_remote(uri):
        fs, path = _filesystem(uri)
        return fs.cat_file(path)
    return Path(uri).read_bytes()


def is_dir(uri: str) -> bool:
    if is_remote(uri):
        fs, path = _filesystem(uri)
        return fs.isdir(path)
    return Path(uri).is_dir()


def exists(uri: str) -> bool:
    if is_remote(uri):
        fs, path = _filesystem(uri)
        return fs.exists(path)
    return Path(uri).exists()


def subfolders(uri: str) -> list[str]:
    """Names of the folders directly under ``uri`` (prefixes, on a store)."""
    if is_remote(uri):
        fs, path = _filesystem(uri)
        if not fs.isdir(path):
            return []
        entries = fs.ls(path, detail=True)
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in entries if _is_folder(e))
    folder = Path(uri)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _is_folder(entry: dict) -> bool:
    return entry.get("type") == "directory"


def upload_file(local_path: str | Path, uri: str) -> None:
    fs, path = _filesystem(uri)
    if not is_remote(uri):
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # a store has no folders to make
    fs.put_file(str(local_path), path)


def upload_folder(local_dir: str | Path, uri: str, last: str | None = None) -> None:
    """Copies every file under ``local_dir`` to ``uri`` on a store, keeping relative paths; the
    file named ``last`` (relative) goes after all others, so its presence says the rest is
    there."""
    local_dir = Path(local_dir)
    files = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
    files.sort(key=lambda relative: relative == last)
    for relative in files:
        upload_file(local_dir / relative, join(uri, relative))


def download_folder(uri: str, local_dir: str | Path) -> Path:
    """Copies every file under ``uri`` into ``local_dir``, keeping relative paths."""
    local_dir = Path(local_dir)
    for relative in list_files(uri):
        target = local_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fs, path = _filesystem(join(uri, relative))
        fs.get_file(path, str(target))
    return local_dir


def mirror_folder(local_dir: str | Path, uri: str) -> None:
    """Makes ``uri`` hold what ``local_dir`` holds: uploads every file (hidden ones too), then
    removes what is gone locally, so a reader never finds fewer files than the last mirror."""
    local_dir = Path(local_dir)
    present = set()
    if local_dir.is_dir():
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
            relative = path.relative_to(local_dir).as_posix()
            present.add(relative)
            upload_file(path, join(uri, relative))
    fs, root = _filesystem(uri)
    prefix = root.rstrip("/") + "/"
    for found in fs.find(prefix):
        if found[len(prefix) :] not in present:
            fs.rm_file(found)


def create_exclusively(uri: str) -> bool:
    """Creates an empty file only if none exists; False if one did. On a store this is one
    conditional request (GCS ``ifGenerationMatch=0``, S3 ``If-None-Match: *``)."""
    if not is_remote(uri):
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
        try:
            Path(uri).open("xb").close()
        except FileExistsError:
            return False
        return True
    fs, path = _filesystem(uri)
    try:
        fs.pipe_file(path, b"", mode="create")
    except FileExistsError:
        return False
    return True


def update(uri: str, change: Callable[[bytes | None], bytes]) -> bytes:
    """Replaces the file with ``change(its content, or None when absent)`` and returns what was
    written. Concurrent updates are never lost: each is written only if the file is still as
    it was read (GCS generation, S3 ETag), else it is read again and ``change`` reapplied;
    local files are updated under an exclusive ``flock``."""
    name = scheme(uri)
    if not name:
        return _update_locally(Path(uri), change)
    attempt_once = _update_on_gcs if name == "gs" else _update_on_s3
    for attempt in range(UPDATE_ATTEMPTS):
        written = attempt_once(uri, change)
        if written is not None:
            return written
        time.sleep(random.uniform(0, 0.05 * 2 ** min(attempt, 5)))
    raise ConcurrentUpdateError(
        f"{uri} kept changing under {UPDATE_ATTEMPTS} attempts to update it; try again."
    )


def _update_locally(path: Path, change: Callable[[bytes | None], bytes]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        try:
            data = change(path.read_bytes() if path.exists() else None)
            write_bytes(str(path), data)
            return data
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)


def _update_on_s3(uri: str, change: Callable[[bytes | None], bytes]) -> bytes | None:
    fs, path = _filesystem(uri)
    try:
        etag = fs.info(path)["ETag"]
        # Read after the ETag: if the object changed in between, the write below is refused.
        current = fs.cat_file(path)
    except FileNotFoundError:
        etag, current = None, None
    data = change(current)
    condition = {"IfMatch": etag} if etag else {"mode": "create"}
    try:
        fs.pipe_file(path, data, **condition)
    except FileExistsError:
        return None
    except OSError as error:
        if _s3_error_code(error) in {"PreconditionFailed", "ConditionalRequestConflict"}:
            return None
        raise
    return data


def _s3_error_code(error: BaseException) -> str | None:
    cause = error.__cause__ or error.__context__
    return getattr(cause, "response", {}).get("Error", {}).get("Code")


def _update_on_gcs(uri: str, change: Callable[[bytes | None], bytes]) -> bytes | None:
    from google.api_core.exceptions import NotFound, PreconditionFailed

    _, bucket_name, key = split_bucket_uri(uri)
    bucket = gcs_client().bucket(bucket_name)
    blob = bucket.get_blob(key)
    generation = blob.generation if blob is not None else 0
    try:
        current = blob.download_as_bytes(if_generation_match=generation) if blob else None
        data = change(current)
        bucket.blob(key).upload_from_string(data, if_generation_match=generation)
    except (PreconditionFailed, NotFound):
        return None
    return data


def delete(uri: str) -> None:
    if is_remote(uri):
        fs, path = _filesystem(uri)
        fs.rm_file(path)
    else:
        Path(uri).unlink()


def write_bytes(uri: str, data: bytes) -> None:
    """Writes a whole file; readers see the old or the new content, never a part."""
    if is_remote(uri):
        fs, path = _filesystem(uri)
        fs.pipe_file(path, data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, path)
