"""TF Serving's rules for ``models.config``, as replicas that poll a serving root.

No ``tensorflow_model_server`` binary installs here (it ships as a Docker image and a Debian
package from Google's own apt repository), so tests run these replicas, which apply the rules of
tensorflow/serving at commit 9d981c5c (2026-07-30) to the files our code writes:

- ``Server::PollFilesystemAndReloadConfig`` (model_servers/server.cc:165-180) reads the file
  every ``--model_config_file_poll_wait_seconds`` and hands it to ``ServerCore::ReloadConfig``;
  a refused config is only logged, and the same file is tried again at the next poll.
- ``ServerCore::ReloadConfig`` (model_servers/server_core.cc:476-540) stores the new config,
  then checks its labels (``UpdateModelVersionLabelMap``) *before* it adds or updates any
  model: a refused config loads nothing it asks for.
- ``UpdateModelVersionLabelMap`` (server_core.cc:549-590): a label may name only a version
  whose manager state is kAvailable, unless ``--allow_version_labels_for_unavailable_models``
  is set and the label is not already assigned to another version.
- The availability-preserving version policy (core/availability_preserving_policy.h, the
  default) unloads a version the config no longer asks for only once the ones it asks for
  are available.
- REST status: ``GET /v1/models/<name>[/versions/<v>|/labels/<label>]`` returns
  ``{"model_version_status": [{"version", "state", "status"}]}`` (get_model_status.proto;
  model_servers/http_rest_api_handler.cc), 404 when the version or label is unknown.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

LOADING, AVAILABLE = "LOADING", "AVAILABLE"


@dataclass
class Replica:
    """One TF Serving process reading ``<root>/models.config``; a version takes
    ``polls_to_load`` polls to load."""

    root: Path
    allow_labels_for_unavailable: bool = True
    polls_to_load: int = 2
    config: model_server_config_pb2.ModelServerConfig | None = None
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    states: dict[str, dict[int, str]] = field(default_factory=dict)
    loading: dict[tuple[str, int], int] = field(default_factory=dict)
    refusals: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def poll(self) -> None:
        with self.lock:
            self._advance_loads()
            path = self.root / "models.config"
            if not path.exists():
                return
            config = model_server_config_pb2.ModelServerConfig()
            text_format.Parse(path.read_text(), config)
            self.config = config
            refusal = self._label_refusal(config)
            if refusal:
                self.refusals.append(refusal)
                return
            self.labels = {
                entry.name: dict(entry.version_labels) for entry in config.model_config_list.config
            }
            for entry in config.model_config_list.config:
                self._aspire(entry)

    def state_of(self, model: str, version: int) -> str | None:
        with self.lock:
            return self.states.get(model, {}).get(version)

    def _label_refusal(self, config) -> str:
        for entry in config.model_config_list.config:
            assigned = self.labels.get(entry.name, {})
            for label, version in entry.version_labels.items():
                moves = label in assigned and assigned[label] != version
                if self.allow_labels_for_unavailable and not moves:
                    continue
                if self.states.get(entry.name, {}).get(version) != AVAILABLE:
                    return (
                        f"Request to assign label to version {version} of model {entry.name}, "
                        "which is not currently available for inference"
                    )
        return ""

    def _aspire(self, entry) -> None:
        on_disk = sorted(
            int(p.name)
            for p in (self.root / entry.name).glob("*")
            if p.name.isdigit() and (p / "saved_model.pb").exists()
        )
        policy = entry.model_version_policy
        if policy.HasField("specific"):
            aspired = set(policy.specific.versions) & set(on_disk)
        else:
            aspired = set(on_disk[-(policy.latest.num_versions or 1) :])
        states = self.states.setdefault(entry.name, {})
        for version in aspired - set(states):
            states[version] = LOADING
            self.loading[(entry.name, version)] = self.polls_to_load
        if all(states.get(v) == AVAILABLE for v in aspired):
            for version in set(states) - aspired:
                del states[version]

    def _advance_loads(self) -> None:
        for (model, version), polls_left in list(self.loading.items()):
            if polls_left <= 1:
                self.states[model][version] = AVAILABLE
                del self.loading[(model, version)]
            else:
                self.loading[(model, version)] = polls_left - 1


class Deployment:
    """Replicas polling every ``interval`` seconds, out of step with each other, behind one
    REST address (a Service: each request goes to the next replica)."""

    def __init__(self, root: Path, replicas: int = 2, interval: float = 0.2, **options):
        self.replicas = [Replica(Path(root), **options) for _ in range(replicas)]
        self.interval = interval
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._poll_forever, args=(r, i), daemon=True)
            for i, r in enumerate(self.replicas)
        ]
        self._next = 0
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._http.server_port}"

    def __enter__(self) -> Deployment:
        for thread in self._threads:
            thread.start()
        threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._http.shutdown()
        for thread in self._threads:
            thread.join()

    @property
    def refusals(self) -> list[str]:
        return [refusal for replica in self.replicas for refusal in replica.refusals]

    def settle(self, polls: int = 6) -> None:
        time.sleep(self.interval * polls)

    def _poll_forever(self, replica: Replica, index: int) -> None:
        self._stop.wait(self.interval * index / len(self.replicas))
        while not self._stop.is_set():
            replica.poll()
            self._stop.wait(self.interval)

    def _answer(self, path: str) -> tuple[int, dict]:
        replica = self.replicas[self._next % len(self.replicas)]
        self._next += 1
        match = re.fullmatch(r"/v1/models/([^/]+)(?:/(versions|labels)/([^/]+))?", path)
        if not match:
            return 404, {"error": "Malformed request"}
        model, kind, key = match.groups()
        with replica.lock:
            if kind == "labels":
                key = replica.labels.get(model, {}).get(key)
            states = replica.states.get(model, {})
            versions = sorted(states) if kind is None else [int(key)] if key is not None else []
            found = [v for v in versions if v in states]
            if not found:
                return 404, {"error": f"Servable not found for request: {path}"}
            return 200, {
                "model_version_status": [
                    {"version": str(v), "state": states[v], "status": {"error_code": "OK"}}
                    for v in found
                ]
            }

    def _handler(self):
        deployment = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                status, body = deployment._answer(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        return Handler
