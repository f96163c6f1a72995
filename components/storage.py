"""File I/O for local paths and ``gs://`` URIs, and what counts as either.

Steps address data by URI so that the same code reads a local folder in a test and a bucket on
a cluster. Google Cloud Storage goes through google-cloud-storage with credentials from the
environment (workload identity or ``GOOGLE_APPLICATION_CREDENTIALS``).
"""

from __future__ import annotations

import functools
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path

GCS_SCHEME = "gs://"
SUPPORTED = "a local path or gs://BUCKET/PATH"
# "s3:", "ftp:", "minio:": what a URI's scheme looks like (RFC 3986), before its "//".
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
# GCS bucket names: 3 to 63 lowercase letters, digits, dots, dashes and underscores.
_GCS_URI = re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,61}[a-z0-9](/.*)?$")


def is_gcs(uri: str) -> bool:
    return uri.startswith(GCS_SCHEME)


def location_error(uri: str) -> str | None:
    """Why ``uri`` is no location this code can read and write, in one sentence, or None.

    Anything with a scheme but ``gs://`` is refused here, before any work: a path such as
    ``s3:/bucket`` taken as local would quietly write to the pod's own disk."""
    if uri.startswith("gs:"):
        if _GCS_URI.match(uri):
            return None
        return f"{uri!r} is not a gs://BUCKET/PATH URI; supported: {SUPPORTED}."
    if _SCHEME.match(uri):
        scheme = uri.split(":", 1)[0]
        return f"{uri!r}: the scheme {scheme}: is not supported; supported: {SUPPORTED}."
    if not uri.strip():
        return f"an empty location; supported: {SUPPORTED}."
    return None


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``."""
    bucket, _, blob = uri[len(GCS_SCHEME) :].partition("/")
    return bucket, blob


@functools.cache
def gcs_client():
    from google.cloud import storage

    return storage.Client()


def join(base: str, *parts: str) -> str:
    if is_gcs(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(base, *parts)


def durable_location(artifact_uri: str, local_path: str) -> str:
    """Where a step should write files that must outlive it if it is killed: straight to the
    artifact's URI when this code can write there (``gs://`` or a local path), otherwise the
    local path that KFP uploads only when the step succeeds."""
    if is_gcs(artifact_uri) or "://" not in artifact_uri:
        return artifact_uri
    logging.getLogger(__name__).warning(
        "Cannot write to %s while the step runs; files in %s survive only if the step succeeds",
        artifact_uri,
        local_path,
    )
    return local_path


def list_files(root: str) -> list[str]:
    """Every file under ``root`` as a path relative to it, sorted, hidden names skipped."""
    if is_gcs(root):
        bucket, prefix = split_gcs_uri(root.rstrip("/") + "/")
        names = (
            blob.name[len(prefix) :]
            for blob in gcs_client().list_blobs(bucket, prefix=prefix)
            if not blob.name.endswith("/")
        )
    else:
        base = Path(root)
        names = (p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    return sorted(n for n in names if not any(part.startswith(".") for part in n.split("/")))


def modified_at(uri: str) -> datetime:
    """When the file last changed, in UTC."""
    if is_gcs(uri):
        bucket, name = split_gcs_uri(uri)
        blob = gcs_client().bucket(bucket).get_blob(name)
        if blob is None:
            raise FileNotFoundError(uri)
        return blob.updated
    return datetime.fromtimestamp(Path(uri).stat().st_mtime, tz=timezone.utc)


def read_bytes(uri: str) -> bytes:
    if is_gcs(uri):
        bucket, blob = split_gcs_uri(uri)
        return gcs_client().bucket(bucket).blob(blob).download_as_bytes()
    return Path(uri).read_bytes()


def is_dir(uri: str) -> bool:
    if is_gcs(uri):
        bucket, prefix = split_gcs_uri(uri.rstrip("/") + "/")
        return any(True for _ in gcs_client().list_blobs(bucket, prefix=prefix, max_results=1))
    return Path(uri).is_dir()


def exists(uri: str) -> bool:
    if is_gcs(uri):
        bucket, blob = split_gcs_uri(uri)
        return gcs_client().bucket(bucket).blob(blob).exists()
    return Path(uri).exists()


def subfolders(uri: str) -> list[str]:
    """Names of the folders directly under ``uri`` (prefixes, on GCS)."""
    if is_gcs(uri):
        bucket, prefix = split_gcs_uri(uri.rstrip("/") + "/")
        listing = gcs_client().list_blobs(bucket, prefix=prefix, delimiter="/")
        for _ in listing:  # the prefixes are known once the pages are read
            pass
        return sorted(p[len(prefix) :].rstrip("/") for p in listing.prefixes)
    folder = Path(uri)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def upload_file(local_path: str | Path, uri: str) -> None:
    bucket, blob = split_gcs_uri(uri)
    gcs_client().bucket(bucket).blob(blob).upload_from_filename(str(local_path))


def create_exclusively(uri: str) -> bool:
    """Creates an empty object only if none exists (a GCS precondition); False if one did."""
    from google.api_core.exceptions import PreconditionFailed

    bucket, blob = split_gcs_uri(uri)
    try:
        gcs_client().bucket(bucket).blob(blob).upload_from_string(b"", if_generation_match=0)
    except PreconditionFailed:
        return False
    return True


def download_folder(uri: str, local_dir: str | Path) -> Path:
    """Copies every object under ``uri`` into ``local_dir``, keeping relative paths."""
    local_dir = Path(local_dir)
    for relative in list_files(uri):
        target = local_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(join(uri, relative)))
    return local_dir


def delete(uri: str) -> None:
    if is_gcs(uri):
        bucket, blob = split_gcs_uri(uri)
        gcs_client().bucket(bucket).blob(blob).delete()
    else:
        Path(uri).unlink()


def write_bytes(uri: str, data: bytes) -> None:
    """Writes a whole file; readers see the old or the new content, never a part."""
    if is_gcs(uri):
        bucket, blob = split_gcs_uri(uri)
        gcs_client().bucket(bucket).blob(blob).upload_from_string(data)
        return
    path = Path(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, path)
