"""TF Serving's ``models.config``: which versions of each model are served, and their labels.

One file at ``<serving_root>/models.config``, for ``tensorflow_model_server
--model_config_file=... --model_config_file_poll_wait_seconds=60``. A model is either unpinned
(TF Serving's own default: the newest version is served, no labels) or pinned by a rollback to
one version labelled ``stable``; while pinned, each push is served beside it as ``canary`` until
it is promoted by pinning it.

TF Serving assigns a label only to a version it has loaded, checks labels before it loads what a
config asks for, and retries a refused config at every poll (``server_status``). So a change of
labels is written in two steps: the config that also loads the versions the new labels name
(the old labels kept), then, once the server has them, the config that moves the labels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from imgclf.components import artifacts, storage
from imgclf.components.serving import layout
from imgclf.components.serving.server_status import ServingServer

log = logging.getLogger(__name__)

NO_SERVER = ServingServer()


@dataclass(frozen=True)
class ServingState:
    """What the labels say: unpinned (``pinned`` None: the newest version serves) or pinned to
    one ``stable`` version with an optional ``canary``."""

    pinned: int | None = None
    canary: int | None = None

    def labels(self) -> dict[str, int]:
        if self.pinned is None:
            return {}
        return {"stable": self.pinned} | ({"canary": self.canary} if self.canary else {})


def read_state(serving_root: str, model_name: str) -> ServingState | None:
    """The model's entry in ``models.config``, or None when it has none."""
    entry = _entry(_read(serving_root), model_name)
    return None if entry is None else _state_of(entry)


def _state_of(entry) -> ServingState:
    labels = entry.version_labels
    return ServingState(pinned=labels.get("stable"), canary=labels.get("canary"))


def record_push(
    serving_root: str, model_name: str, version: int, server: ServingServer = NO_SERVER
) -> ServingState:
    """After a push: unpinned, TF Serving serves the new version as the newest; pinned, it is
    served as ``canary`` beside the pinned ``stable``."""

    def after_push(state: ServingState | None) -> ServingState:
        if state is None or state.pinned is None:
            return ServingState()
        # Of two pushes recorded at once, the higher version is the newer, whichever lands last.
        return ServingState(pinned=state.pinned, canary=max(version, state.canary or 0))

    return _change_state(serving_root, model_name, after_push, server)


def pin(
    serving_root: str, model_name: str, version: int, server: ServingServer = NO_SERVER
) -> ServingState:
    """Rollback (or promotion): serve exactly ``version``, labelled ``stable``."""
    complete = {
        v
        for v in layout.list_versions(serving_root, model_name)
        if storage.exists(storage.join(serving_root, model_name, str(v), artifacts.SAVED_MODEL))
    }
    if version not in complete:
        raise ValueError(
            f"{model_name} has no complete version {version} under {serving_root}; "
            f"versions: {', '.join(map(str, sorted(complete))) or 'none'}."
        )
    pinned = ServingState(pinned=version)
    return _change_state(serving_root, model_name, lambda _: pinned, server)


def served_version(serving_root: str, model_name: str) -> tuple[int, str] | None:
    """The version TF Serving serves to requests without a label: the pinned one, else the
    newest complete."""
    state = read_state(serving_root, model_name)
    if state is not None and state.pinned is not None:
        return state.pinned, storage.join(serving_root, model_name, str(state.pinned))
    return layout.latest_version(serving_root, model_name)


def protected_versions(serving_root: str, model_name: str) -> set[int]:
    """Versions that retention must keep: the ones the config serves (labelled or loading)."""
    entry = _entry(_read(serving_root), model_name)
    if entry is None:
        return set()
    return set(entry.model_version_policy.specific.versions) | set(entry.version_labels.values())


def _change_state(
    serving_root: str,
    model_name: str,
    decide: Callable[[ServingState | None], ServingState],
    server: ServingServer,
) -> ServingState:
    """Rewrites the model's entry as ``decide(its state now)``.

    The file is shared by every model under the root and by concurrent pushes, so each write
    applies the change to what the file holds at that moment (``storage.update``). A label that
    would name a version the server may not have loaded is first preceded by a config that loads
    it, and the server is given the time to (``ServingServer.wait_until_loaded``)."""
    loaded: set[int] = set()
    while True:
        state, pending, written_at = _write_step(serving_root, model_name, decide, server, loaded)
        if not pending:
            return state
        log.info(
            "models.config now also loads %s version(s) %s; their labels move once TF Serving "
            "has them",
            model_name,
            sorted(pending),
        )
        server.wait_until_loaded(model_name, pending, written_at)
        loaded |= pending


def _write_step(
    serving_root: str,
    model_name: str,
    decide: Callable[[ServingState | None], ServingState],
    server: ServingServer,
    loaded: set[int],
) -> tuple[ServingState, set[int], float]:
    """One write towards ``decide``'s state: the state itself when every version its new labels
    name is ``loaded`` (or no server reads the root), else the config that also loads them with
    the labels unchanged. Returns the decided state, the versions still to load and when."""
    outcome: dict = {}

    def change(current: bytes | None) -> bytes:
        config = _parse(current)
        entry = _entry(config, model_name)
        before = None if entry is None else _state_of(entry)
        labels_before = before.labels() if before else {}
        after = decide(before)
        newly_labelled = {
            version
            for label, version in after.labels().items()
            if labels_before.get(label) != version
        }
        pending = newly_labelled - loaded if server.reads_the_config else set()
        if pending:
            listed = _listed_versions(entry, serving_root, model_name)
            versions = listed | set(labels_before.values()) | _versions_of(after)
            _set_entry(config, serving_root, model_name, versions, labels_before)
        else:
            _set_entry(config, serving_root, model_name, _versions_of(after), after.labels())
        outcome.update(state=after, pending=pending, written_at=time.time())
        return text_format.MessageToString(config).encode()

    storage.update(storage.join(serving_root, artifacts.MODELS_CONFIG), change)
    return outcome["state"], outcome["pending"], outcome["written_at"]


def _versions_of(state: ServingState) -> set[int] | None:
    """The versions a state serves; None for TF Serving's latest-version policy."""
    if state.pinned is None:
        return None
    return {state.pinned} | ({state.canary} if state.canary else set())


def _listed_versions(entry, serving_root: str, model_name: str) -> set[int]:
    """What an entry has TF Serving load now: its specific versions, or the newest complete."""
    if entry is None:
        return set()
    if entry.model_version_policy.HasField("specific"):
        return set(entry.model_version_policy.specific.versions)
    newest = layout.latest_version(serving_root, model_name)
    return {newest[0]} if newest else set()


def _set_entry(
    config, serving_root: str, model_name: str, versions: set[int] | None, labels: dict[str, int]
) -> None:
    entry = _entry(config, model_name) or config.model_config_list.config.add()
    entry.Clear()
    entry.name = model_name
    entry.base_path = storage.join(serving_root, model_name)
    entry.model_platform = "tensorflow"
    if versions is None:
        entry.model_version_policy.latest.num_versions = 1
    else:
        entry.model_version_policy.specific.versions.extend(sorted(versions))
    for label, version in labels.items():
        entry.version_labels[label] = version


def _read(serving_root: str) -> model_server_config_pb2.ModelServerConfig:
    path = storage.join(serving_root, artifacts.MODELS_CONFIG)
    return _parse(storage.read_bytes(path) if storage.exists(path) else None)


def _parse(text: bytes | None) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    if text:
        text_format.Parse(text.decode(), config)
    return config


def _entry(config, model_name: str):
    for entry in config.model_config_list.config:
        if entry.name == model_name:
            return entry
    return None
