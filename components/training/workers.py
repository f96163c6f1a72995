"""This process's place among the training workers ``TF_CONFIG`` describes, and where it may write.

Every worker trains, and every worker saves (saving a distributed model can take all of them),
but only the chief's files are kept: TensorFlow's multi-worker guide has the others write to
temporary places (tensorflow.org/tutorials/distribute/multi_worker_with_keras, "Model saving
and loading"). The chief is the task of type ``chief``, or worker 0 where the cluster has none
(tensorflow/python/distribute/multi_worker_util.py, ``is_chief``), which is how Kubeflow's
TFJob names its workers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Worker:
    task_type: str = "worker"
    index: int = 0
    # The processes that train together: chief and workers.
    count: int = 1
    cluster_has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.index == 0 and not self.cluster_has_chief

    @property
    def across_processes(self) -> bool:
        return self.count > 1

    def describe(self) -> str:
        role = "chief" if self.is_chief else "not the chief: writes to a temporary folder"
        return f"{self.task_type} {self.index} of {self.count} training processes ({role})"


def from_environment() -> Worker:
    """This process, from ``TF_CONFIG``; a single worker without one."""
    tf_config = os.environ.get("TF_CONFIG")
    if not tf_config:
        return Worker()
    try:
        parsed = json.loads(tf_config)
        cluster, task = parsed.get("cluster", {}), parsed.get("task", {})
    except (ValueError, AttributeError) as error:
        raise ValueError(
            f"TF_CONFIG must be a JSON object with a cluster and a task ({error}): "
            f"{tf_config[:200]!r}"
        ) from error
    count = sum(len(cluster.get(kind, [])) for kind in ("chief", "worker"))
    return Worker(
        task.get("type", "worker"), int(task.get("index", 0)), max(count, 1), "chief" in cluster
    )
