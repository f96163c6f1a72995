import threading
from pathlib import Path

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from components import serving, serving_layout
from components.push import WARMUP_FILE, push


def _visible_entries(serving_root, model_name):
    return sorted(p.name for p in (Path(serving_root) / model_name).iterdir())


def test_pushes_get_growing_versions_with_warmup_requests(trained_model, prepared, tmp_path):
    root = str(tmp_path / "serving")
    first = push(trained_model, root, "colours", prepared["validated"])
    second = push(trained_model, root, "colours", prepared["validated"])

    assert (first.version, second.version) == (1, 2)
    assert second.path == str(Path(root) / "colours" / "2")
    assert _visible_entries(root, "colours") == ["1", "2"]  # no staging left behind
    assert serving.is_saved_model(second.path)
    assert (Path(second.path) / "assets.extra" / "data_profile.json").is_file()
    assert serving_layout.latest_version(root, "colours") == (2, second.path)


def test_warmup_requests_replay_through_the_pushed_signature(trained_model, prepared, tmp_path):
    pushed = push(trained_model, str(tmp_path / "serving"), "colours", prepared["validated"])
    warmup = Path(pushed.path) / "assets.extra" / WARMUP_FILE
    model = serving.ServedModel(pushed.path)
    replayed = 0
    for record in tf.data.TFRecordDataset(str(warmup)):
        log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
        request = log.predict_log.request
        assert request.model_spec.name == "colours"
        assert request.model_spec.signature_name == serving.SIGNATURE_NAME
        images = tf.make_ndarray(request.inputs[serving.INPUT_KEY]).tolist()
        outputs = model.predict(images)
        assert outputs["scores"].shape == (len(images), 3)
        replayed += 1
    assert replayed == 2


def test_concurrent_publishes_get_distinct_versions(tmp_path):
    root = str(tmp_path / "serving")
    staged = []
    for i in range(6):
        folder = serving_layout.staging_dir(root, "m")
        (folder / "saved_model.pb").write_text(str(i))
        staged.append(folder)
    results = []
    barrier = threading.Barrier(len(staged))

    def publish(folder):
        barrier.wait()
        results.append(serving_layout.publish(str(folder), root, "m"))

    threads = [threading.Thread(target=publish, args=(f,)) for f in staged]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(version for version, _ in results) == [1, 2, 3, 4, 5, 6]
    contents = {(Path(path) / "saved_model.pb").read_text() for _, path in results}
    assert contents == {str(i) for i in range(6)}  # nothing clobbered


def test_a_failed_push_leaves_no_version(trained_model, tmp_path):
    root = tmp_path / "serving"
    with pytest.raises(FileNotFoundError):
        push(trained_model, str(root), "colours", str(tmp_path / "no-manifest-here"))
    assert _visible_entries(root, "colours") == []
    with pytest.raises(FileNotFoundError, match="not a SavedModel"):
        push(str(tmp_path), str(root), "colours", str(tmp_path))


def test_versions_ignore_what_tf_serving_ignores(tmp_path):
    model_root = tmp_path / "m"
    for name in ("1", "10", "2", ".staging-x", "notes", "3.bak"):
        (model_root / name).mkdir(parents=True)
    assert serving_layout.list_versions(str(tmp_path), "m") == [1, 2, 10]
    assert serving_layout.latest_version(str(tmp_path), "m")[0] == 10
    assert serving_layout.latest_version(str(tmp_path), "absent") is None
