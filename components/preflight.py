"""The preflight: what can be known to fail before any step reads an image, found in seconds
and reported all at once, each problem one sentence naming its parameter.

It checks every parameter against its declaration and the combinations that cannot work (the
settings' own checks), the data snapshot's format, the data (reachable, a known sample, a
single-label listing where a setting needs one), the serving root (a folder that can be
written), and the backbone with its weights (sizes and options it takes; a weights file built
into it; ImageNet weights in the Keras cache or downloadable). ``imgclf run`` runs it before
kfp.local starts, and the compiled pipeline runs it as its first step, which has no retries.
Nothing is written under ``serving_root``; on an object store, writing is tried with one probe
object beside the model folders, deleted at once.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from imgclf.components import storage
from imgclf.components.parameters import (
    GROUPS,
    NAMED_WEIGHTS,
    SAMPLE_PREFIX,
    SettingsError,
    parameters,
    parse,
)
from imgclf.components.training.config import TrainConfig

log = logging.getLogger(__name__)

# Where Keras Applications download their ImageNet weights from (BASE_WEIGHT_PATH and its
# likes in keras/src/applications/*.py): reachable, train can fetch them.
KERAS_WEIGHTS_ORIGIN = "https://storage.googleapis.com/tensorflow/keras-applications/"
# A store or a host that does not answer in this long counts as unreachable.
TIMEOUT_SECONDS = 5
PROBE_PREFIX = ".imgclf-preflight-"


class PreflightFailed(ValueError):
    """Settings or inputs that cannot work; ``problems`` holds one sentence for each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        listed = "\n".join(f"- {problem}" for problem in problems)
        found = "1 problem" if len(problems) == 1 else f"{len(problems)} problems"
        super().__init__(f"{found} found before any step ran:\n{listed}")


def check(arguments: Mapping[str, Any]) -> None:
    """Raises :class:`PreflightFailed` with every problem of the pipeline's ``arguments``
    (every parameter, typed as declared)."""
    problems = find_problems(arguments)
    if problems:
        raise PreflightFailed(problems)
    log.info("Preflight: the settings, the data, the serving root and the weights are usable")


def find_problems(arguments: Mapping[str, Any]) -> list[str]:
    problems = []
    for group in (*GROUPS, TrainConfig):
        problems += [p for p in _settings_problems(group, arguments) if p not in problems]
    if problems:
        # Locations and weights are looked at only once the settings are valid.
        return problems
    # A store that does not answer takes its client's retries (seconds) to say so: the
    # data, the serving root and the weights are looked at side by side.
    with ThreadPoolExecutor(max_workers=3) as pool:
        looked_at = [
            pool.submit(_data_problems, arguments),
            pool.submit(_serving_root_problems, arguments["serving_root"]),
            pool.submit(_model_problems, TrainConfig(**_values_of(TrainConfig, arguments))),
        ]
        return (
            _snapshot_problems(arguments["data_snapshot"])
            + _workers_problems(arguments)
            + [problem for future in looked_at for problem in future.result()]
        )


