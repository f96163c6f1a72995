"""The KFP-launcher harness (tests/launcher.py) against object-store emulators: it must hand a
step what the KFP v2 driver and launcher hand it, and move artifacts when they move them, or
the tests that use it prove nothing about a cluster."""

import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kfp import dsl
from kfp.dsl import Artifact, Input, Output

import emulators
import launcher
from conftest import write_colour_tree

BUCKET = "mlpipeline"
PIPELINE_ROOT = f"minio://{BUCKET}/v2/artifacts"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_step = dsl.component(base_image="python:3.11", install_kfp_package=False)


@_step
def echo_settings(settings: dict) -> dict:
    return settings


@_step
def write(text: str, note: Output[Artifact], folder: Output[Artifact]):
    from pathlib import Path

    Path(note.path).write_text(text)
    note.metadata["characters"] = len(text)
    Path(folder.path, "inner").mkdir(parents=True)
    Path(folder.path, "a.txt").write_text("a")
    Path(folder.path, "inner", "b.txt").write_text("b")


@_step
def read(note: Input[Artifact], folder: Input[Artifact]) -> str:
    from pathlib import Path

    files = sorted(p.relative_to(folder.path).as_posix() for p in Path(folder.path).rglob("*.txt"))
    return f"{Path(note.path).read_text()} {note.metadata['characters']} {files}"


@_step
def fail(note: Output[Artifact]):
    from pathlib import Path

    Path(note.path).write_text("half done")
    raise ValueError("the step broke on purpose")


@_step
def write_then_wait(signals: str, note: Output[Artifact]):
    import time
    from pathlib import Path

    Path(note.path).write_text("written")
    Path(signals, "written").touch()
    while not Path(signals, "go").exists():
        time.sleep(0.05)


@_step
def pick(choice: str) -> str:
    return choice


@_step
def bless(verdict: bool) -> bool:
    return verdict


@dsl.container_component
def greet(note: Output[Artifact], greeting: str = "hello", times: int = 3):
    return dsl.ContainerSpec(
        image="busybox",
        command=["sh", "-c", 'printf "%s %s" "$0" "$1" > "$2"'],
        args=[greeting, times, note.path],
    )


@dsl.pipeline(name="harness-settings")
def settings_pipeline(epochs: int = 3, rate: float = 1e-5, xla: bool = True, name: str = "flip"):
    echo_settings(settings={"epochs": epochs, "rate": rate, "xla": xla, "name": name})


@dsl.pipeline(name="harness-transfers")
def transfers_pipeline(text: str = "hello"):
    written = write(text=text)
    read(note=written.outputs["note"], folder=written.outputs["folder"])


@dsl.pipeline(name="harness-failure")
def failure_pipeline():
    fail()


@dsl.pipeline(name="harness-waiting")
def waiting_pipeline(signals: str):
    write_then_wait(signals=signals)


@dsl.pipeline(name="harness-branches")
def branches_pipeline(trials: int = 0, verdict: bool = False):
    with dsl.If(trials > 0, name="tuning"):
        tuned = pick(choice="tuned")
    with dsl.Else(name="no-tuning"):
        untuned = pick(choice="untuned")
    pick(choice=dsl.OneOf(tuned.output, untuned.output)).set_display_name("train")
    blessed = bless(verdict=verdict)
    with dsl.If(blessed.output == True):  # noqa: E712 - KFP condition
        pick(choice="pushed")


@dsl.pipeline(name="harness-defaults")
def defaults_pipeline():
    greet()


@pytest.fixture(scope="module")
def s3():
    with emulators.s3_server() as server:
        server.make_bucket(BUCKET)
        yield server


@pytest.fixture
def new_run(s3, tmp_path):
    """Makes a run of a small pipeline under minio:// on the S3 emulator; skips where the
    harness cannot create /minio."""
    runs = []

    def make(pipeline, **arguments):
        spec = launcher.compile_pipeline(tmp_path, pipeline)
        try:
            run = launcher.PipelineRun(spec, PIPELINE_ROOT, arguments, env=s3.env)
        except launcher.LocalMountsUnavailable as error:
            pytest.skip(str(error))
        runs.append(run)
        return run

    yield make
    for run in runs:
        run.close()


