"""The distribution strategy and precision the hardware calls for."""

import json
import os
import socket
import subprocess
import sys

import tensorflow as tf

from conftest import REPO
from imgclf.components.training import hardware


def test_one_device_uses_the_default_strategy_and_a_cluster_the_multi_worker_one():
    strategy = hardware.distribution_strategy()
    assert strategy is tf.distribute.get_strategy() and strategy.num_replicas_in_sync == 1

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    worker = f"localhost:{port}"
    tf_config = {"cluster": {"worker": [worker]}, "task": {"type": "worker", "index": 0}}
    code = (
        "import tensorflow as tf\n"
        "from imgclf.components.training.train import distribution_strategy\n"
        "strategy = distribution_strategy()\n"
        "print(isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy), "
        "strategy.num_replicas_in_sync)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env={**os.environ, "TF_CONFIG": json.dumps(tf_config)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.stdout.split() == ["True", "1"], completed.stderr