def arguments_from_step_input(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's arguments from a KFP step's ``settings`` dict, each parsed back to its
    declared type (KFP substitutes the dict's values as text)."""
    return {p.name: parse(p.type, settings[p.name]) for p in parameters() if p.name in settings}


def _settings_problems(group: type, arguments: Mapping[str, Any]) -> list[str]:
    try:
        group(**_values_of(group, arguments))
    except SettingsError as error:
        return error.problems
    return []


def _values_of(group: type, arguments: Mapping[str, Any]) -> dict[str, Any]:
    names = {declared.name for declared in dataclasses.fields(group)}
    return {name: value for name, value in arguments.items() if name in names}


def _snapshot_problems(data_snapshot: str) -> list[str]:
    from imgclf.components.data.snapshot import parse_snapshot

    if not data_snapshot:
        return []
    try:
        parse_snapshot(data_snapshot)
    except ValueError as error:
        return [str(error)]
    return []


def _workers_problems(arguments: Mapping[str, Any]) -> list[str]:
    """Several workers are a Kubeflow TFJob, which only a pod on a cluster can start: kubelet
    sets KUBERNETES_SERVICE_HOST in every pod (Kubernetes, "Accessing the Kubernetes API from
    a Pod")."""
    workers = arguments.get("workers", 1)
    if workers <= 1 or os.environ.get("KUBERNETES_SERVICE_HOST"):
        return []
    return [
        f"workers: {workers} launches a Kubeflow TFJob of {workers} pods, which needs a "
        "Kubernetes cluster; run the compiled pipeline on one (README: Training across nodes), "
        "or set workers to 1 here."
    ]


def _data_problems(arguments: Mapping[str, Any]) -> list[str]:
    from imgclf.components.data import listings
    from imgclf.components.data.sample import SAMPLE_DIGITS

    data_uri = arguments["data_uri"]
    if data_uri.startswith(SAMPLE_PREFIX):
        if data_uri != SAMPLE_DIGITS:
            return [
                f"data_uri: there is no sample {data_uri!r}; the bundled one is {SAMPLE_DIGITS}."
            ]
        return []
    try:
        found = storage.exists(data_uri)
    except Exception as error:  # noqa: BLE001 - each store's client fails in its own way
        return [f"data_uri: {data_uri} cannot be reached ({_reason(error)})."]
    if not found:
        return [
            f"data_uri: nothing is at {data_uri}; pass a folder of class folders, a .csv or "
            ".jsonl listing, or sample:digits."
        ]
    single_label_settings = _single_label_settings(arguments)
    if not single_label_settings or not listings.is_listing(data_uri):
        return []
    try:
        listed = listings.read_listing(data_uri)
    except ValueError as error:
        return [f"data_uri: {error}"]
    if not any(isinstance(label, list) for _, label, _ in listed):
        return []
    return [
        f"{setting}, but {data_uri} lists several labels per image; {fix}."
        for setting, fix in single_label_settings
    ]


def _single_label_settings(arguments: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The settings given that only single-label data can take, each with its fix."""
    found = []
    if arguments["class_weight"] == "balanced":
        found.append(
            ("class_weight=balanced weighs an image by its one class", "set class_weight=none")
        )
    if arguments["rebalance_to"] > 0:
        found.append(
            (
                f"rebalance_to={arguments['rebalance_to']} copies images of each smaller class",
                "set rebalance_to=0",
            )
        )
    return found


def _serving_root_problems(serving_root: str) -> list[str]:
    if storage.is_remote(serving_root):
        return _store_write_problems(serving_root)
    path = Path(serving_root)
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        return [
            f"serving_root: {existing} is a file, so {serving_root} cannot be a folder; pick a "
            "folder for the served models."
        ]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"serving_root: {existing} cannot be written by this user; pick a writable folder."]
    return []


def _store_write_problems(serving_root: str) -> list[str]:
    """One small object written beside the model folders and deleted: the only way to know
    that the credentials may write there."""
    probe = storage.join(serving_root, f"{PROBE_PREFIX}{uuid.uuid4().hex}")
    try:
        storage.write_bytes(probe, b"")
        storage.delete(probe)
    except Exception as error:  # noqa: BLE001 - each store's client fails in its own way
        return [f"serving_root: {serving_root} cannot be written ({_reason(error)})."]
    return []


def _model_problems(config: TrainConfig) -> list[str]:
    """The backbone's own limits, then its weights: a file is built into the backbone (as
    train will), and ImageNet weights must be in the Keras cache or downloadable."""
    from imgclf.components.training import network

    problems = network.backbone_problems(config)
    if problems or config.weights.lower() == "none":
        return problems
    if config.weights.lower() not in NAMED_WEIGHTS:
        if storage.is_remote(config.weights) and not _exists(config.weights):
            return [f"weights: nothing is at {config.weights}; pass an existing weights file."]
    elif _reachable(KERAS_WEIGHTS_ORIGIN):
        return []
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(TIMEOUT_SECONDS)
    try:
        network.build_backbone(config)
    except (RuntimeError, FileNotFoundError) as error:
        return [str(error)]
    finally:
        socket.setdefaulttimeout(previous)
    return []


def _exists(uri: str) -> bool:
    try:
        return storage.exists(uri)
    except Exception:  # noqa: BLE001 - unreachable counts as absent here
        return False


def _reachable(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS).close()
    except urllib.error.HTTPError:
        return True  # the host answered
    except (OSError, ValueError):
        return False
    return True


def _reason(error: BaseException) -> str:
    """An error's first line, without a traceback (and so without what a client's repr of its
    request would show)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
