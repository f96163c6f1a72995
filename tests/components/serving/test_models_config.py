from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from tf_serving import Deployment, Replica

from imgclf.components import artifacts
from imgclf.components.serving import layout, models_config
from imgclf.components.serving.server_status import ServingServer, VersionNotLoaded
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


def test_unpinned_pushes_leave_tf_serving_its_latest_policy(tmp_path):
    """Unpinned, no label is written: a push then needs nothing of the server (a label move
    would, see test_tf_serving_accepts_every_config_of_a_release_cycle)."""
    root = str(tmp_path)
    _versions(root, 2)
    models_config.record_push(root, "m", 2)
    (entry,) = _config(root).model_config_list.config
    assert entry.name == "m" and entry.base_path == str(tmp_path / "m")
    assert entry.model_platform == "tensorflow"
    assert entry.model_version_policy.latest.num_versions == 1
    assert dict(entry.version_labels) == {}
    assert models_config.served_version(root, "m") == (2, str(tmp_path / "m" / "2"))


def test_rollback_pins_stable_and_later_pushes_are_canaries(tmp_path):
    root = str(tmp_path)
    _versions(root, 3)
    models_config.record_push(root, "m", 3)
    models_config.pin(root, "m", 1)
    assert models_config.served_version(root, "m")[0] == 1  # the baseline evaluate uses

    _versions(root, 1)
    state = models_config.record_push(root, "m", 4)
    assert (state.pinned, state.canary) == (1, 4)
    (entry,) = _config(root).model_config_list.config
    assert list(entry.model_version_policy.specific.versions) == [1, 4]
    assert dict(entry.version_labels) == {"stable": 1, "canary": 4}

    models_config.pin(root, "m", 4)  # promote the canary
    assert models_config.read_state(root, "m") == models_config.ServingState(pinned=4)


def _release_cycle(root: Path, server: ServingServer, deployment: Deployment) -> list[str]:
    """Pushes, a rollback, canaries, a promotion and a second rollback, letting the replicas
    poll after each; returns what each step left labelled."""
    steps = []

    def push():
        staged = layout.staging_dir(str(root), "m")
        (staged / "saved_model.pb").write_text("pb")
        version, _ = layout.publish(str(staged), str(root), "m")
        models_config.record_push(str(root), "m", version, server)

    for step in (
        push,
        push,
        lambda: models_config.pin(str(root), "m", 1, server),  # rollback
        push,  # canary 3
        push,  # canary 3 -> 4
        lambda: models_config.pin(str(root), "m", 4, server),  # promote the canary
        lambda: models_config.pin(str(root), "m", 2, server),  # stable 4 -> 2
        push,  # canary 5
    ):
        step()
        deployment.settle()
        steps.append(str(models_config.read_state(str(root), "m")))
    return steps


def test_tf_serving_accepts_every_config_of_a_release_cycle(tmp_path):
    """Every models.config written through a release cycle is accepted by every replica of a
    running TF Serving (rules of server_core.cc's ReloadConfig and UpdateModelVersionLabelMap,
    see tests/tf_serving.py), without --allow_version_labels_for_unavailable_models: each
    label moves only once the replicas have loaded its version."""
    with Deployment(tmp_path, replicas=3, allow_labels_for_unavailable=False) as deployment:
        server = ServingServer(deployment.url, config_poll_seconds=0.4)
        _release_cycle(tmp_path, server, deployment)
        assert deployment.refusals == []
        for replica in deployment.replicas:
            assert replica.labels["m"] == {"stable": 2, "canary": 5}
            assert replica.states["m"] == {2: "AVAILABLE", 5: "AVAILABLE"}


def test_labels_written_at_once_are_refused_by_a_running_server(tmp_path):
    """The rule bites: the same cycle written without waiting (as if no server read the root)
    is refused, even with --allow_version_labels_for_unavailable_models, which covers only
    labels not yet assigned (server_core.cc:556-566): moving canary from 3 to 4 is refused."""
    with Deployment(tmp_path, replicas=2, allow_labels_for_unavailable=True) as deployment:
        _release_cycle(tmp_path, models_config.NO_SERVER, deployment)
        assert any("version 4 of model m" in refusal for refusal in deployment.refusals)


@pytest.mark.parametrize("pinned", [False, True])
def test_a_restarted_server_accepts_the_config_only_with_the_unavailable_labels_flag(
    tmp_path, pinned
):
    """At start-up nothing is loaded, so a config with labels is refused unless TF Serving
    runs with --allow_version_labels_for_unavailable_models (serving_config.md, "Model Version
    Labels"; server_core.cc:556-566); the serving manifests pass it. An unpinned config has no
    labels and needs no flag."""
    _versions(str(tmp_path), 2)
    models_config.record_push(str(tmp_path), "m", 2)
    if pinned:
        models_config.pin(str(tmp_path), "m", 1)
        models_config.record_push(str(tmp_path), "m", 2)
    for flag in (True, False):
        replica = Replica(tmp_path, allow_labels_for_unavailable=flag)
        replica.poll()
        assert bool(replica.refusals) == (pinned and not flag)


def test_a_version_that_never_loads_leaves_the_labels_where_they_were(tmp_path):
    """A label never names a version TF Serving did not report AVAILABLE: the wait gives up
    with a sentence, and the config still loads the old labelled version."""
    _versions(str(tmp_path), 2)
    models_config.pin(str(tmp_path), "m", 1)
    (tmp_path / "m" / "2" / "saved_model.pb").unlink()  # version 2 cannot load
    with Deployment(tmp_path, replicas=1) as deployment:
        deployment.settle()
        server = ServingServer(deployment.url, config_poll_seconds=0.2, load_timeout_seconds=1)
        with pytest.raises(VersionNotLoaded, match="did not report m version 2 AVAILABLE"):
            models_config._change_state(
                str(tmp_path), "m", lambda _: models_config.ServingState(pinned=2), server
            )
        assert dict(_config(tmp_path).model_config_list.config[0].version_labels) == {"stable": 1}
        assert deployment.refusals == []


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
    args = ["rollback", "--serving-dir", str(tmp_path), "--model-name", "m"]
    args += ["--config-poll-seconds", "0", "--to"]
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
        assert {n: models_config.read_state(root, n) for n in names} == dict.fromkeys(
            names, models_config.ServingState()
        ), root
