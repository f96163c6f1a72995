"""Runs a compiled KFP pipeline's steps the way the KFP v2 driver and launcher run them on a
cluster, against object stores (emulated ones in the tests), without a cluster.

Every rule here is the backend's, read from kubeflow/pipelines at 7b70c7b (2026-08-21);
``driver.go``, ``resolve.go``, ``launcher_v2.go`` and ``object_store.go`` below are
``backend/src/v2/driver/driver.go``, ``backend/src/v2/driver/resolve.go``,
``backend/src/v2/component/launcher_v2.go`` and ``backend/src/v2/objectstore/object_store.go``.
What matters to a step:

- Its outputs are named ``<pipeline root>/<pipeline name>/<run id>/<task>/<uuid>/<output>`` and
  it reads and writes them at the local path the URI maps to (``/gcs/``, ``/minio/``, ``/s3/``):
  the KFP SDK inside the step derives ``.path`` from ``.uri`` the same way, so the harness uses
  those real absolute paths (it needs the right to create them: root, as in CI).
- Its input artifacts are downloaded to their local paths before it starts, and its outputs
  reach the store only after it exits successfully; a failed step uploads its log and nothing
  else.
- Its ``settings`` dicts arrive with their placeholders replaced as text inside the executor
  input's JSON.

Steps run as separate processes in this Python environment (the images' ``python3`` is this
virtualenv's). The Kubernetes platform spec (resources, volumes, secrets) is not modelled, nor
is caching: every step runs.

Usage::

    spec = compile_pipeline(tmp_path)
    with PipelineRun(spec, "minio://mlpipeline/v2/artifacts", arguments, env=s3.env) as run:
        result = run.run_all()
        result.outputs("train").uri("model")

or, a step at a time (to kill one)::

    run.run_until("train")
    process = run.start("train")
    process.kill()
    process.wait()
    run.finish("train", process)  # raises StepFailed; nothing was uploaded
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

# LocalPathForURI (launcher_v2.go:1239) and kfp/dsl/types/artifact_types.py (_get_path).
LOCAL_MOUNTS = {"gs://": "/gcs/", "minio://": "/minio/", "s3://": "/s3/"}
EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"
# provisionOutputs (driver.go:748) adds it when logs are published, the driver's and the
# launcher's default (cmd/driver/main.go:101, cmd/launcher-v2/main.go:49).
EXECUTOR_LOGS = "executor-logs"
# qualifyExecutorLogsForRetry (launcher_v2.go:572): a first attempt's retry index is 0.
FIRST_ATTEMPT = "0"
LOG_TAIL_CHARACTERS = 6000
# How the driver resolves these runtime constants (resolveInputParameter, resolve.go:422).
RUN_ID = "{{$.pipeline_job_uuid}}"
TASK_NAME = "{{$.pipeline_task_name}}"
CREATE_TIME = "{{$.pipeline_job_create_time_utc}}"
SCHEDULE_TIME = "{{$.pipeline_job_schedule_time_utc}}"


class LocalMountsUnavailable(RuntimeError):
    """The harness cannot create the local mount folders (/gcs, /minio, /s3)."""


class StepFailed(Exception):
    """A step's process exited with an error; ``log`` is what it printed."""

    def __init__(self, task: str, returncode: int, log: str):
        self.task, self.returncode, self.log = task, returncode, log
        super().__init__(
            f"step {task} exited with {returncode}; its log ends:\n{log[-LOG_TAIL_CHARACTERS:]}"
        )


class UnsupportedCondition(ValueError):
    """A trigger condition outside the CEL subset the harness evaluates."""


def compile_pipeline(directory: str | Path, pipeline=None) -> dict:
    """Compiles ``pipeline`` (the project's, with pipelines/cluster.yaml's settings, unless
    given) as ``imgclf compile`` does; returns the pipeline spec, the YAML's first document."""
    import yaml
    from kfp import compiler

    if pipeline is None:
        from imgclf.pipelines.pipeline import create_pipeline

        pipeline = create_pipeline()
    path = Path(directory) / "pipeline.yaml"
    compiler.Compiler().compile(pipeline, str(path))
    return next(yaml.safe_load_all(path.read_text()))


def local_path_for_uri(uri: str) -> str:
    """LocalPathForURI (launcher_v2.go:1239): gs://X is /gcs/X, minio://X /minio/X, s3://X
    /s3/X."""
    for scheme, mount in LOCAL_MOUNTS.items():
        if uri.startswith(scheme):
            return mount + uri[len(scheme) :]
    raise ValueError(f"no local path for {uri!r}: the launcher maps only {', '.join(LOCAL_MOUNTS)}")


