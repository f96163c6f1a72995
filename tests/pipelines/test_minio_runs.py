"""The whole DAG on Kubeflow's default store, MinIO (moto's S3 server here), with every step
run as the KFP v2 launcher runs it (tests/launcher.py): the pipeline root
``minio://mlpipeline/v2/artifacts`` (kubeflow/pipelines backend/src/v2/config/env.go,
``defaultPipelineRoot``), serving_root and the checkpoints on the same store."""

import json
import time

import pytest

import emulators
import launcher
from conftest import write_colour_tree

pytestmark = pytest.mark.slow

PIPELINE_ROOT = "minio://mlpipeline/v2/artifacts"
SERVING_ROOT = "s3://mlpipeline/serving"
# The sample at 32 px from scratch: seconds per epoch on a CPU.
FAST = {
    "data_uri": "sample:digits",
    "serving_root": SERVING_ROOT,
    "backbone": "mobilenet",
    "alpha": 0.5,
    "weights": "none",
    "image_size": 32,
    "fine_tune_epochs": 0,
    "learning_rate": 0.002,
    "augmentations": "none",
    "min_accuracy": 0.0,
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return launcher.compile_pipeline(tmp_path_factory.mktemp("compiled"))


@pytest.fixture
def minio():
    with emulators.s3_server() as server:
        server.make_bucket("mlpipeline")
        yield server


def _run(spec, minio, **arguments) -> launcher.PipelineRun:
    try:
        return launcher.PipelineRun(
            spec,
            PIPELINE_ROOT,
            {**FAST, **arguments},
            env=minio.env,
        )
    except launcher.LocalMountsUnavailable as error:
        pytest.skip(str(error))


def _evaluation(minio, result) -> dict:
    uri = result.outputs("evaluate").uri("evaluation")
    return json.loads(minio.filesystem().cat_file(uri.split("://", 1)[1] + "/evaluation.json"))


def test_a_second_run_on_minio_is_judged_against_the_model_the_first_pushed(spec, minio, tmp_path):
    """On 42 photos in the store's own bucket, not the sample: the judging is the point here,
    and every step still reads and writes the store."""
    photos = write_colour_tree(tmp_path / "photos", per_class=14)
    emulators.put_before_the_run(minio, photos, "mlpipeline/photos")
    with _run(spec, minio, data_uri="s3://mlpipeline/photos", epochs=1) as first:
        pushed = first.run_all().outputs("push").metadata("pushed")
    assert pushed["version"] == 1 and pushed["path"] == f"{SERVING_ROOT}/imgclf/1"
    served = minio.filesystem().find("mlpipeline/serving/imgclf/1")
    assert "mlpipeline/serving/imgclf/1/saved_model.pb" in served
    assert minio.filesystem().exists("mlpipeline/serving/models.config")

    with _run(spec, minio, data_uri="s3://mlpipeline/photos", epochs=1) as second:
        result = second.run_all()
    evaluation = _evaluation(minio, result)
    assert evaluation["baseline_version"] == 1
    assert evaluation["baseline"]["accuracy"] > 0
    assert result.outputs("validate").metadata("validated_manifest")["drift_baseline_version"] == 1


def test_a_train_pod_killed_on_minio_is_retried_and_resumes_from_its_checkpoints(spec, minio):
    """The retried pod gets the same executor input (tests/launcher.py, PipelineRun._retried)
    and an empty disk; the epoch backups it needs are on the store."""
    with _run(spec, minio, epochs=6, early_stopping_patience=6) as run:
        run.run_until("train")
        process = run.start("train")
        checkpoints = run.executor_input("train")["outputs"]["artifacts"]["checkpoints"]
        backup = checkpoints["artifacts"][0]["uri"].split("://", 1)[1] + "/full/latest.weights.h5"
        _wait_for(lambda: minio.filesystem().exists(backup), process)
        process.kill()
        with pytest.raises(launcher.StepFailed):
            run.finish("train", process)

        retried = run.finish("train", run.start("train"))
    assert "Resuming stage full after epoch" in run.log("train")
    assert 0 < retried.metadata("model")["epochs"] < 6  # it went on after the backed-up ones


def _wait_for(condition, process, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the step ended before its first backup"
        assert time.monotonic() < deadline, "no backup reached the store in time"
        time.sleep(0.2)