def _stored(s3, uri: str) -> list[str]:
    """The objects under ``uri`` in the S3 emulator, as minio:// URIs."""
    key = uri.removeprefix("minio://")
    return sorted(f"minio://{found}" for found in s3.filesystem().find(key))


def _task_root(uri: str) -> str:
    return uri.rsplit("/", 1)[0]


@pytest.mark.parametrize(
    "value, text",
    [(3, "3"), (3.0, "3"), (1e-05, "0.00001"), (0.1, "0.1"), (2.5e21, "2500000000000000000000")],
)
def test_numbers_become_text_as_go_formats_them(value, text):
    assert launcher.format_number(value) == text


def test_placeholders_are_replaced_in_args_and_inside_the_executor_input():
    executor_input = {
        "inputs": {
            "parameterValues": {
                "n": 2.0,
                "on": False,
                "settings": {"n": "{{$.inputs.parameters['n']}}"},
            }
        },
        "outputs": {"outputFile": "/gcs/b/run/task/uuid/output_metadata.json"},
    }
    container = {
        "command": ["run", "{{$.inputs.parameters['n']}}", "{{$}}"],
        "args": ["--n={{$.inputs.parameters['n']}}", "{{$.inputs.parameters['on']}}", "{{$}}"],
    }
    command = launcher.compile_command(container, executor_input)
    # As in launcher_v2.go: the command gets the executor input and nothing else.
    assert command[:2] == ["run", "{{$.inputs.parameters['n']}}"]
    assert command[3:5] == ["--n=2", "false"]
    assert '"settings":{"n":"2"}' in command[5]
    # A Struct's keys come out in the protobuf map's order, which varies from run to run.
    assert re.search(r'"n":2[,}]', command[5])


def test_a_struct_constant_reaches_the_step_with_its_placeholders_replaced_as_text(new_run):
    run = new_run(settings_pipeline, epochs=1, rate=0.00002, xla=False)
    result = run.run_all()
    assert result.outputs("echo-settings").parameters["Output"] == {
        "epochs": "1",
        "rate": "0.00002",
        "xla": "false",
        "name": "flip",
    }


def test_outputs_are_named_as_the_driver_names_them_and_move_as_the_launcher_moves_them(
    new_run, s3
):
    run = new_run(transfers_pipeline, text="hi there")
    result = run.run_all()
    written = result.outputs("write")
    run_root = f"{PIPELINE_ROOT}/harness-transfers/{run.run_id}"
    assert re.fullmatch(rf"{re.escape(run_root)}/write/{UUID}/note", written.uri("note"))
    assert _task_root(written.uri("folder")) == _task_root(written.uri("note"))
    assert written.metadata("note") == {"characters": 8}
    # One object for a file, a prefix for a folder, and the step's log beside them.
    task_root = _task_root(written.uri("note"))
    assert _stored(s3, task_root) == [
        f"{task_root}/executor-logs-0",
        f"{task_root}/folder/a.txt",
        f"{task_root}/folder/inner/b.txt",
        f"{task_root}/note",
    ]
    assert result.outputs("read").parameters["Output"] == "hi there 8 ['a.txt', 'inner/b.txt']"
    # The steps' pods are gone: only the store keeps their outputs.
    local_root = Path(launcher.local_path_for_uri(run.root))
    assert [path for path in local_root.rglob("*") if path.is_file()] == []


def test_a_failing_step_uploads_its_log_and_nothing_else(new_run, s3):
    run = new_run(failure_pipeline)
    with pytest.raises(launcher.StepFailed, match="the step broke on purpose") as failure:
        run.run_all()
    assert failure.value.task == "fail"
    assert failure.value.returncode == 1
    stored = _stored(s3, run.root)
    assert [uri.rsplit("/", 1)[1] for uri in stored] == ["executor-logs-0"]


