"""Training across processes: two real workers on loopback, each with its own TF_CONFIG, as
Kubeflow's TFJob starts them (one pod per worker, worker 0 the chief)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
from test_hardware import _free_ports, _tf_config

from conftest import IMAGE_SIZE, MOBILENET_WEIGHTS, REPO, needs_weights
from imgclf.components import storage
from imgclf.components.serving import signature
from imgclf.components.training import job_worker, workers
from imgclf.components.training.config import TrainConfig
from imgclf.components.transform import features

pytestmark = pytest.mark.slow


def _config(batch_size: int, weights: str = "none", **where) -> TrainConfig:
    return TrainConfig(
        weights=weights,
        min_head_steps=0,
        alpha=0.25,
        image_size=IMAGE_SIZE,
        epochs=6,
        early_stopping_patience=6,
        fine_tune_epochs=0,
        batch_size=batch_size,
        learning_rate=0.003,
        learning_rate_schedule="constant",
        augmentations="none",
        dropout=0.0,
        **where,
    )


def _start(prepared, model_dir: Path, config: TrainConfig, tf_config: str | None, mirror: str):
    """What each TFJob pod runs, in a process of its own."""
    arguments = [
        *("--examples", prepared["examples"], "--transform", prepared["transform"]),
        *("--model", str(model_dir), "--keras-model", str(model_dir.parent / "keras")),
        *("--checkpoints", mirror, "--settings", json.dumps(asdict(config))),
    ]
    # Each run's temporary folders in one place of its own, to see that none is left behind.
    temporary = model_dir.parent / "tmp"
    temporary.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "TMPDIR": str(temporary)}
    environment.pop("TF_CONFIG", None)
    if tf_config:
        environment["TF_CONFIG"] = tf_config
    return subprocess.Popen(
        [sys.executable, "-m", "imgclf.components.training.job_worker", *arguments],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _start_workers(prepared, model_dir: Path, config: TrainConfig, mirror: str, count=2):
    addresses = [f"localhost:{port}" for port in _free_ports(count)]
    return [
        _start(prepared, model_dir, config, _tf_config(addresses, index), mirror)
        for index in range(count)
    ]


def _finish(process, timeout: float = 300) -> tuple[dict, str]:
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    assert process.returncode == 0, err[-4000:]
    summary = out.strip().splitlines()[-1]
    assert summary.startswith(job_worker.SUMMARY_PREFIX), out[-2000:]
    return json.loads(summary.removeprefix(job_worker.SUMMARY_PREFIX)), err


@needs_weights
def test_two_workers_train_together_like_one_with_their_global_batch(prepared, tmp_path):
    """Both workers take part (each names itself and its steps), their loss is a one-process
    run's at the same global batch within 1e-3 an epoch (the all-reduce adds in another
    order), and only the chief's model is written. The head trains on the frozen ImageNet
    backbone, whose BatchNormalization is in inference mode: from scratch, each replica's
    would normalise by its own half of the batch. The chief rule: tensorflow/python/
    distribute/multi_worker_util.py, is_chief; chief-only saving: TensorFlow's multi-worker
    Keras guide, "Model saving and loading"."""
    weights = str(MOBILENET_WEIGHTS)
    alone_mirror = str(tmp_path / "alone-checkpoints")
    alone = _start(prepared, tmp_path / "alone" / "model", _config(16, weights), None, alone_mirror)
    alone_result, _ = _finish(alone)

    model_dir = tmp_path / "together" / "model"
    mirror = str(tmp_path / "checkpoints")
    started = _start_workers(prepared, model_dir, _config(8, weights), mirror)
    (chief, chief_log), (other, other_log) = [_finish(process) for process in started]

    assert "worker 0 of 2 training processes (chief)" in chief_log
    assert "worker 1 of 2 training processes (not the chief" in other_log
    steps = math.ceil(features.read_counts(prepared["examples"])["train"] / 16)
    for log in (chief_log, other_log):
        assert "global batch 16 (8 per replica)" in log
        assert f"Stage head: 6 epochs of {steps} steps" in log
    assert chief["history"]["loss"] == other["history"]["loss"]  # one loss, all-reduced
    assert chief["history"]["loss"] == pytest.approx(alone_result["history"]["loss"], abs=1e-3)
    assert chief["history"]["loss"][-1] < chief["history"]["loss"][0]

    assert signature.is_saved_model(model_dir)
    written = sorted(
        p.relative_to(tmp_path / "together").as_posix()
        for p in (tmp_path / "together").rglob("saved_model.pb")
    )
    assert written == ["model/saved_model.pb"]
    assert (model_dir.parent / "keras" / "model.keras").is_file()
    leftovers = list((model_dir.parent / "tmp").iterdir())
    assert not leftovers, f"temporary folders left behind: {leftovers}"


def test_killed_workers_restarted_resume_from_the_chiefs_checkpoints(prepared, tmp_path, s3_bucket):
    """kill -9 both workers once the chief has mirrored an epoch to the store; restarted on
    fresh disks, both restore the chief's backup and go on from there (a worker that started
    again from epoch 1 would wait for the chief forever in the all-reduce)."""
    mirror = storage.join(s3_bucket.root, "checkpoints")
    backup = storage.join(mirror, "full", "training_metadata.json")
    started = _start_workers(prepared, tmp_path / "killed", _config(8), mirror)
    deadline = time.monotonic() + 240
    while not storage.exists(backup) and time.monotonic() < deadline:
        for process in started:
            assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.05)
    for process in started:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert storage.exists(backup), "the chief mirrored no epoch before the kill"
    assert not (tmp_path / "killed").exists()

    # Each worker checkpoints to a new temporary folder of its own: a rescheduled pod's disk.
    restarted = _start_workers(prepared, tmp_path / "resumed", _config(8), mirror)
    (chief, chief_log), (other, other_log) = [_finish(process) for process in restarted]
    for log in (chief_log, other_log):
        assert "Resuming stage full after epoch" in log
    assert 0 < len(chief["stages"]) < 6 and other["stages"] == chief["stages"]
    assert signature.is_saved_model(tmp_path / "resumed")


def test_the_chief_is_the_chief_task_or_worker_0(monkeypatch):
    """tensorflow/python/distribute/multi_worker_util.py, is_chief: the task of type chief,
    or worker 0 where the cluster has no chief."""
    addresses = ["localhost:1", "localhost:2"]
    monkeypatch.setenv("TF_CONFIG", _tf_config(addresses, 1))
    assert workers.from_environment() == workers.Worker("worker", 1, 2)
    assert not workers.from_environment().is_chief
    monkeypatch.setenv("TF_CONFIG", _tf_config(addresses, 0))
    assert workers.from_environment().is_chief
    with_chief = {"cluster": {"chief": ["localhost:3"], "worker": addresses}}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({**with_chief, "task": {"type": "worker", "index": 0}})
    )
    assert workers.from_environment().count == 3 and not workers.from_environment().is_chief
    monkeypatch.delenv("TF_CONFIG")
    assert workers.from_environment() == workers.Worker() and workers.Worker().is_chief
