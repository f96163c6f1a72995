from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from imgclf.components import artifacts
from imgclf.components.serving import layout, models_config
from imgclf.pipelines import cli


def _versions(root, count, model="m"):
    for _ in range(count):
        staged = layout.staging_dir(root, model)
        (staged / "saved_model.pb").write_text("pb")
        layout.publish(str(staged), root, model)


def _config(root) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse((Path(root) / artifacts.MODELS_CONFIG).read_text(), config)
    return config


def test_unpinned_pushes_serve_the_latest_as_stable(tmp_path):
    root = str(tmp_path)
    _versions(root, 2)
    models_config.record_push(root, "m", 2)
    (entry,) = _config(root).model_config_list.config
    assert entry.name == "m" and entry.base_path == str(tmp_path / "m")
    assert entry.model_platform == "tensorflow"
    assert entry.model_version_policy.latest.num_versions == 1
    assert dict(entry.version_labels) == {"stable": 2}
    assert models_config.served_version(root, "m") == (2, str(tmp_path / "m" / "2"))


def test_rollback_pins_stable_and_later_pushes_are_canaries(tmp_path):
    root = str(tmp_path)
    _versions(root, 3)
    models_config.record_push(root, "m", 3)
    models_config.pin(root, "m", 1)
    assert models_config.served_version(root, "m")[0] == 1  # the baseline evaluate uses

    _versions(root, 1)
    state = models_config.record_push(root, "m", 4)
    assert (state.stable, state.canary, state.pinned) == (1, 4, True)
    (entry,) = _config(root).model_config_list.config
    assert list(entry.model_version_policy.specific.versions) == [1, 4]
    assert dict(entry.version_labels) == {"stable": 1, "canary": 4}

    models_config.pin(root, "m", 4)  # promote the canary
    assert models_config.read_state(root, "m").stable == 4


def test_models_keep_their_own_entries(tmp_path):
    root = str(tmp_path)
    _versions(root, 1, "cats")
    _versions(root, 1, "dogs")
    models_config.record_push(root, "cats", 1)
    models_config.record_push(root, "dogs", 1)
    models_config.pin(root, "dogs", 1)
    entries = {e.name: e for e in _config(root).model_config_list.config}
    assert entries["cats"].model_version_policy.HasField("latest")
    assert entries["dogs"].model_version_policy.HasField("specific")


def test_pinning_a_missing_version_names_the_existing_ones(tmp_path):
    _versions(str(tmp_path), 2)
    with pytest.raises(ValueError, match="no complete version 7 .* versions: 1, 2"):
        models_config.pin(str(tmp_path), "m", 7)


def test_retention_keeps_the_pinned_version(tmp_path):
    root = str(tmp_path)
    _versions(root, 5)
    models_config.pin(root, "m", 1)
    protected = frozenset(models_config.protected_versions(root, "m"))
    assert layout.prune(root, "m", keep=2, protected=protected) == [2, 3]
    assert layout.list_versions(root, "m") == [1, 4, 5]


def test_rollback_cli(tmp_path, capsys):
    _versions(str(tmp_path), 2)
    args = ["rollback", "--serving-dir", str(tmp_path), "--model-name", "m", "--to"]
    assert cli.main([*args, "1"]) == 0
    assert "version 1 pinned as stable" in capsys.readouterr().out
    assert cli.main([*args, "9"]) == 1
    assert "no complete version 9" in capsys.readouterr().err


def test_a_bucket_root_gets_its_models_config(bucket):
    root = f"{bucket.root}/serving"
    _versions(root, 2)
    models_config.record_push(root, "m", 2)
    models_config.pin(root, "m", 1)
    text = bucket.read("serving/models.config").decode()
    assert f'base_path: "{root}/m"' in text
    assert models_config.served_version(root, "m") == (1, f"{root}/m/1")


def test_concurrent_pushes_of_many_models_keep_every_entry(bucket, tmp_path):
    """models.config is one file for every model under the root: pushes that record at once
    must all survive (storage.update's conditional writes), on a store and on a path."""
    for root in (f"{bucket.root}/serving", str(tmp_path / "serving")):
        names = [f"model-{i}" for i in range(6)]
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(lambda name, root=root: models_config.record_push(root, name, 1), names))
        assert {n: models_config.read_state(root, n).stable for n in names} == dict.fromkeys(
            names, 1
        ), root
