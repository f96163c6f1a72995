import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from conftest import CLASS_COLOURS, REPO, colour_image
from imgclf.components import artifacts, manifest
from imgclf.components.parameters import ServingTarget
from imgclf.components.serving import layout, models_config, signature
from imgclf.components.serving.infra_validation import InfraValidationError, check_servable
from imgclf.components.serving.push import push


def manifest_counts(manifest_dir):
    return manifest.counts_by_split(manifest.read(manifest_dir))


def _visible_entries(serving_root, model_name):
    return sorted(p.name for p in (Path(serving_root) / model_name).iterdir())


def test_pushes_get_growing_versions_with_warmup_requests(trained_model, prepared, tmp_path):
    root = str(tmp_path / "serving")
    first = push(trained_model, ServingTarget(root, "colours"), prepared["validated"])
    second = push(trained_model, ServingTarget(root, "colours"), prepared["validated"])

    assert (first.version, second.version) == (1, 2)
    assert second.path == str(Path(root) / "colours" / "2")
    assert _visible_entries(root, "colours") == ["1", "2"]  # no staging left behind
    assert signature.is_saved_model(second.path)
    assert (Path(second.path) / "assets.extra" / "data_profile.json").is_file()
    assert layout.latest_version(root, "colours") == (2, second.path)
    assert models_config.served_version(root, "colours")[0] == 2  # models.config follows


