"""A stand-in for a Kubernetes API server with Kubeflow's training operator, on loopback, for
the train step's launcher to talk to through the real ``kubernetes`` client: a created TFJob
starts its worker pods as local processes, each with the TF_CONFIG the operator would give it.

What it does as training-operator v1.9.0 does (pkg/controller.v1/tensorflow/): TF_CONFIG
(genTFConfigJSONStr in tensorflow.go: the cluster's workers, this task's type and index,
environment "cloud") only in the container named ``tensorflow`` and only when the job has more
than one replica (SetClusterSpec in tfjob_controller.go); pods named ``<job>-worker-<i>`` and
labelled with the job's name; the job Succeeded when worker 0 (the chief, there being no Chief
replica) succeeds, Failed when a worker fails, with the operator's messages. What it does not
do: schedule, restart failed pods (restartPolicy), or enforce RBAC.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

JOBS = re.compile(r"^/apis/kubeflow\.org/v1/namespaces/([^/]+)/tfjobs(?:/([^/]+))?$")
POD = re.compile(r"^/api/v1/namespaces/([^/]+)/pods/([^/]+?)(/log)?$")
PODS = re.compile(r"^/api/v1/namespaces/([^/]+)/pods$")
JOB_NAME_LABEL = "training.kubeflow.org/job-name"


@dataclass
class Worker:
    pod: str
    process: subprocess.Popen
    log: Path

    def phase(self) -> str:
        code = self.process.poll()
        return "Running" if code is None else "Succeeded" if code == 0 else "Failed"


@dataclass
class Job:
    body: dict
    workers: list[Worker] = field(default_factory=list)

    def conditions(self) -> list[dict]:
        namespace, name = self.body["metadata"]["namespace"], self.body["metadata"]["name"]
        conditions = [{"type": "Created", "status": "True"}]
        failed = [w for w in self.workers if w.phase() == "Failed"]
        if failed:
            message = (
                f"TFJob {namespace}/{name} has failed because {len(failed)} Worker replica(s) "
                "failed."
            )
            return [
                *conditions,
                {"type": "Failed", "status": "True", "reason": "TFJobFailed", "message": message},
            ]
        if self.workers[0].phase() == "Succeeded":
            message = f"TFJob {namespace}/{name} successfully completed."
            return [*conditions, {"type": "Succeeded", "status": "True", "message": message}]
        return [
            *conditions,
            {
                "type": "Running",
                "status": "True",
                "message": f"TFJob {namespace}/{name} is running.",
            },
        ]


class TrainingOperator:
    """``with TrainingOperator(work) as operator``: ``operator.host`` is the API's URL."""

    def __init__(self, work: Path):
        self.work = work
        self.jobs: dict[tuple[str, str], Job] = {}
        self.created: list[dict] = []
        operator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                operator.create(self)

            def do_GET(self):
                operator.get(self)

            def do_DELETE(self):
                operator.delete(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> TrainingOperator:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for job in self.jobs.values():
            self._stop(job)
        self.server.shutdown()

    def create(self, request) -> None:
        body = json.loads(request.rfile.read(int(request.headers["Content-Length"])))
        namespace, _ = JOBS.match(request.path).groups()
        key = (namespace, body["metadata"]["name"])
        if key in self.jobs:
            return _answer(request, 409, {"kind": "Status", "reason": "AlreadyExists", "code": 409})
        self.created.append(body)
        self.jobs[key] = job = Job(body)
        spec = body["spec"]["tfReplicaSpecs"]["Worker"]
        ports = [_free_port() for _ in range(spec["replicas"])]
        for index in range(spec["replicas"]):
            job.workers.append(self._start(key[1], spec, index, ports))
        _answer(request, 201, body)

    def _start(self, name: str, spec: dict, index: int, ports: list[int]) -> Worker:
        pod = f"{name}-worker-{index}"
        (container,) = spec["template"]["spec"]["containers"]
        environment = {**os.environ}
        environment.pop("TF_CONFIG", None)
        environment.update(
            {v["name"]: v["value"] for v in container.get("env", []) if "value" in v}
        )
        if spec["replicas"] > 1 and container["name"] == "tensorflow":
            cluster = {"worker": [f"localhost:{port}" for port in ports]}
            task = {"type": "worker", "index": index}
            environment["TF_CONFIG"] = json.dumps(
                {"cluster": cluster, "task": task, "environment": "cloud"}
            )
        log = self.work / f"{pod}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                # The image's python is this one.
                [sys.executable, *container["command"][1:], *container["args"]],
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        return Worker(pod, process, log)

    def get(self, request) -> None:
        url = urlparse(request.path)
        query = parse_qs(url.query)
        if match := JOBS.match(url.path):
            job = self.jobs.get(match.groups())
            if job is None:
                return _answer(request, 404, {"kind": "Status", "code": 404})
            return _answer(request, 200, {**job.body, "status": {"conditions": job.conditions()}})
        if match := PODS.match(url.path):
            selector = query.get("labelSelector", [""])[0]
            name = selector.removeprefix(f"{JOB_NAME_LABEL}=")
            workers = [w for (ns, n), job in self.jobs.items() if n == name for w in job.workers]
            return _answer(
                request,
                200,
                {"kind": "PodList", "apiVersion": "v1", "items": [_pod(w, name) for w in workers]},
            )
        if match := POD.match(url.path):
            namespace, pod, wants_log = match.groups()
            worker = next(
                (w for job in self.jobs.values() for w in job.workers if w.pod == pod), None
            )
            if worker is None:
                return _answer(request, 404, {"kind": "Status", "code": 404})
            if not wants_log:
                return _answer(request, 200, _pod(worker, pod.rsplit("-worker-", 1)[0]))
            if "tailLines" in query:
                tail = worker.log.read_bytes().splitlines()[-int(query["tailLines"][0]) :]
                return _answer_text(request, b"\n".join(tail) + b"\n")
            return _stream(request, worker)
        _answer(request, 404, {"kind": "Status", "code": 404})

    def delete(self, request) -> None:
        key = JOBS.match(urlparse(request.path).path).groups()
        job = self.jobs.pop(key, None)
        if job is None:
            return _answer(request, 404, {"kind": "Status", "code": 404})
        self._stop(job)
        _answer(request, 200, {"kind": "Status", "status": "Success"})

    @staticmethod
    def _stop(job: Job) -> None:
        for worker in job.workers:
            worker.process.kill()
            worker.process.wait()


def _pod(worker: Worker, job: str) -> dict:
    code = worker.process.poll()
    state = (
        {"running": {}}
        if code is None
        else {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error"}}
    )
    status = {
        "name": "tensorflow",
        "image": "imgclf",
        "imageID": "",
        "ready": code is None,
        "restartCount": 0,
        "state": state,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": worker.pod, "labels": {JOB_NAME_LABEL: job}},
        "status": {"phase": worker.phase(), "containerStatuses": [status]},
    }


def _stream(request, worker: Worker) -> None:
    """The log so far, then what is written, until the process has ended."""
    request.send_response(200)
    request.send_header("Content-Type", "text/plain")
    request.end_headers()
    with worker.log.open("rb") as log:
        while True:
            chunk = log.read()
            if chunk:
                request.wfile.write(chunk)
                request.wfile.flush()
            elif worker.process.poll() is not None:
                return
            else:
                time.sleep(0.1)


def _answer(request, code: int, body: dict) -> None:
    data = json.dumps(body).encode()
    request.send_response(code)
    request.send_header("Content-Type", "application/json")
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


def _answer_text(request, data: bytes) -> None:
    request.send_response(200)
    request.send_header("Content-Type", "text/plain")
    request.send_header("Content-Length", str(len(data)))
    request.end_headers()
    request.wfile.write(data)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]