def _started_and_written(new_run, signals: Path):
    """The waiting pipeline's step, started and past writing its output, waiting for "go"."""
    signals.mkdir()
    run = new_run(waiting_pipeline, signals=str(signals))
    process = run.start("write-then-wait")
    _wait_for(signals / "written", process)
    return run, process


def test_outputs_reach_the_store_only_after_the_step_exits(new_run, s3, tmp_path):
    signals = tmp_path / "signals"
    run, process = _started_and_written(new_run, signals)
    local_notes = list(Path(launcher.local_path_for_uri(run.root)).rglob("note"))
    assert [path.read_text() for path in local_notes] == ["written"]
    assert _stored(s3, run.root) == []

    (signals / "go").touch()
    outputs = run.finish("write-then-wait", process)
    assert _stored(s3, outputs.uri("note")) == [outputs.uri("note")]


def test_a_killed_step_leaves_nothing_in_the_store_and_nothing_running(new_run, s3, tmp_path):
    run, process = _started_and_written(new_run, tmp_path / "signals")
    process.kill()
    process.wait()
    with pytest.raises(launcher.StepFailed) as failure:
        run.finish("write-then-wait", process)
    assert failure.value.returncode == -9
    assert [uri.rsplit("/", 1)[1] for uri in _stored(s3, run.root)] == ["executor-logs-0"]
    # The Python under `sh` went with it, as a pod's processes go together.
    _wait_until(lambda: not _alive_in_group(process.pid), "the step's group to exit")


@pytest.mark.parametrize(
    "trials, verdict, chosen, pushed", [(0, False, "untuned", False), (2, True, "tuned", True)]
)
def test_conditions_skip_their_branch_and_one_of_takes_the_branch_that_ran(
    new_run, trials, verdict, chosen, pushed
):
    run = new_run(branches_pipeline, trials=trials, verdict=verdict)
    result = run.run_all()
    # pick: tuned, pick-2: untuned, pick-3: train's input, pick-4: the blessed push.
    assert result.outputs("pick-3").parameters["Output"] == chosen
    assert ("pick" in result.skipped) == (trials == 0)
    assert ("pick-2" in result.skipped) == (trials > 0)
    assert ("pick-4" in result.steps) == pushed


def test_a_steps_input_defaults_fill_the_placeholders_the_driver_left(new_run, s3):
    run = new_run(defaults_pipeline)
    outputs = run.run_all().outputs("greet")
    assert s3.filesystem().cat_file(outputs.uri("note").removeprefix("minio://")) == b"hello 3"


def test_run_until_runs_what_a_step_waits_for_and_nothing_after(new_run):
    run = new_run(branches_pipeline, trials=1)
    run.run_until("pick-3")
    assert run.outputs("pick").parameters["Output"] == "tuned"
    with pytest.raises(KeyError):
        run.outputs("bless")
    assert run.run_step("pick-3").parameters["Output"] == "tuned"


@pytest.mark.parametrize(
    "condition, values, expected",
    [
        (
            "int(inputs.parameter_values['pipelinechannel--tune_trials']) > 0",
            {"pipelinechannel--tune_trials": 0.0},
            False,
        ),
        (
            "int(inputs.parameter_values['pipelinechannel--tune_trials']) > 0",
            {"pipelinechannel--tune_trials": 3.0},
            True,
        ),
        (
            "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true",
            {"pipelinechannel--evaluate-Output": True},
            True,
        ),
        (
            "!(inputs.parameter_values['a'] == 'x') && inputs.parameter_values['b'] >= 1.5",
            {"a": "y", "b": 2},
            True,
        ),
    ],
)
def test_trigger_conditions_evaluate_as_cel_does(condition, values, expected):
    assert launcher.evaluate_condition(condition, values) is expected