def output_uri(root: str, *parts: str, keep_query: bool = False) -> str:
    """GenerateOutputURI (backend/src/v2/metadata/client.go:391): the parts joined under the
    root, the root's query string dropped unless kept."""
    root, _, query = root.partition("?")
    suffix = f"?{query}" if query and keep_query else ""
    return f"{root.rstrip('/')}/{'/'.join(parts)}{suffix}"


def format_number(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``: positional, the fewest digits that read
    back the same (3, not 3.0; 0.00001, not 1e-05)."""
    return format(Decimal(repr(float(value))).normalize(), "f")


def placeholder_text(value: Any) -> str:
    """The text that replaces ``{{$.inputs.parameters['name']}}`` (getPlaceholders,
    launcher_v2.go:1140): a string as it is, a number by :func:`format_number`, a bool as
    true/false, a list or struct as its JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict):
        return _json(value)
    raise TypeError(f"a parameter value cannot be {value!r}")


def executor_input_json(executor_input: dict) -> str:
    """The executor input as the launcher writes it for ``{{$}}``: protojson of
    pipeline_spec's ExecutorInput (compileCmdAndArgs, launcher_v2.go:1051)."""
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    message = json_format.ParseDict(executor_input, pipeline_spec_pb2.ExecutorInput())
    return _json(json_format.MessageToDict(message))


def compile_command(container: dict, executor_input: dict) -> list[str]:
    """compileCmdAndArgs (launcher_v2.go:1051): the container's command with ``{{$}}``
    replaced by the executor input's JSON, then its args with ``{{$}}`` replaced and every
    other placeholder replaced in the result, so that placeholders inside a struct constant
    (in the JSON) are replaced too. The launcher replaces only ``{{$}}`` in the command: the
    loop meant for the command's other placeholders writes to a variable it never uses."""
    text = executor_input_json(executor_input)
    placeholders = _placeholders(executor_input)
    command = [part.replace(EXECUTOR_INPUT_PLACEHOLDER, text) for part in container["command"]]
    args = []
    for arg in container.get("args", []):
        arg = arg.replace(EXECUTOR_INPUT_PLACEHOLDER, text)
        for placeholder, replacement in placeholders.items():
            arg = arg.replace(placeholder, replacement)
        args.append(arg)
    return command + args


def add_default_params(executor_input: dict, component: dict) -> dict:
    """addDefaultParams (launcher_v2.go:1310): a copy where the component's input defaults
    fill in the parameters the driver left out."""
    filled = copy.deepcopy(executor_input)
    values = filled["inputs"].setdefault("parameterValues", {})
    for name, definition in _input_parameters(component).items():
        if "defaultValue" in definition and name not in values:
            values[name] = definition["defaultValue"]
    return filled


_CEL_TOKEN = re.compile(
    r"""\s+
    |(?P<parameter>inputs\.parameter_values\[(?P<quote>['"])(?P<name>[^'"\\]+)(?P=quote)\])
    |(?P<int>int\()
    |(?P<bool>true|false)
    |(?P<literal>\d+(?:\.\d+)?|'[^'\\]*'|"[^"\\]*")
    |(?P<operator>==|!=|>=|<=|>|<|&&|\|\||!|\(|\))""",
    re.VERBOSE,
)
_CEL_OPERATORS = {"&&": " and ", "||": " or ", "!": " not "}


def evaluate_condition(condition: str, parameter_values: Mapping[str, Any]) -> bool:
    """A trigger policy's CEL condition (Expr.Condition, backend/src/v2/expression/
    expression.go:134) over the task's resolved parameters, for the subset the KFP compiler
    writes for ``dsl.If``: parameter references, ``int()``, comparisons, ``&&``, ``||``, ``!``
    and literals. Anything else is refused rather than guessed at."""
    python = []
    position = 0
    while position < len(condition):
        token = _CEL_TOKEN.match(condition, position)
        if token is None:
            raise UnsupportedCondition(
                f"{condition!r}: cannot evaluate {condition[position:]!r} (the harness knows "
                "parameter references, int(), comparisons, &&, ||, ! and literals)"
            )
        python.append(_python_token(token, parameter_values, condition))
        position = token.end()
    # Safe to evaluate: every token matched the whitelist, and values are reprs.
    result = eval("".join(python), {"__builtins__": {}}, {"int": int})
    if not isinstance(result, bool):
        raise UnsupportedCondition(f"{condition!r} gave {result!r}, not a bool")
    return result