def test_warmup_requests_replay_through_the_pushed_signature(trained_model, prepared, tmp_path):
    pushed = push(
        trained_model, ServingTarget(str(tmp_path / "serving"), "colours"), prepared["validated"]
    )
    warmup = Path(pushed.path) / "assets.extra" / artifacts.WARMUP_REQUESTS
    model = signature.ServedModel(pushed.path)
    replayed = 0
    for record in tf.data.TFRecordDataset(str(warmup)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "colours"
        assert request.model_spec.signature_name == signature.SIGNATURE_NAME
        images = tf.make_ndarray(request.inputs[signature.INPUT_KEY]).tolist()
        outputs = model.predict(images)
        assert outputs["scores"].shape == (len(images), 3)
        replayed += 1
    assert replayed == 2


def _publish_at_once(staged: list[Path], root: str) -> list[tuple[int, str]]:
    """Publishes every staged folder to model ``m``, one thread each, released together."""
    results = []
    barrier = threading.Barrier(len(staged))

    def publish(folder):
        barrier.wait()
        results.append(layout.publish(str(folder), root, "m"))

    threads = [threading.Thread(target=publish, args=(f,)) for f in staged]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_concurrent_publishes_get_distinct_versions(tmp_path):
    root = str(tmp_path / "serving")
    staged = []
    for i in range(6):
        folder = layout.staging_dir(root, "m")
        (folder / "saved_model.pb").write_text(str(i))
        staged.append(folder)
    results = _publish_at_once(staged, root)
    assert sorted(version for version, _ in results) == [1, 2, 3, 4, 5, 6]
    contents = {(Path(path) / "saved_model.pb").read_text() for _, path in results}
    assert contents == {str(i) for i in range(6)}  # nothing clobbered


def test_a_failed_push_leaves_no_version(trained_model, tmp_path):
    root = tmp_path / "serving"
    with pytest.raises(FileNotFoundError):
        push(trained_model, ServingTarget(str(root), "colours"), str(tmp_path / "no-manifest-here"))
    assert _visible_entries(root, "colours") == []
    with pytest.raises(FileNotFoundError, match="not a SavedModel"):
        push(str(tmp_path), ServingTarget(str(root), "colours"), str(tmp_path))


def test_versions_ignore_what_tf_serving_ignores(tmp_path):
    model_root = tmp_path / "m"
    for name in ("1", "10", "2", "11", ".staging-x", "notes", "3.bak"):
        (model_root / name).mkdir(parents=True)
    for complete in ("1", "2", "10"):
        (model_root / complete / "saved_model.pb").write_bytes(b"pb")
    assert layout.list_versions(str(tmp_path), "m") == [1, 2, 10, 11]
    # 11 has no saved_model.pb: not a model TF Serving could load, so not the baseline.
    assert layout.latest_version(str(tmp_path), "m") == (10, str(model_root / "10"))
    assert layout.latest_version(str(tmp_path), "absent") is None


def test_pushes_to_a_bucket(trained_model, prepared, bucket):
    root = f"{bucket.root}/serving"
    first = push(trained_model, ServingTarget(root, "colours"), prepared["validated"])
    second = push(trained_model, ServingTarget(root, "colours"), prepared["validated"])
    assert (first.version, second.version) == (1, 2)
    assert second.path == f"{root}/colours/2"
    names = bucket.names("serving/colours/2/")
    assert {
        "serving/colours/2/saved_model.pb",
        "serving/colours/2/assets.extra/tf_serving_warmup_requests",
        "serving/colours/2/assets.extra/data_profile.json",
    } <= names
    assert layout.latest_version(root, "colours") == (2, second.path)
    with layout.local_copy(second.path) as local:
        image = colour_image(CLASS_COLOURS["red"], seed=5)
        assert signature.ServedModel(local).predict([image])["scores"].shape == (1, 3)


def test_a_half_uploaded_version_is_skipped_and_not_reused(trained_model, prepared, bucket):
    root = f"{bucket.root}/serving"
    push(trained_model, ServingTarget(root, "colours"), prepared["validated"])
    # A push killed before saved_model.pb, which goes last, was uploaded:
    bucket.put("serving/colours/2/variables/variables.index", b"x")
    assert layout.latest_version(root, "colours")[0] == 1
    assert push(trained_model, ServingTarget(root, "colours"), prepared["validated"]).version == 3


def test_the_model_card_tells_the_story(trained_model, prepared, tmp_path):
    evaluation_dir = tmp_path / "evaluation"
    evaluation_dir.mkdir()
    (evaluation_dir / "evaluation.json").write_text(
        json.dumps(
            {
                "candidate": {"accuracy": 0.9},
                "baseline": None,
                "baseline_version": None,
                "blessed": True,
                "checks": [{"rule": "accuracy >= min_accuracy (0.5)", "passed": True}],
            }
        )
    )
    pushed = push(
        trained_model,
        ServingTarget(str(tmp_path / "serving"), "colours"),
        prepared["validated"],
        str(evaluation_dir),
    )
    card = json.loads((Path(pushed.path) / "assets.extra" / artifacts.MODEL_CARD).read_text())
    assert card["model_name"] == "colours"
    assert card["data"]["images"] == manifest_counts(prepared["validated"])
    assert card["training"]["config"]["backbone"] == "mobilenet"
    assert sorted(card["training"]["class_names"]) == sorted(CLASS_COLOURS)
    assert card["evaluation"]["blessed"] is True
    assert card["pushed_at"].endswith("+00:00")


def test_a_model_that_would_not_serve_is_not_pushed(prepared, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"not a SavedModel")
    root = tmp_path / "serving"
    with pytest.raises(InfraValidationError, match="failed infra validation"):
        push(str(broken), ServingTarget(str(root), "colours"), prepared["validated"])
    assert _visible_entries(root, "colours") == []


def test_infra_validation_replays_warmup_and_refuses_junk(trained_model, prepared, tmp_path):
    pushed = push(
        trained_model, ServingTarget(str(tmp_path / "serving"), "colours"), prepared["validated"]
    )
    assert check_servable(pushed.path) == 2


def _publish_fake_versions(root, count):
    for i in range(count):
        staged = layout.staging_dir(root, "m")
        (staged / "saved_model.pb").write_text(str(i))
        (staged / "variables").mkdir()
        (staged / "variables" / "variables.index").write_text(str(i))
        layout.publish(str(staged), root, "m")


def test_retention_keeps_the_newest_versions(tmp_path):
    root = str(tmp_path / "serving")
    _publish_fake_versions(root, 5)
    assert layout.prune(root, "m", keep=0) == []
    assert layout.prune(root, "m", keep=2) == [1, 2, 3]
    assert _visible_entries(root, "m") == ["4", "5"]


def test_retention_on_a_bucket(bucket):
    root = f"{bucket.root}/serving"
    _publish_fake_versions(root, 3)
    assert layout.prune(root, "m", keep=1) == [1, 2]
    assert layout.list_versions(root, "m") == [3]
    assert layout.latest_version(root, "m")[0] == 3


def _push_in_a_process(trained_model, root, validated, upload_delay=0.0, model_name="colours"):
    """``push`` in a fresh Python process, as a KFP pod runs it; ``upload_delay`` seconds
    after each upload to a store give a test time to kill it between two files."""
    code = (
        "import time\n"
        "from imgclf.components import storage\n"
        "from imgclf.components.parameters import ServingTarget\n"
        "from imgclf.components.serving.push import push\n"
        "upload = storage.upload_file\n"
        "def slow_upload(*args):\n"
        "    upload(*args)\n"
        f"    time.sleep({upload_delay})\n"
        "storage.upload_file = slow_upload\n"
        f"push({trained_model!r}, ServingTarget({root!r}, {model_name!r}), {validated!r})\n"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO)


def _kill_when(process, condition, timeout=120):
    deadline = time.monotonic() + timeout
    while not condition() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()


def test_a_push_killed_midway_leaves_no_version(trained_model, prepared, tmp_path):
    root = tmp_path / "serving"
    process = _push_in_a_process(trained_model, str(root), prepared["validated"])
    _kill_when(process, lambda: any(root.glob("colours/.staging-*/saved_model.pb")))

    assert list(root.glob("colours/.staging-*")), "the kill came before the model was staged"
    assert layout.list_versions(str(root), "colours") == []
    assert all(name.startswith(".") for name in _visible_entries(root, "colours"))
    assert (
        push(trained_model, ServingTarget(str(root), "colours"), prepared["validated"]).version == 1
    )


def test_a_push_to_a_bucket_killed_midway_leaves_no_loadable_version(
    trained_model, prepared, bucket
):
    root = f"{bucket.root}/serving"
    process = _push_in_a_process(trained_model, root, prepared["validated"], upload_delay=0.5)
    _kill_when(process, lambda: bucket.names("serving/colours/1/"))
    names = bucket.names("serving/colours/1/")
    assert names, "the kill came before the upload started"
    assert "serving/colours/1/saved_model.pb" not in names  # TF Serving cannot load it
    assert layout.latest_version(root, "colours") is None
    pushed = push(trained_model, ServingTarget(root, "colours"), prepared["validated"])
    assert pushed.version == 2
    assert layout.latest_version(root, "colours") == (2, pushed.path)


def test_concurrent_publishes_to_a_bucket_get_distinct_versions(bucket, tmp_path):
    root = f"{bucket.root}/serving"
    staged = []
    for i in range(4):
        folder = tmp_path / f"staged-{i}"
        (folder / "variables").mkdir(parents=True)
        (folder / "variables" / "variables.index").write_text(str(i))
        (folder / "saved_model.pb").write_text(str(i))
        staged.append(folder)
    results = _publish_at_once(staged, root)
    assert sorted(version for version, _ in results) == [1, 2, 3, 4]
    contents = {
        bucket.read(f"serving/m/{version}/saved_model.pb").decode() for version, _ in results
    }
    assert contents == {"0", "1", "2", "3"}  # nothing clobbered


def test_concurrent_pushes_to_a_bucket_all_land_and_all_are_recorded(
    trained_model, prepared, bucket
):
    """Three pods push at once, two of one model and one of another: each gets its own version
    and ``models.config`` keeps every update (conditional writes on the store)."""
    root = f"{bucket.root}/serving"
    processes = [
        _push_in_a_process(trained_model, root, prepared["validated"], model_name=name)
        for name in ("colours", "colours", "shapes")
    ]
    assert [process.wait(timeout=300) for process in processes] == [0, 0, 0]
    assert layout.list_versions(root, "colours") == [1, 2]
    assert layout.list_versions(root, "shapes") == [1]
    assert models_config.read_state(root, "colours") == models_config.ServingState()
    assert models_config.read_state(root, "shapes") == models_config.ServingState()
