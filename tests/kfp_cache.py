"""KFP's caching, applied to a compiled pipeline's IR over several runs.

The rules of the open-source KFP v2 backend (kubeflow/pipelines at commit 7b70c7b9,
2026-08-21):

- backend/src/v2/driver/cache.go:84-129 (``getFingerPrint``): a task whose
  ``cachingOptions.enableCache`` is set is keyed on its executor input, its component's output
  definitions, its container's image, command + args, and the names of the PVCs it mounts.
- backend/src/v2/cacheutils/cache.go:173-233 (``GenerateCacheKey``): the key holds each input
  artifact by its name (the MLMD artifact id, metadata/converter.go:187), each input
  parameter's value, each output artifact's type and metadata (not its URI) and each output
  parameter's type; ``GenerateFingerPrint`` (cache.go:151) is the SHA-256 of its JSON.
- A hit reuses the cached execution's output parameters and artifacts
  (driver/cache.go:56-79), so the tasks downstream of a hit see the same artifact names.
- Environment variables, resources and node placement are not part of the key.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

# Resolved by the driver from the Workflow's workflowEpoch label (backend/src/v2/cmd/driver/
# main.go:262-303, KFP 2.17.0).
SCHEDULE_TIME = "{{$.pipeline_job_schedule_time_utc}}"
_PLACEHOLDER = re.compile(r"\{\{\$\.inputs\.parameters\['([^']+)'\]\}\}")


def load(path) -> tuple[dict, dict]:
    """The pipeline spec and the kubernetes platform spec of a compiled YAML."""
    documents = list(yaml.safe_load_all(Path(path).read_text()))
    platform = documents[1] if len(documents) > 1 else {}
    return documents[0], platform.get("platforms", {}).get("kubernetes", {})


@dataclass
class Backend:
    """The cache of one KFP installation: runs share it."""

    spec: dict
    platform: dict
    cache: dict[str, dict] = field(default_factory=dict)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def run(self, arguments: dict, step_outputs: dict[str, dict], scheduled_at: str) -> dict:
        """One run: every task's fate ("hit", "miss" or "skipped"), by its path. A task that
        runs gets its output parameters from ``step_outputs`` (by task name) where given, else
        values no earlier execution produced."""
        self._fates: dict[str, str] = {}
        self._step_outputs, self._scheduled_at = step_outputs, scheduled_at
        defaults = {
            name: definition.get("defaultValue")
            for name, definition in self.spec["root"]["inputDefinitions"]["parameters"].items()
        }
        self._run_dag(self.spec["root"], {**defaults, **arguments}, {}, "")
        return self._fates

    def _run_dag(self, component: dict, parameters: dict, artifacts: dict, path: str) -> dict:
        tasks = component["dag"]["tasks"]
        done: dict[str, dict | None] = {}
        while len(done) < len(tasks):
            for name, task in tasks.items():
                if name in done or not all(d in done for d in _producers(task)):
                    continue
                done[name] = self._run_task(name, task, parameters, artifacts, done, path)
        return self._dag_outputs(component["dag"], done)

    def _run_task(self, name, task, parameters, artifacts, done, path) -> dict | None:
        task_path = f"{path}{name}"
        inputs = task.get("inputs", {})
        values = {
            key: self._parameter(source, parameters, done)
            for key, source in inputs.get("parameters", {}).items()
        }
        values = {key: self._substitute(value, values) for key, value in values.items()}
        given = {
            key: self._artifact(source, artifacts, done)
            for key, source in inputs.get("artifacts", {}).items()
        }
        condition = task.get("triggerPolicy", {}).get("condition")
        if condition and not _holds(condition, values):
            self._fates[task_path] = "skipped"
            return None
        component = self.spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            return self._run_dag(component, values, given, f"{task_path}/")
        return self._run_container(name, task, component, values, given, task_path)

    def _run_container(self, name, task, component, values, given, task_path) -> dict:
        label = component["executorLabel"]
        container = self.spec["deploymentSpec"]["executors"][label]["container"]
        outputs = component.get("outputDefinitions", {})
        key = {
            "inputArtifactNames": {k: {"artifactNames": v} for k, v in sorted(given.items())},
            "inputParameterValues": dict(sorted(values.items())),
            "outputArtifactsSpec": {
                k: {"type": v["artifactType"]} for k, v in outputs.get("artifacts", {}).items()
            },
            "outputParametersSpec": {
                k: v["parameterType"] for k, v in outputs.get("parameters", {}).items()
            },
            "containerSpec": {
                "image": container["image"],
                "cmdArgs": [*container.get("command", []), *container.get("args", [])],
                "pvcNames": sorted(
                    m.get("constant", "")
                    for m in self.platform.get("deploymentSpec", {})
                    .get("executors", {})
                    .get(label, {})
                    .get("pvcMount", [])
                ),
            },
        }
        fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        cached = task.get("cachingOptions", {}).get("enableCache", False)
        if cached and fingerprint in self.cache:
            self._fates[task_path] = "hit"
            return self.cache[fingerprint]
        self._fates[task_path] = "miss"
        produced = {
            "parameters": {
                k: self._step_outputs.get(name, {}).get(k, f"{name}.{k}#{next(self._ids)}")
                for k in outputs.get("parameters", {})
            },
            "artifacts": {k: [str(next(self._ids))] for k in outputs.get("artifacts", {})},
        }
        if cached:
            self.cache[fingerprint] = produced
        return produced

    def _parameter(self, source: dict, parameters: dict, done: dict):
        if "componentInputParameter" in source:
            return parameters[source["componentInputParameter"]]
        if "taskOutputParameter" in source:
            producer = source["taskOutputParameter"]
            return done[producer["producerTask"]]["parameters"][producer["outputParameterKey"]]
        return source["runtimeValue"]["constant"]

    def _artifact(self, source: dict, artifacts: dict, done: dict) -> list[str]:
        if "componentInputArtifact" in source:
            return artifacts[source["componentInputArtifact"]]
        producer = source["taskOutputArtifact"]
        return done[producer["producerTask"]]["artifacts"][producer["outputArtifactKey"]]

    def _substitute(self, value, values: dict):
        """Placeholders in a constant, as the driver resolves them."""
        if isinstance(value, dict):
            return {k: self._substitute(v, values) for k, v in value.items()}
        if isinstance(value, str):
            value = value.replace(SCHEDULE_TIME, self._scheduled_at)
            return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), value)
        return value

    def _dag_outputs(self, dag: dict, done: dict) -> dict:
        outputs = {"parameters": {}, "artifacts": {}}
        for key, spec in dag.get("outputs", {}).get("parameters", {}).items():
            selectors = spec.get("valueFromOneof", {}).get("parameterSelectors") or [
                spec["valueFromParameter"]
            ]
            for selector in selectors:
                produced = done.get(selector["producerSubtask"])
                if produced is not None:
                    outputs["parameters"][key] = produced["parameters"][
                        selector["outputParameterKey"]
                    ]
                    break
        for key, spec in dag.get("outputs", {}).get("artifacts", {}).items():
            for selector in spec["artifactSelectors"]:
                produced = done.get(selector["producerSubtask"])
                if produced is not None:
                    outputs["artifacts"][key] = produced["artifacts"][selector["outputArtifactKey"]]
                    break
        return outputs


def _producers(task: dict) -> set[str]:
    return set(task.get("dependentTasks", []))


def _holds(condition: str, values: dict) -> bool:
    """A trigger condition (CEL over ``inputs.parameter_values``, as the compiler writes it)."""
    expression = re.sub(
        r"inputs\.parameter_values\['([^']+)'\]",
        lambda m: repr(_typed(values[m.group(1)])),
        condition,
    )
    expression = expression.replace("&&", " and ").replace("||", " or ")
    expression = re.sub(r"!(?!=)", " not ", expression)
    expression = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", expression))
    return bool(eval(expression, {"int": int, "double": float, "string": str}))  # noqa: S307


def _typed(value):
    if isinstance(value, str) and value in ("true", "false"):
        return value == "true"
    return value
