"""Waiting for TF Serving to load versions before a label names them.

TF Serving checks a new ``models.config``'s labels before it loads anything the config asks
for: a label on a version that is not loaded refuses the whole reload
(``ServerCore::ReloadConfig`` calls ``UpdateModelVersionLabelMap`` first; server_core.cc), and
the server retries the same file at every poll (``Server::PollFilesystemAndReloadConfig``). So
a label moves in two writes: first the config that loads the version (the labels unchanged),
then, once every replica has read that and the version is up, the one that moves the label.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

log = logging.getLogger(__name__)

# How long past one config poll to wait, so that every replica has read the config once: a poll
# starts every ``poll_seconds`` and reading a config from a store takes a moment.
_POLL_MARGIN = 1.5
_STATUS_EVERY_SECONDS = 2.0


class VersionNotLoaded(RuntimeError):
    """TF Serving did not report a version AVAILABLE in time, or reported its load failed."""


@dataclass(frozen=True)
class ServingServer:
    """The TF Serving deployment that reads ``models.config``: its REST address (empty: none is
    asked) and how often it polls the config (0: no server reads this root)."""

    url: str = ""
    config_poll_seconds: float = 0
    load_timeout_seconds: float = 900

    @property
    def reads_the_config(self) -> bool:
        return bool(self.url) or self.config_poll_seconds > 0

    def wait_until_loaded(self, model_name: str, versions: set[int], written_at: float) -> None:
        """Returns once every replica has read the config written at ``written_at`` (one poll
        interval and a margin later) and, where the server can be asked, it reports each
        version AVAILABLE (``GET /v1/models/<name>/versions/<v>``, TF Serving's REST API)."""
        if not self.reads_the_config or not versions:
            return
        wait = written_at + self.config_poll_seconds * _POLL_MARGIN - time.time()
        if wait > 0:
            log.info(
                "Waiting %.0f s for every TF Serving replica to read models.config (polled "
                "every %s s) before moving a label to version(s) %s",
                wait,
                self.config_poll_seconds,
                sorted(versions),
            )
            time.sleep(wait)
        if self.url:
            deadline = time.time() + self.load_timeout_seconds
            for version in sorted(versions):
                self._wait_available(model_name, version, deadline)

    def _wait_available(self, model_name: str, version: int, deadline: float) -> None:
        address = f"{self.url.rstrip('/')}/v1/models/{model_name}/versions/{version}"
        state, message = "not reported", ""
        while time.time() < deadline:
            state, message = _version_state(address)
            if state == "AVAILABLE":
                log.info("TF Serving reports %s version %d AVAILABLE", model_name, version)
                return
            if state == "END" and message:
                raise VersionNotLoaded(
                    f"TF Serving at {self.url} failed to load {model_name} version {version}: "
                    f"{message}. models.config keeps its labels on the versions they named."
                )
            time.sleep(_STATUS_EVERY_SECONDS)
        raise VersionNotLoaded(
            f"TF Serving at {self.url} did not report {model_name} version {version} AVAILABLE "
            f"within {self.load_timeout_seconds:.0f} s (last: {state}{': ' if message else ''}"
            f"{message}). models.config keeps its labels on the versions they named; run the "
            "same command again once the version loads."
        )


def _version_state(address: str) -> tuple[str, str]:
    """The version's state (START, LOADING, AVAILABLE, UNLOADING, END; get_model_status.proto)
    and its error message, or why the server could not say."""
    try:
        with urllib.request.urlopen(address, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as error:
        # 404 until the server has read the config that asks for the version.
        return "not reported", f"HTTP {error.code}"
    except (urllib.error.URLError, OSError, ValueError) as error:
        return "not reported", str(error)
    statuses = body.get("model_version_status") or [{}]
    status = statuses[0]
    return status.get("state", "not reported"), (status.get("status") or {}).get(
        "error_message", ""
    )