@pytest.mark.parametrize(
    "condition",
    [
        "size(inputs.parameter_values['a']) > 0",
        "inputs.parameter_values['a'] in ['x']",
        "inputs.parameter_values['missing'] == 1",
        "inputs.parameter_values['a']",
    ],
)
def test_conditions_the_harness_does_not_understand_are_refused(condition):
    with pytest.raises(launcher.UnsupportedCondition):
        launcher.evaluate_condition(condition, {"a": "x"})


def test_the_gcs_emulator_leaves_the_environment_as_it_was(monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://elsewhere:1")
    with emulators.gcs_server() as gcs:
        assert os.environ["STORAGE_EMULATOR_HOST"] == "http://elsewhere:1"
        assert gcs.env["STORAGE_EMULATOR_HOST"] == gcs.url
    assert os.environ["STORAGE_EMULATOR_HOST"] == "http://elsewhere:1"
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    with emulators.gcs_server():
        assert "STORAGE_EMULATOR_HOST" not in os.environ
    assert "STORAGE_EMULATOR_HOST" not in os.environ


@pytest.mark.parametrize("server", [emulators.s3_server, emulators.gcs_server])
def test_an_emulator_stops_when_the_body_raises(server):
    with pytest.raises(RuntimeError, match="body failed"), server() as running:
        url = getattr(running, "endpoint_url", None) or running.url
        assert _answers(url)
        raise RuntimeError("body failed")
    assert not _answers(url)


@pytest.mark.slow
def test_the_whole_dag_runs_under_a_gcs_pipeline_root(tmp_path):
    """The project's pipeline, every step as the launcher runs it, artifacts and the served
    models on fake-gcs-server (STORAGE_EMULATOR_HOST, which google-cloud-storage and gcsfs
    honour), the photos too: 42 of them, so that the steps' own work stays small."""
    spec = launcher.compile_pipeline(tmp_path)
    photos = write_colour_tree(tmp_path / "photos", per_class=14)
    arguments = {
        "data_uri": "gs://pipelines/photos",
        "serving_root": "gs://pipelines/serving",
        "backbone": "mobilenet",
        "alpha": 0.5,
        "weights": "none",
        "image_size": 32,
        "epochs": 1,
        "fine_tune_epochs": 0,
        "learning_rate": 0.002,
        "augmentations": "rotation,zoom",
        "min_accuracy": 0.0,
    }
    with emulators.gcs_server() as gcs:
        gcs.make_bucket("pipelines")
        emulators.put_before_the_run(gcs, photos, "pipelines/photos")
        try:
            run = launcher.PipelineRun(
                spec,
                "gs://pipelines/v2/artifacts",
                arguments,
                env=gcs.env,
            )
        except launcher.LocalMountsUnavailable as error:
            pytest.skip(str(error))
        with run:
            result = run.run_all()
            assert result.skipped == {"condition-2", "tune"}
            assert result.outputs("ingest").metadata("manifest")["images"] == 42
            assert result.outputs("evaluate").parameters["Output"] is True
            served = gcs.filesystem().find("pipelines/serving")
            assert any(re.search(r"/imgclf/1/saved_model\.pb$", name) for name in served), served


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5).close()
    except urllib.error.HTTPError:
        return True  # an error page is an answer
    except urllib.error.URLError:
        return False
    return True


def _alive_in_group(group: int) -> list[int]:
    """The processes of a process group that are neither gone nor zombies (which whoever
    adopted them may take a while to reap)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, process_group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue  # exited while we looked
        if int(process_group) == group and state not in ("Z", "X"):
            alive.append(int(stat.parent.name))
    return alive


def _wait_until(condition, what: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"waited {seconds} s for {what}"
        time.sleep(0.05)


def _wait_for(signal: Path, process, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not signal.exists():
        assert process.poll() is None, f"the step exited with {process.returncode}"
        assert time.monotonic() < deadline, f"no {signal} after {seconds} s"
        time.sleep(0.05)