def _python_token(token: re.Match, parameter_values: Mapping[str, Any], condition: str) -> str:
    if token["parameter"]:
        if token["name"] not in parameter_values:
            raise UnsupportedCondition(f"{condition!r}: no parameter {token['name']!r}")
        return repr(parameter_values[token["name"]])
    if token["int"]:
        return "int("
    if token["bool"]:
        return "True" if token["bool"] == "true" else "False"
    if token["operator"]:
        return _CEL_OPERATORS.get(token["operator"], token["operator"])
    return token.group(0)


@dataclass(frozen=True)
class TaskOutputs:
    """A finished step's outputs as the launcher records them: its parameters and its output
    artifacts (RuntimeArtifact JSON: name, type, uri, metadata), the executor's output merged
    into what the driver provisioned (mergeRuntimeArtifacts, launcher_v2.go:1188)."""

    parameters: dict[str, Any]
    artifacts: dict[str, dict]

    def uri(self, artifact: str) -> str:
        return self.artifacts[artifact]["uri"]

    def metadata(self, artifact: str) -> dict:
        return self.artifacts[artifact].get("metadata", {})


@dataclass(frozen=True)
class RunResult:
    """What a whole run did: each step's outputs and the tasks a false condition skipped."""

    steps: dict[str, TaskOutputs]
    skipped: frozenset[str]

    def outputs(self, task: str) -> TaskOutputs:
        if task in self.skipped:
            raise KeyError(f"{task} did not run: a condition skipped it")
        return self.steps[task]


class StepProcess(subprocess.Popen):
    """A step's process group. The command is ``sh -ec '... python3 -m ...'``: killing only
    ``sh`` would leave the step running and writing; on a cluster the whole pod goes."""

    def send_signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):  # the group has exited
            os.killpg(self.pid, sig)


@dataclass(frozen=True)
class _Task:
    name: str
    spec: dict
    component: dict
    dag: str | None  # the enclosing DAG task; None for the pipeline's root DAG

    @property
    def is_dag(self) -> bool:
        return "dag" in self.component


@dataclass
class _Launch:
    """A started step, between :meth:`PipelineRun.start` and :meth:`PipelineRun.finish`."""

    executor_input: dict
    component: dict
    log_path: Path


