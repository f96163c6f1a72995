"""TF Serving's ``models.config``: which versions of each model are served, and their labels.

One file at ``<serving_root>/models.config``, for ``tensorflow_model_server
--model_config_file=... --model_config_file_poll_wait_seconds=60``. A model is either unpinned
(serve the latest version, labelled ``stable``) or pinned by a rollback to a ``stable`` version;
while pinned, each push is served beside it as ``canary`` until it is promoted by pinning it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from imgclf.components import artifacts, storage
from imgclf.components.serving import layout


@dataclass
class ServingState:
    stable: int
    canary: int | None
    pinned: bool


def read_state(serving_root: str, model_name: str) -> ServingState | None:
    """The model's entry in ``models.config``, or None when it has none."""
    return _state_of(_entry(_read(serving_root), model_name))


def _state_of(entry) -> ServingState | None:
    if entry is None or "stable" not in entry.version_labels:
        return None
    return ServingState(
        stable=entry.version_labels["stable"],
        canary=entry.version_labels.get("canary"),
        pinned=entry.model_version_policy.HasField("specific"),
    )


def record_push(serving_root: str, model_name: str, version: int) -> ServingState:
    """After a push: unpinned, the new version is served as ``stable``; pinned, it is served
    as ``canary`` beside the pinned ``stable``."""

    def after_push(state: ServingState | None) -> ServingState:
        # Of two pushes recorded at once, the higher version is the newer, whichever lands last.
        if state is not None and state.pinned:
            canary = max(version, state.canary or 0)
            return ServingState(stable=state.stable, canary=canary, pinned=True)
        newest = max(version, state.stable) if state is not None else version
        return ServingState(stable=newest, canary=None, pinned=False)

    return _change_state(serving_root, model_name, after_push)


def pin(serving_root: str, model_name: str, version: int) -> ServingState:
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
    pinned = ServingState(stable=version, canary=None, pinned=True)
    return _change_state(serving_root, model_name, lambda _: pinned)


def served_version(serving_root: str, model_name: str) -> tuple[int, str] | None:
    """The version TF Serving serves as ``stable``: the pinned one, else the newest complete."""
    state = read_state(serving_root, model_name)
    if state is not None and state.pinned:
        return state.stable, storage.join(serving_root, model_name, str(state.stable))
    return layout.latest_version(serving_root, model_name)


def protected_versions(serving_root: str, model_name: str) -> set[int]:
    """Versions that retention must keep: the labelled ones."""
    state = read_state(serving_root, model_name)
    if state is None:
        return set()
    return {state.stable} | ({state.canary} if state.canary else set())


def _change_state(
    serving_root: str, model_name: str, decide: Callable[[ServingState | None], ServingState]
) -> ServingState:
    """Rewrites the model's entry as ``decide(its state now)``. The file is shared by every
    model under the root and by concurrent pushes, so the change is applied to what the file
    holds at the moment of writing (``storage.update``): another writer's entry is never lost."""
    decided = []

    def change(current: bytes | None) -> bytes:
        config = _parse(current)
        state = decide(_state_of(_entry(config, model_name)))
        _set_entry(config, serving_root, model_name, state)
        decided[:] = [state]
        return text_format.MessageToString(config).encode()

    storage.update(storage.join(serving_root, artifacts.MODELS_CONFIG), change)
    return decided[0]


def _set_entry(config, serving_root: str, model_name: str, state: ServingState) -> None:
    entry = _entry(config, model_name) or config.model_config_list.config.add()
    entry.Clear()
    entry.name = model_name
    entry.base_path = storage.join(serving_root, model_name)
    entry.model_platform = "tensorflow"
    if state.pinned:
        versions = sorted({state.stable} | ({state.canary} if state.canary else set()))
        entry.model_version_policy.specific.versions.extend(versions)
    else:
        entry.model_version_policy.latest.num_versions = 1
    entry.version_labels["stable"] = state.stable
    if state.canary:
        entry.version_labels["canary"] = state.canary


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
