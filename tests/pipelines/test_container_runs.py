"""`imgclf run --runner docker` refuses what a containerised run cannot do, before it starts.
(The run itself is `make run-containers`, which CI runs once `make image` has built the image.)
"""

from imgclf.pipelines import cli


def test_a_local_serving_root_outside_the_pipeline_root_is_refused(tmp_path, capsys):
    """kfp.local's DockerRunner mounts the pipeline root and nothing else into each step's
    container (kfp/local/docker_task_handler.py, ``get_volumes_to_mount``), so a model pushed
    elsewhere would stay inside the container and vanish with it."""
    args = ["run", "--runner", "docker", "--pipeline-root", str(tmp_path / "runs")]
    code = cli.main([*args, "--serving-dir", str(tmp_path / "models")])
    assert code == 2
    error = capsys.readouterr().err
    assert f"serving_root={tmp_path / 'models'}" in error and "sees only its pipeline root" in error
    assert not (tmp_path / "models").exists()


def test_no_container_api_is_one_sentence_naming_how_to_start_one(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'absent.sock'}")
    root = tmp_path / "runs"
    args = ["run", "--runner", "docker", "--pipeline-root", str(root)]
    assert cli.main([*args, "--serving-dir", str(root / "serving")]) == 2
    error = capsys.readouterr().err
    assert "no Docker-compatible API answers" in error and "podman-setup.sh start" in error


def test_the_held_entrypoint_runs_the_step_unchanged_and_keeps_its_exit_status():
    """The entrypoint only delays the step: arguments arrive intact and the status is its."""
    import subprocess

    from imgclf.pipelines.local import HELD_ENTRYPOINT

    echoed = subprocess.run(
        [*HELD_ENTRYPOINT, "printf", "%s|", "a b", "$HOME"], capture_output=True
    )
    assert echoed.stdout == b"starting printf\na b|$HOME|"
    assert subprocess.run([*HELD_ENTRYPOINT, "sh", "-c", "exit 3"]).returncode == 3
