"""The train step's launcher, through the real ``kubernetes`` client, against a stand-in API
server whose training operator runs each TFJob pod as a local process
(``tests/training_operator.py``): two real workers train, the chief's log streams into the
step's, the model lands on the store, a failed job says why, and no job is left behind."""

import dataclasses
import json
import time
from pathlib import Path

import pytest
from kubernetes import client
from training_operator import TrainingOperator

from conftest import IMAGE_SIZE
from imgclf.components import storage
from imgclf.components.serving import signature
from imgclf.components.training import launcher
from imgclf.components.training.config import TrainConfig

pytestmark = pytest.mark.slow

# What pipelines.tfjob.worker_pod gives on a CPU cluster: the image and the store's endpoint.
CPU_POD = {"containers": [{"image": "imgclf", "env": []}]}
CONFIG = TrainConfig(
    weights="none",
    alpha=0.25,
    image_size=IMAGE_SIZE,
    epochs=2,
    early_stopping_patience=2,
    min_head_steps=0,
    fine_tune_epochs=0,
    batch_size=8,
    augmentations="none",
    workers=2,
)


def _train_on(operator, config, inputs, outputs, log_lines=lambda line: None):
    return launcher.train_on_workers(
        CPU_POD,
        config,
        inputs,
        outputs,
        restarts=0,
        api_client=_api(operator),
        poll_seconds=0.5,
        log_lines=log_lines,
    )


def _api(operator: TrainingOperator):
    configuration = client.Configuration()
    configuration.host = operator.host
    return client.ApiClient(configuration)


def _uris(bucket, prepared) -> tuple[dict, dict]:
    bucket.put_tree(Path(prepared["examples"]), "examples")
    bucket.put_tree(Path(prepared["transform"]), "transform")
    inputs = {name: f"{bucket.root}/{name}" for name in ("examples", "transform")}
    outputs = {name: f"{bucket.root}/{name}" for name in ("model", "keras_model", "checkpoints")}
    return inputs, outputs


def test_two_worker_pods_train_and_the_chief_uploads_the_model(prepared, s3_bucket, tmp_path):
    inputs, outputs = _uris(s3_bucket, prepared)
    chief_log = []
    with TrainingOperator(tmp_path) as operator:
        result = _train_on(operator, CONFIG, inputs, outputs, log_lines=chief_log.append)
        assert operator.jobs == {}, "the finished job was not deleted"
    (created,) = operator.created
    assert created["spec"]["tfReplicaSpecs"]["Worker"]["replicas"] == 2
    assert result.workers == 2 and len(result.stages) == 2
    assert len(result.history["loss"]) == 2  # the chief's record, read back from the store
    assert any("worker 0 of 2 training processes (chief)" in line for line in chief_log)
    assert all(
        line.startswith(f"[{launcher.job_name(outputs['checkpoints'])}-worker-0] ")
        for line in chief_log
    )
    local = storage.download_folder(outputs["model"], tmp_path / "model")
    assert signature.is_saved_model(local)
    assert storage.exists(f"{outputs['keras_model']}/model.keras")


def test_a_failed_job_fails_the_step_with_the_workers_reason(prepared, s3_bucket, tmp_path):
    inputs, outputs = _uris(s3_bucket, prepared)
    inputs["examples"] = f"{s3_bucket.root}/no-examples-here"
    with TrainingOperator(tmp_path) as operator:
        with pytest.raises(RuntimeError) as failed:
            _train_on(operator, CONFIG, inputs, outputs)
        assert operator.jobs == {}, "the failed job was not deleted"
    message = str(failed.value)
    assert "has failed because" in message
    assert "-worker-0 exited with 1 (Error)" in message
    assert f"train failed: Nothing at {inputs['examples']}" in message, message


def _earlier_attempt(operator, inputs: dict, outputs: dict, config: TrainConfig) -> str:
    """The job a killed attempt of the step started, under the same name."""
    name = launcher.job_name(outputs["checkpoints"])
    arguments = [
        *("--examples", inputs["examples"], "--transform", inputs["transform"]),
        *("--model", outputs["model"], "--keras-model", outputs["keras_model"]),
        *("--checkpoints", outputs["checkpoints"]),
        *("--settings", json.dumps(dataclasses.asdict(config))),
    ]
    job = launcher.training_job(CPU_POD, name, "default", 2, arguments, restarts=0)
    jobs = client.CustomObjectsApi(_api(operator))
    jobs.create_namespaced_custom_object(
        launcher.GROUP, launcher.VERSION, "default", launcher.PLURAL, job
    )
    return name


def test_a_retried_step_waits_for_the_job_its_killed_attempt_started(prepared, s3_bucket, tmp_path):
    """The job's name comes from the step's checkpoints URI, the same for its retries: the
    second attempt finds the job running (409 from the API) and waits for it."""
    inputs, outputs = _uris(s3_bucket, prepared)
    config = dataclasses.replace(CONFIG, epochs=1, early_stopping_patience=1)
    with TrainingOperator(tmp_path) as operator:
        _earlier_attempt(operator, inputs, outputs, config)
        result = _train_on(operator, config, inputs, outputs)
        assert len(operator.created) == 1, "a second job was started"
    assert len(result.stages) == 1


def test_a_retried_step_starts_again_a_job_that_failed(prepared, s3_bucket, tmp_path):
    """A failed job of an earlier attempt is not the answer: the retry deletes it and starts
    the job again (here failing again, fast, on the same missing input)."""
    inputs, outputs = _uris(s3_bucket, prepared)
    missing = {**inputs, "examples": f"{s3_bucket.root}/not-yet-written"}
    with TrainingOperator(tmp_path) as operator:
        name = _earlier_attempt(operator, missing, outputs, CONFIG)
        while operator.jobs[("default", name)].conditions()[-1]["type"] != "Failed":
            time.sleep(0.2)
        with pytest.raises(RuntimeError, match="has failed because"):
            _train_on(operator, CONFIG, missing, outputs)
        assert len(operator.created) == 2, "the failed job was taken for the answer"