class PipelineRun:
    """One run of a compiled pipeline ``spec`` under ``pipeline_root`` (``gs://``,
    ``minio://`` or ``s3://``), with the pipeline's ``arguments`` over its defaults. ``env``
    reaches both the steps and the harness's own store clients (emulator endpoints,
    credentials). ``scheduled_at`` is what ``{{$.pipeline_job_schedule_time_utc}}`` resolves
    to; like a manual run on a cluster, the run's creation time unless given.

    Output parameter files go to a per-run temporary folder instead of the driver's
    ``/tmp/kfp/outputs/<name>`` (driver.go:788), which would mix parallel tests' steps."""

    def __init__(
        self,
        spec: dict,
        pipeline_root: str,
        arguments: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        scheduled_at: str | None = None,
    ):
        self.spec = spec
        self.run_id = str(uuid.uuid4())
        # GetPipeline (metadata/client.go:420): a run's root is <root>/<pipeline>/<run id>.
        self.root = output_uri(
            pipeline_root, spec["pipelineInfo"]["name"], self.run_id, keep_query=True
        )
        _prepare_mount(self.root)
        self.env = {
            **os.environ,
            **(env or {}),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        created_at = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._runtime_values = {
            RUN_ID: self.run_id,
            CREATE_TIME: created_at,
            SCHEDULE_TIME: scheduled_at or created_at,
        }
        self._tasks = _tasks_in_order(spec)
        self._dag_inputs: dict[str | None, dict] = {
            None: {"parameterValues": _pipeline_parameters(spec, arguments or {})}
        }
        self._outputs: dict[str, TaskOutputs] = {}
        self._triggered: set[str] = set()
        self._skipped: set[str] = set()
        self._launches: dict[str, _Launch] = {}
        # A failed step's executor input: Argo retries the launcher's pod, not the driver.
        self._failed_attempts: dict[str, dict] = {}
        self._logs: dict[str, str] = {}
        self._scratch = Path(tempfile.mkdtemp(prefix=f"kfp-run-{self.run_id}-"))
        self._filesystems: dict[str, Any] = {}

    def __enter__(self) -> PipelineRun:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Removes what the run left on local disk (the store keeps its outputs)."""
        shutil.rmtree(local_path_for_uri(self.root), ignore_errors=True)
        shutil.rmtree(self._scratch, ignore_errors=True)

    def run_all(self) -> RunResult:
        """Runs every task in order; a task inside a DAG whose condition is false is skipped."""
        for name in self._tasks:
            self._advance(name)
        return RunResult(dict(self._outputs), frozenset(self._skipped))

    def run_until(self, task: str) -> None:
        """Runs every task ``task`` waits for (its dependencies, what runs inside them, and the
        DAGs around it), not ``task`` itself."""
        upstream = self._upstream(self._task(task))
        for name in self._tasks:
            if name in upstream:
                self._advance(name)

    def run_step(self, task: str) -> TaskOutputs:
        process = self.start(task)
        process.wait()
        return self.finish(task, process)

    def outputs(self, task: str) -> TaskOutputs:
        return self._outputs[task]

    def start(self, task: str) -> StepProcess:
        """The driver's and launcher's work before the step's code: resolve its inputs,
        provision its outputs, download its input artifacts, make its output folders
        (execute, launcher_v2.go:657); then start its command."""
        step = self._task(task)
        self._check_startable(step)
        executor_input = self._retried(task) or {
            "inputs": self._resolve_inputs(step),
            "outputs": self._provision_outputs(step),
        }
        self._download_inputs(executor_input)
        _prepare_output_folders(executor_input)
        command = compile_command(
            self._container(step), add_default_params(executor_input, step.component)
        )
        log_path = Path(_artifact_path(executor_input, EXECUTOR_LOGS))
        with log_path.open("wb") as log:
            process = StepProcess(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self._scratch,
                start_new_session=True,
            )
        self._launches[task] = _Launch(executor_input, step.component, log_path)
        return process

    def finish(self, task: str, process: subprocess.Popen) -> TaskOutputs:
        """The launcher's work after the step's process exits (executeV2,
        launcher_v2.go:405): after a success, read the executor output and the output
        parameter files and upload every output artifact; after a failure, upload only the
        log and raise :class:`StepFailed`. Then the step's local files go, as its pod would."""
        returncode = process.wait()
        launch = self._launches.pop(task)
        log = launch.log_path.read_text(errors="replace")
        self._logs[task] = log
        logs = launch.executor_input["outputs"]["artifacts"][EXECUTOR_LOGS]["artifacts"]
        try:
            if returncode != 0:
                self._upload(logs)
                self._failed_attempts[task] = launch.executor_input
                raise StepFailed(task, returncode, log)
            outputs = _task_outputs(launch.executor_input, launch.component)
            self._upload([*outputs.artifacts.values(), *logs])
        finally:
            self._remove_local_files(launch.executor_input)
        self._outputs[task] = outputs
        return outputs

    def _advance(self, name: str) -> None:
        task = self._tasks[name]
        if name in self._outputs or name in self._triggered or name in self._skipped:
            return
        if task.dag in self._skipped:
            self._skipped.add(name)
        elif task.is_dag:
            self._enter_dag(task)
        else:
            self.run_step(name)

    def _enter_dag(self, task: _Task) -> None:
        """The DAG driver for a sub-DAG (dsl.If, dsl.Else, their group): its inputs, then its
        trigger condition (container.go:88 does the same for a step's)."""
        inputs = self._resolve_inputs(task)
        condition = task.spec.get("triggerPolicy", {}).get("condition")
        if condition and not evaluate_condition(condition, inputs["parameterValues"]):
            self._skipped.add(task.name)
            return
        self._dag_inputs[task.name] = inputs
        self._triggered.add(task.name)

    def executor_input(self, task: str) -> dict:
        """The executor input of a started step, as its command received it."""
        return self._launches[task].executor_input

    def log(self, task: str) -> str:
        """What the step's last finished attempt printed."""
        return self._logs[task]

    def _retried(self, task: str) -> dict | None:
        """Starting a failed step again is a retry: KFP compiles a task's retry policy into
        the retryStrategy of its executor template only (argocompiler/container.go:581), so
        the driver, which resolved the inputs and chose the output URIs, does not run again
        and the new pod gets the same executor input. Only the log's URI carries the new
        attempt's index (qualifyExecutorLogsForRetry, launcher_v2.go:572)."""
        failed = self._failed_attempts.pop(task, None)
        if failed is None:
            return None
        retried = json.loads(json.dumps(failed))
        (log,) = retried["outputs"]["artifacts"][EXECUTOR_LOGS]["artifacts"]
        base, _, attempt = log["uri"].rpartition("-")
        log["uri"] = f"{base}-{int(attempt) + 1}"
        return retried

    def _check_startable(self, task: _Task) -> None:
        if task.is_dag:
            raise ValueError(f"{task.name} is a DAG, not a step")
        if task.name in self._outputs or task.name in self._launches:
            raise ValueError(f"{task.name} already ran in this run")
        if task.dag in self._skipped:
            raise ValueError(f"{task.name} does not run: the condition of {task.dag} is false")
        done = self._outputs.keys() | self._triggered | self._skipped
        waiting = self._upstream(task) - done
        if waiting:
            raise ValueError(f"{task.name} waits for {sorted(waiting)}: run_until it first")

    def _upstream(self, task: _Task) -> set[str]:
        needed = set()
        for name in task.spec.get("dependentTasks", []):
            dependency = self._task(name)
            needed |= {name} | self._upstream(dependency) | self._inside(dependency)
        if task.dag is not None:
            needed |= {task.dag} | self._upstream(self._tasks[task.dag])
        return needed

    def _inside(self, task: _Task) -> set[str]:
        inner = {name for name, other in self._tasks.items() if other.dag == task.name}
        return inner.union(*(self._inside(self._tasks[name]) for name in inner))

    def _task(self, name: str) -> _Task:
        if name not in self._tasks:
            raise KeyError(f"no task {name!r}; the pipeline has {sorted(self._tasks)}")
        return self._tasks[name]

    def _container(self, task: _Task) -> dict:
        executor = self.spec["deploymentSpec"]["executors"][task.component["executorLabel"]]
        return executor["container"]

    # The driver: resolveInputs (resolve.go:102) and provisionOutputs (driver.go:733).

    def _resolve_inputs(self, task: _Task) -> dict:
        inputs = task.spec.get("inputs", {})
        scope = self._dag_inputs[task.dag]
        parameters = {
            name: self._resolve_parameter(task, spec, scope)
            for name, spec in inputs.get("parameters", {}).items()
        }
        # handleParamTypeValidationAndConversion (resolve.go:165): a STRING input takes the
        # text of whatever value it was given.
        for name, definition in _input_parameters(task.component).items():
            if definition["parameterType"] == "STRING" and name in parameters:
                parameters[name] = placeholder_text(parameters[name])
        artifacts = {
            name: {"artifacts": self._resolve_artifacts(task, spec, scope)}
            for name, spec in inputs.get("artifacts", {}).items()
        }
        return {"parameterValues": parameters, "artifacts": artifacts}

    def _resolve_parameter(self, task: _Task, spec: dict, scope: dict) -> Any:
        if "componentInputParameter" in spec:
            name = spec["componentInputParameter"]
            if name not in scope["parameterValues"]:
                raise KeyError(f"{task.name}: its DAG has no input parameter {name!r}")
            return scope["parameterValues"][name]
        if "taskOutputParameter" in spec:
            output = spec["taskOutputParameter"]
            return self._output_parameter(output["producerTask"], output["outputParameterKey"])
        if "constant" in spec.get("runtimeValue", {}):
            return self._runtime_constant(spec["runtimeValue"]["constant"], task)
        raise NotImplementedError(f"{task.name}: the harness cannot resolve {spec}")

    def _runtime_constant(self, constant: Any, task: _Task) -> Any:
        """A constant as it is, unless it is one of the driver's runtime placeholders; a struct
        constant keeps its placeholders for the launcher to replace."""
        if constant == TASK_NAME:
            return task.name
        if isinstance(constant, str) and constant in self._runtime_values:
            return self._runtime_values[constant]
        if isinstance(constant, str) and constant.startswith("{{$.pipeline_"):
            raise NotImplementedError(f"{task.name}: the harness does not resolve {constant}")
        return constant

    def _resolve_artifacts(self, task: _Task, spec: dict, scope: dict) -> list[dict]:
        if "componentInputArtifact" in spec:
            return scope["artifacts"][spec["componentInputArtifact"]]["artifacts"]
        if "taskOutputArtifact" in spec:
            output = spec["taskOutputArtifact"]
            return [self._output_artifact(output["producerTask"], output["outputArtifactKey"])]
        raise NotImplementedError(f"{task.name}: the harness cannot resolve {spec}")

    def _output_parameter(self, producer: str, key: str) -> Any:
        """resolveUpstreamParameters (resolve.go:577): a step's output, or through a DAG's
        outputs to the step that made it; a OneOf takes the first branch that completed
        (GetProducerTask, resolve.go:1036)."""
        task = self._task(producer)
        if not task.is_dag:
            if producer not in self._outputs:
                raise ValueError(f"{producer} has not run: no output {key!r}")
            return self._outputs[producer].parameters[key]
        output = task.component["dag"]["outputs"]["parameters"][key]
        if "valueFromParameter" in output:
            selectors = [output["valueFromParameter"]]
        else:
            selectors = self._completed(output["valueFromOneof"]["parameterSelectors"])
        return self._output_parameter(
            selectors[0]["producerSubtask"], selectors[0]["outputParameterKey"]
        )

    def _output_artifact(self, producer: str, key: str) -> dict:
        """resolveUpstreamArtifacts (resolve.go:700), as :meth:`_output_parameter`."""
        task = self._task(producer)
        if not task.is_dag:
            if producer not in self._outputs:
                raise ValueError(f"{producer} has not run: no output {key!r}")
            return self._outputs[producer].artifacts[key]
        selectors = task.component["dag"]["outputs"]["artifacts"][key]["artifactSelectors"]
        if len(selectors) > 1:
            selectors = self._completed(selectors)
        return self._output_artifact(
            selectors[0]["producerSubtask"], selectors[0]["outputArtifactKey"]
        )

    def _completed(self, selectors: list[dict]) -> list[dict]:
        completed = [
            selector
            for selector in selectors
            if selector["producerSubtask"] in self._outputs
            or selector["producerSubtask"] in self._triggered
        ]
        if not completed:
            raise ValueError(f"OneOf: none of {[s['producerSubtask'] for s in selectors]} ran")
        return completed

    def _provision_outputs(self, task: _Task) -> dict:
        task_root = output_uri(self.root, task.name, str(uuid.uuid4()))
        definitions = {
            **task.component.get("outputDefinitions", {}).get("artifacts", {}),
            EXECUTOR_LOGS: {"artifactType": {"schemaTitle": "system.Artifact"}},
        }
        artifacts = {}
        for name, definition in definitions.items():
            uri = output_uri(task_root, name)
            if name == EXECUTOR_LOGS:
                uri = f"{uri}-{FIRST_ATTEMPT}"
            artifact = {"name": name, "type": definition["artifactType"], "uri": uri}
            if "metadata" in definition:
                artifact["metadata"] = definition["metadata"]
            artifacts[name] = {"artifacts": [artifact]}
        parameter_folder = self._scratch / task.name / "outputs"
        parameters = {
            name: {"outputFile": str(parameter_folder / name)}
            for name in task.component.get("outputDefinitions", {}).get("parameters", {})
        }
        return {
            "artifacts": artifacts,
            "parameters": parameters,
            "outputFile": str(Path(local_path_for_uri(task_root)) / "output_metadata.json"),
        }

    # The launcher's transfers: downloadArtifacts (launcher_v2.go:927) and
    # uploadOutputArtifacts (launcher_v2.go:778), with object_store.go's DownloadBlob and
    # UploadBlob: an artifact URI names one object or a prefix of several.

    def _download_inputs(self, executor_input: dict) -> None:
        for artifact in _artifacts(executor_input["inputs"]):
            filesystem, key = self._store(artifact["uri"])
            local = Path(local_path_for_uri(artifact["uri"]))
            for found in filesystem.find(key):
                if found == key or found.startswith(f"{key.rstrip('/')}/"):
                    target = local / os.path.relpath(found, key)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    filesystem.get_file(found, str(target))

    def _upload(self, artifacts: Iterable[dict]) -> None:
        for artifact in artifacts:
            filesystem, key = self._store(artifact["uri"])
            for local, relative in _local_files(Path(local_path_for_uri(artifact["uri"]))):
                filesystem.put_file(str(local), f"{key}/{relative}" if relative else key)

    def _remove_local_files(self, executor_input: dict) -> None:
        for artifact in _artifacts(executor_input["inputs"], executor_input["outputs"]):
            _remove(Path(local_path_for_uri(artifact["uri"])))
        _remove(Path(executor_input["outputs"]["outputFile"]).parent)

    def _store(self, uri: str) -> tuple[Any, str]:
        """The fsspec filesystem holding ``uri`` and its ``bucket/key`` there: gcsfs for gs://,
        s3fs for s3:// and minio:// (KFP's MinIO is an S3 endpoint, AWS_ENDPOINT_URL here)."""
        scheme, _, key = uri.partition("://")
        if scheme not in self._filesystems:
            self._filesystems[scheme] = self._filesystem(scheme)
        return self._filesystems[scheme], key

    def _filesystem(self, scheme: str):
        if scheme == "gs":
            # gcsfs.core's class, not gcsfs.GCSFileSystem: which one that name is depends on
            # GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT when gcsfs was first imported.
            from gcsfs.core import GCSFileSystem

            emulator = self.env.get("STORAGE_EMULATOR_HOST")
            return GCSFileSystem(
                endpoint_url=emulator,
                token="anon" if emulator else None,
                skip_instance_cache=True,
            )
        import s3fs

        return s3fs.S3FileSystem(
            key=self.env.get("AWS_ACCESS_KEY_ID"),
            secret=self.env.get("AWS_SECRET_ACCESS_KEY"),
            endpoint_url=self.env.get("AWS_ENDPOINT_URL"),
            client_kwargs={"region_name": self.env.get("AWS_DEFAULT_REGION")},
            skip_instance_cache=True,
            use_listings_cache=False,
        )


def _tasks_in_order(spec: dict) -> dict[str, _Task]:
    """Every task of the pipeline by name, each DAG's in an order its dependentTasks allow,
    a sub-DAG's tasks right after it."""
    ordered: dict[str, _Task] = {}

    def add(dag: dict, enclosing: str | None) -> None:
        for name in _topological(dag["tasks"]):
            if name in ordered:
                raise ValueError(f"two tasks are named {name!r}; the harness keys tasks by name")
            task_spec = dag["tasks"][name]
            component = spec["components"][task_spec["componentRef"]["name"]]
            ordered[name] = _Task(name, task_spec, component, enclosing)
            if "dag" in component:
                add(component["dag"], name)

    add(spec["root"]["dag"], None)
    return ordered


def _topological(tasks: dict[str, dict]) -> list[str]:
    waiting = {name: set(task.get("dependentTasks", [])) for name, task in tasks.items()}
    order: list[str] = []
    while waiting:
        ready = sorted(name for name, needs in waiting.items() if needs <= set(order))
        if not ready:
            raise ValueError(f"the tasks {sorted(waiting)} wait for one another")
        order.extend(ready)
        for name in ready:
            del waiting[name]
    return order


def _pipeline_parameters(spec: dict, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """The root DAG's inputs: the run's arguments over the pipeline's defaults."""
    definitions = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    unknown = set(arguments) - set(definitions)
    if unknown:
        raise KeyError(f"the pipeline has no parameters {sorted(unknown)}")
    values = {
        name: definition["defaultValue"]
        for name, definition in definitions.items()
        if "defaultValue" in definition
    }
    values.update(arguments)
    missing = [
        name
        for name, definition in definitions.items()
        if name not in values and not definition.get("isOptional")
    ]
    if missing:
        raise KeyError(f"the run needs arguments for {missing}")
    return values


def _prepare_mount(root: str) -> None:
    mount = Path(local_path_for_uri(root)).parts[1]
    folder = Path("/") / mount
    try:
        folder.mkdir(exist_ok=True)
        if not os.access(folder, os.W_OK):
            raise PermissionError(f"{folder} is not writable")
    except OSError as error:
        raise LocalMountsUnavailable(
            f"cannot use {folder} ({error}): steps read and write an artifact at the local path "
            f"its URI maps to ({', '.join(f'{s} -> {m}' for s, m in LOCAL_MOUNTS.items())}), "
            "as under the KFP launcher, so the harness needs to create that folder (run as root)"
        ) from error


def _prepare_output_folders(executor_input: dict) -> None:
    """prepareOutputFolders (launcher_v2.go:1280): the parent folder of every output
    parameter file and of every output artifact's local path."""
    outputs = executor_input["outputs"]
    for parameter in outputs["parameters"].values():
        Path(parameter["outputFile"]).parent.mkdir(parents=True, exist_ok=True)
    for artifact in _artifacts(outputs):
        Path(local_path_for_uri(artifact["uri"])).parent.mkdir(parents=True, exist_ok=True)


def _task_outputs(executor_input: dict, component: dict) -> TaskOutputs:
    """The executor output file (getExecutorOutputFile, launcher_v2.go:1208; none means no
    outputs declared there) merged into the provisioned artifacts, and the output parameters
    it lacks read from their files (collectOutputParameters, launcher_v2.go:484)."""
    outputs = executor_input["outputs"]
    path = Path(outputs["outputFile"])
    written = json.loads(path.read_text()) if path.exists() else {}
    parameters = dict(written.get("parameterValues", {}))
    definitions = component.get("outputDefinitions", {}).get("parameters", {})
    for name, parameter in outputs["parameters"].items():
        if name not in parameters:
            text = Path(parameter["outputFile"]).read_text()
            parameters[name] = _text_to_value(text, definitions[name]["parameterType"])
    artifacts = {}
    for name, provisioned in outputs["artifacts"].items():
        if name == EXECUTOR_LOGS:
            continue
        artifact = copy.deepcopy(provisioned["artifacts"][0])
        reported = written.get("artifacts", {}).get(name, {}).get("artifacts", [{}])[0]
        artifact["uri"] = reported.get("uri") or artifact["uri"]
        artifact["metadata"] = {**artifact.get("metadata", {}), **reported.get("metadata", {})}
        artifacts[name] = artifact
    return TaskOutputs(parameters, artifacts)


def _text_to_value(text: str, parameter_type: str) -> Any:
    """TextToPbValue (backend/src/v2/metadata/converter.go): an output parameter file's text
    as the value of its declared type."""
    if parameter_type == "STRING":
        return text
    if parameter_type == "NUMBER_INTEGER":
        return int(text.strip())
    if parameter_type == "NUMBER_DOUBLE":
        return float(text.strip())
    if parameter_type == "BOOLEAN":
        return {"true": True, "1": True, "false": False, "0": False}[text.strip().lower()]
    return json.loads(text)


def _placeholders(executor_input: dict) -> dict[str, str]:
    """getPlaceholders (launcher_v2.go:1077): each placeholder the launcher replaces in the
    args, and its text."""
    inputs, outputs = executor_input["inputs"], executor_input["outputs"]
    placeholders = {}
    for direction, artifacts in (("inputs", inputs), ("outputs", outputs)):
        for name, listed in artifacts.get("artifacts", {}).items():
            if listed["artifacts"]:
                uri = listed["artifacts"][0]["uri"]
                placeholders[f"{{{{$.{direction}.artifacts['{name}'].uri}}}}"] = uri
                placeholders[f"{{{{$.{direction}.artifacts['{name}'].path}}}}"] = (
                    local_path_for_uri(uri)
                )
    for name, value in inputs.get("parameterValues", {}).items():
        placeholders[f"{{{{$.inputs.parameters['{name}']}}}}"] = placeholder_text(value)
    for name, parameter in outputs.get("parameters", {}).items():
        placeholders[f"{{{{$.outputs.parameters['{name}'].output_file}}}}"] = parameter[
            "outputFile"
        ]
    return placeholders


def _json(value: Any) -> str:
    """JSON as Go's protojson writes a protobuf Value: numbers the way a double prints there
    (3, not Python protobuf's 3.0; a step's json.loads then reads an int, as on a cluster)."""
    return json.dumps(_go_numbers(value), separators=(",", ":"))


def _go_numbers(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_go_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _go_numbers(item) for key, item in value.items()}
    return value


def _input_parameters(component: dict) -> dict:
    return component.get("inputDefinitions", {}).get("parameters", {})


def _artifacts(*sides: dict) -> Iterable[dict]:
    for side in sides:
        for listed in side.get("artifacts", {}).values():
            yield from listed["artifacts"]


def _artifact_path(executor_input: dict, name: str) -> str:
    return local_path_for_uri(executor_input["outputs"]["artifacts"][name]["artifacts"][0]["uri"])


def _local_files(path: Path) -> Iterable[tuple[Path, str]]:
    """The files UploadBlob sends for ``path``: the file itself (relative name ""), or every
    file under the folder; nothing when the step wrote nothing there."""
    if path.is_file():
        yield path, ""
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            yield file, file.relative_to(path).as_posix()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
